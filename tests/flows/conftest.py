"""Fixtures for the engine flow tests: private data dirs, `chargeflow run` subprocesses, Kafka.

* ``cf_env(accounts, catalog_text=SAMPLE_TEXT)`` prepares a private ``--data-dir`` with the
  CLI (``catalog load`` + ``accounts load``; the first starts the embedded redis-server on a
  unix socket there) and returns a ``CfEnv``. Its teardown kills every engine it started and
  runs ``chargeflow stop --data-dir DIR`` (embedded Redis and broker), then makes sure those
  two processes are gone.
* ``CfEnv.start_engine(*args)`` starts ``python -m flows.cli run --data-dir DIR ...`` in its
  own session, waits until decisions flow (a probe request for an unknown account gets its
  ``USER_UNKNOWN`` decision) and returns an ``EngineProc`` (``kill()`` is SIGKILL).
* ``Kafka`` produces JSON requests keyed by account (or raw payloads), ``TopicReader`` reads a
  topic from offset 0 of every partition by explicit assignment and collects by id.

The CLI always uses the key prefix ``cf``; every test here has its own data dir, so its own
Redis and broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import msgpack
import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from balances.store import BalanceStore
from charging.catalog import Catalog, parse_catalog

REPO = Path(__file__).resolve().parents[2]
SAMPLE_PATH = REPO / "charging" / "samples" / "catalog.yaml"
SAMPLE_TEXT = SAMPLE_PATH.read_text("utf-8")
PROBE_ACCOUNT = "__probe__"
TOPICS = {"requests": "chargeflow.requests", "decisions": "chargeflow.decisions",
          "charges": "chargeflow.charges", "rejects": "chargeflow.rejects"}


def cli_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def cli_env() -> dict[str, str]:
    """The environment of CLI subprocesses: never a Redis or data dir from outside."""
    return {k: v for k, v in os.environ.items()
            if k not in ("CHARGEFLOW_REDIS_URL", "CHARGEFLOW_DATA_DIR")}


def alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# -- Kafka ------------------------------------------------------------------------------------

class Kafka:
    """A producer of requests: dicts go out as JSON keyed by their account."""

    def __init__(self, address: str):
        self.address = address
        self.errors: list = []
        self.sent = 0
        self.producer = Producer({
            "bootstrap.servers": address, "linger.ms": 5, "message.max.bytes": 8 << 20,
            "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 4 << 20,
        })

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.errors.append(err)

    def send(self, items: Iterable[dict | bytes | None], key: bytes | None = None,
             topic: str = TOPICS["requests"]) -> int:
        n = 0
        for item in items:
            if isinstance(item, dict):
                value, k = orjson.dumps(item), str(item.get("account", "")).encode()
            else:
                value, k = item, key
            while True:
                try:
                    self.producer.produce(topic, value=value, key=k, on_delivery=self._delivered)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            n += 1
            if n % 5000 == 0:
                self.producer.poll(0)
        self.sent += n
        return n

    def close(self) -> None:
        self.producer.flush(5)
        self.producer.close()

    def flush(self, timeout_s: float = 60) -> None:
        left = self.producer.flush(timeout_s)
        assert left == 0, f"{left} messages not delivered within {timeout_s} s"
        assert not self.errors, f"delivery errors: {self.errors[:5]}"


class TopicReader:
    """Reads every partition of a topic from offset 0 (explicit assignment, no group)."""

    def __init__(self, address: str, topic: str):
        self.topic = topic
        self.closed = False
        self.consumer = Consumer({
            "bootstrap.servers": address, "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False, "fetch.wait.max.ms": 5, "fetch.min.bytes": 1,
            "fetch.error.backoff.ms": 10,
        })
        meta = self.consumer.list_topics(topic, timeout=15)
        parts = sorted(meta.topics[topic].partitions)
        assert parts, f"topic {topic} has no partitions"
        self.consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        self.values: list[bytes] = []
        self.docs: list[dict] = []  # parsed, in (partition, offset) arrival order
        self.partitions: dict[int, list[dict]] = {p: [] for p in parts}

    def poll(self, timeout_s: float = 0.05) -> int:
        """Read what is there (at most ``timeout_s`` of waiting); how many messages came."""
        n = 0
        while True:
            msgs = self.consumer.consume(20000, timeout=timeout_s)
            if not msgs:
                return n
            for m in msgs:
                if m.error():
                    continue
                doc = orjson.loads(m.value())
                self.values.append(m.value())
                self.docs.append(doc)
                self.partitions[m.partition()].append(doc)
                self.on_doc(doc)
                n += 1
            timeout_s = 0.01

    def on_doc(self, doc: dict) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


class ById(TopicReader):
    """Decisions or charges: every copy of each id, in arrival order."""

    def __init__(self, address: str, topic: str):
        self.by_id: dict[str, list[dict]] = {}
        super().__init__(address, topic)

    def on_doc(self, doc: dict) -> None:
        self.by_id.setdefault(doc["id"], []).append(doc)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str,
             readers: Iterable[TopicReader] = (), engine: EngineProc | None = None) -> None:
    readers = list(readers)
    deadline = time.monotonic() + timeout_s
    while True:
        for r in readers:
            r.poll(0.02)
        if check():
            return
        if engine is not None and engine.proc.poll() is not None:
            raise AssertionError(f"the engine exited ({engine.proc.returncode}) while waiting "
                                 f"for {what}:\n{engine.log_tail()}")
        if time.monotonic() > deadline:
            tail = engine.log_tail() if engine is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")
        if not readers:
            time.sleep(0.05)


def drain(readers: Iterable[TopicReader], quiet_s: float = 2.0, timeout_s: float = 60) -> None:
    """Read until no reader has had a message for ``quiet_s`` (or ``timeout_s`` passed).

    For topics read after the wait on another one: the engine writes decisions, charges and
    rejects through separate producers, and a reader that was not polled during the run has
    a backlog that one short poll does not get through."""
    readers = list(readers)
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s and time.monotonic() < deadline:
        if sum(r.poll(0.05) for r in readers):
            quiet_since = time.monotonic()


# -- engine processes and data dirs ----------------------------------------------------------

class EngineProc:
    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc = proc
        self.log = log

    def kill(self) -> None:
        """SIGKILL the engine (its whole process group; the broker lives in its own)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=15)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class CfEnv:
    def __init__(self, root: Path, catalog_text: str, accounts: list[dict]):
        self.root = root
        self.data_dir = root / "data"
        self.catalog: Catalog = parse_catalog(catalog_text)
        self.accounts = accounts
        self.engines: list[EngineProc] = []
        self.readers: list[TopicReader] = []
        self._client: redis.Redis | None = None
        self._kafka: Kafka | None = None
        self.catalog_text = catalog_text

    def prepare(self) -> CfEnv:
        """``catalog load`` and ``accounts load`` through the CLI (starts the embedded Redis)."""
        cat_file = self.root / "catalog.yaml"
        cat_file.write_text(self.catalog_text, "utf-8")
        acc_file = self.root / "accounts.jsonl"
        acc_file.write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in self.accounts))
        self.cli_ok("catalog", "load", str(cat_file))
        if self.accounts:
            self.cli_ok("accounts", "load", str(acc_file))
        return self

    # -- the CLI
    def cli(self, *args: str, stdin: bytes | None = None, timeout: float = 180
            ) -> subprocess.CompletedProcess:
        return subprocess.run(cli_args(*args, "--data-dir", str(self.data_dir)), cwd=REPO,
                              env=cli_env(), input=stdin, capture_output=True, timeout=timeout,
                              check=False)

    def cli_ok(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        res = self.cli(*args, stdin=stdin)
        assert res.returncode == 0, (args, res.returncode, res.stdout[-2000:],
                                     res.stderr[-4000:])
        return res

    # -- Redis (the embedded server, prefix cf)
    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis(unix_socket_path=str(self.data_dir / "redis.sock"),
                                       socket_timeout=30)
        return self._client

    @property
    def store(self) -> BalanceStore:
        return BalanceStore(self.client, prefix="cf")

    def balance_micros(self, account: str) -> int:
        acct = self.store.view(account)
        assert acct is not None, account
        return acct.balance

    def ledger_sum(self, account: str) -> int:
        return sum(e["delta"] for e in self.store.ledger(account))

    # -- the broker
    @property
    def broker(self) -> str:
        return (self.data_dir / "broker.addr").read_text().strip()

    @property
    def kafka(self) -> Kafka:
        if self._kafka is None:
            self._kafka = Kafka(self.broker)
        return self._kafka

    def reader(self, kind: str) -> TopicReader:
        """A reader of one output topic from its start (closed with the env)."""
        topic = TOPICS[kind]
        reader = ById(self.broker, topic) if kind in ("decisions", "charges") else \
            TopicReader(self.broker, topic)
        self.readers.append(reader)
        return reader

    # -- engines
    def spawn_engine(self, *args: str) -> EngineProc:
        log = self.root / f"engine-{len(self.engines)}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(cli_args("run", "--data-dir", str(self.data_dir), *args),
                                    cwd=REPO, env=cli_env(), stdout=f,
                                    stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        engine = EngineProc(proc, log)
        self.engines.append(engine)
        return engine

    def start_engine(self, *args: str, timeout_s: float = 120, fmt: str = "json"
                     ) -> EngineProc:
        """Start ``chargeflow run`` and wait until a probe request gets its decision
        (``fmt``: the probe's encoding, msgpack for an engine run with ``--format msgpack``)."""
        engine = self.spawn_engine(*args)
        addr = self.data_dir / "broker.addr"
        wait_for(lambda: addr.exists() and addr.read_text().strip() != "", timeout_s,
                 "the embedded broker", engine=engine)
        self.probe(engine, timeout_s, fmt)
        return engine

    def probe(self, engine: EngineProc | None = None, timeout_s: float = 120,
              fmt: str = "json") -> str:
        """Send a request for an unknown account and wait for its decision."""
        rid = f"probe-{uuid.uuid4().hex[:10]}"
        deadline = time.monotonic() + timeout_s
        while True:  # the engine creates the topics at start; wait until they exist
            try:
                reader = ById(self.broker, TOPICS["decisions"])
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                if engine is not None and engine.proc.poll() is not None:
                    raise AssertionError(f"engine exited:\n{engine.log_tail()}") from None
                time.sleep(0.2)
        try:
            probe = {"id": rid, "kind": "event", "account": PROBE_ACCOUNT, "service": "sms",
                     "ts": "2026-11-24T10:00:00+01:00", "used": 1}
            if fmt == "msgpack":
                self.kafka.send([msgpack.packb(probe)], key=PROBE_ACCOUNT.encode())
            else:
                self.kafka.send([probe])
            self.kafka.flush()
            wait_for(lambda: rid in reader.by_id, deadline - time.monotonic(),
                     f"the probe decision {rid}", [reader], engine)
            assert reader.by_id[rid][0]["result"] == "USER_UNKNOWN"
        finally:
            reader.close()
        return rid

    def close(self) -> None:
        for e in self.engines:
            e.kill()
        for r in self.readers:
            r.close()
        if self._kafka is not None:
            self._kafka.close()
        pids = []
        for name in ("redis.pid", "broker.pid"):
            f = self.data_dir / name
            try:
                pids.append(int(f.read_text().strip()))
            except (OSError, ValueError):
                pass
        if self._client is not None:
            self._client.close()
        res = self.cli("stop", timeout=60)
        for pid in pids:  # whatever `stop` could not end
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        assert res.returncode == 0, res.stderr


@pytest.fixture
def cf_env(tmp_path) -> Iterator[Callable[..., CfEnv]]:
    """``cf_env(accounts, catalog_text=SAMPLE_TEXT, name="env")``: a prepared data dir."""
    envs: list[CfEnv] = []

    def make(accounts: list[dict], catalog_text: str = SAMPLE_TEXT, name: str = "env"
             ) -> CfEnv:
        root = tmp_path / name
        root.mkdir()
        env = CfEnv(root, catalog_text, accounts)
        envs.append(env)  # stopped at teardown even if preparing it fails
        return env.prepare()

    yield make
    errors = []
    for env in envs:
        try:
            env.close()
        except Exception as exc:  # keep stopping the others
            errors.append(exc)
    if errors:
        raise errors[0]


def accounts_of(n: int, balance: str = "1000.00", prefix: str = "acct",
                plan: str = "PREPAID_S") -> list[dict]:
    return [{"id": f"{prefix}{i:05d}", "plan": plan, "balance": balance} for i in range(n)]


def jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
