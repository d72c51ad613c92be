"""Acknowledged means durable: with ``appendfsync always`` every ``Charger.charge`` call that
returned survives a SIGKILL of the redis-server (AOF replay on restart), and the books stay
consistent whatever was in flight when it died.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import orjson
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from balances.accounts import parse_accounts
from balances.charger import Charger
from balances.codec import decode_record
from balances.embedded import PIDFILE, EmbeddedRedis
from balances.store import BalanceStore
from catalog_cache.store import CatalogCache, load_catalog_text
from charging.errors import StoreError
from charging.requests import parse
from tests.conftest import CATALOG_A, CATALOG_B, TUE_PEAK, Clock, micros

ACCOUNTS = [f"k{i}" for i in range(6)]
PREFIX = "crash"


def pid_of(data_dir: Path) -> int:
    return int((data_dir / PIDFILE).read_text().strip())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is dead for us
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def embedded(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("crash")
    servers: list[EmbeddedRedis] = []
    yield data_dir, servers
    pidfile = data_dir / PIDFILE  # a throw-away server: no need for a clean shutdown
    if pidfile.exists():
        pid = pid_of(data_dir)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)


class Workload(threading.Thread):
    """Charges batches (and top-ups) until the store fails; records what was acknowledged."""

    def __init__(self, client: redis.Redis):
        super().__init__(daemon=True)
        self.client = client
        self.acked: dict[str, dict] = {}  # request id -> decision
        self.acked_requests: dict[str, dict] = {}
        self.acked_topups: dict[str, tuple[str, int]] = {}
        self.in_flight: list[dict] = []
        self.in_flight_topup: tuple[str, str, int] | None = None
        self.batches = 0
        self.failure: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        store = BalanceStore(self.client, prefix=PREFIX)
        charger = Charger(store, CatalogCache(self.client, prefix=PREFIX,
                                              check_interval_s=3600), Clock())
        n = 0
        sessions: dict[str, tuple[str, int]] = {}
        try:
            while not self.stop.is_set():
                batch = []
                for _ in range(6):
                    n += 1
                    acct = rng.choice(ACCOUNTS)
                    if sessions and rng.random() < 0.4:
                        sid = rng.choice(list(sessions))
                        acct, seq = sessions.pop(sid)
                        kind = rng.choice(["update", "terminate"])
                        batch.append({"id": f"{sid}:{seq + 1}", "kind": kind, "account": acct,
                                      "service": "voice", "session": sid, "seq": seq + 1,
                                      "ts": TUE_PEAK, "destination": "4917612345",
                                      "used": rng.randint(1, 120)})
                        if kind == "update":
                            sessions[sid] = (acct, seq + 1)
                    elif rng.random() < 0.3:
                        sid = f"s{n}"
                        batch.append({"id": f"{sid}:0", "kind": "initial", "account": acct,
                                      "service": "voice", "session": sid, "seq": 0,
                                      "ts": TUE_PEAK, "destination": "4917612345"})
                        sessions[sid] = (acct, 0)
                    else:
                        batch.append({"id": f"e{n}", "kind": "event", "account": acct,
                                      "service": "sms", "ts": TUE_PEAK,
                                      "used": rng.randint(1, 3)})
                self.in_flight = batch
                outs = charger.charge([parse(b) for b in batch])
                for b, out in zip(batch, outs, strict=True):
                    self.acked[b["id"]] = out.record()["decision"]
                    self.acked_requests[b["id"]] = b
                    if b["kind"] == "initial" and out.decision.result != "SUCCESS":
                        sessions.pop(b["session"], None)
                self.in_flight = []
                self.batches += 1
                if self.batches % 5 == 0:
                    tid, acct = f"top{self.batches}", rng.choice(ACCOUNTS)
                    self.in_flight_topup = (tid, acct, 500_000)
                    status = store.topup(acct, 500_000, topup_id=tid).status
                    assert status == "ok"
                    self.acked_topups[tid] = (acct, 500_000)
                    self.in_flight_topup = None
        except StoreError:
            pass  # the server died under us: the in-flight batch is unacknowledged
        except redis.RedisError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.failure = exc


def connect(server: EmbeddedRedis) -> redis.Redis:
    # no client-side retries: a dead server fails the call at once (it is the point here)
    return redis.Redis.from_url(server.url, socket_timeout=5, retry=Retry(NoBackoff(), 0))


def test_acknowledged_charges_survive_sigkill_and_aof_replay(embedded):
    data_dir, servers = embedded
    server = EmbeddedRedis(data_dir, fsync="always")
    servers.append(server)
    server.start()
    client = connect(server)
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("auto-aof-rewrite-min-size") == {
        "auto-aof-rewrite-min-size": str(1 << 30)}
    catalog = load_catalog_text(client, CATALOG_A, prefix=PREFIX)
    specs = parse_accounts("\n".join(orjson.dumps(
        {"id": a, "plan": "PREPAID_S", "balance": "2.00"}).decode() for a in ACCOUNTS),
        catalog)
    BalanceStore(client, prefix=PREFIX).upsert_accounts(specs)

    work = Workload(client)
    work.start()
    deadline = time.monotonic() + 30
    while work.batches < 40 and time.monotonic() < deadline and work.is_alive():
        time.sleep(0.01)
    assert work.batches >= 40, f"workload too slow or failed: {work.failure!r}"
    pid = pid_of(data_dir)
    os.kill(pid, signal.SIGKILL)  # mid-run: the workload is charging right now
    work.join(timeout=30)
    assert not work.is_alive()
    assert work.failure is None, repr(work.failure)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(pid)
    client.close()

    server.start()  # same data dir: the append-only file is replayed
    assert pid_of(data_dir) != pid
    client = connect(server)
    store = BalanceStore(client, prefix=PREFIX)

    in_flight = {b["id"] for b in work.in_flight}
    for rid, decision in work.acked.items():
        acct = decision["account"]
        blob = store.record(acct, rid)
        assert blob is not None, f"acknowledged request {rid} lost"
        assert decode_record(blob)["decision"] == decision
    for name in ACCOUNTS:
        acct = store.view(name)
        ledger = store.ledger(name)
        assert sum(e["delta"] for e in ledger) == acct.balance
        acked_money = {rid: -micros(d["charged"]) for rid, d in work.acked.items()
                       if d["account"] == name and micros(d["charged"])}
        acked_money.update({t: amt for t, (a, amt) in work.acked_topups.items() if a == name})
        entries = {e["id"]: e["delta"] for e in ledger[1:]}
        for rid, delta in acked_money.items():
            assert entries.get(rid) == delta, f"{name}: acknowledged {rid} not in the ledger"
        unexpected = set(entries) - set(acked_money) - in_flight - (
            {work.in_flight_topup[0]} if work.in_flight_topup else set())
        assert not unexpected, f"{name}: ledger holds unknown entries {unexpected}"
        assert acct.reserved == sum(s.money_reserved for s in acct.sessions.values())
        assert acct.balance - acct.reserved >= 0

    # the caller resends what it had in flight, then everything: all replays agree
    charger = Charger(store, CatalogCache(client, prefix=PREFIX), Clock())
    if work.in_flight:
        charger.charge([parse(b) for b in work.in_flight])
    ids = list(work.acked_requests)
    outs = charger.charge([parse(work.acked_requests[i]) for i in ids])
    assert [o.record()["decision"] for o in outs] == [work.acked[i] for i in ids]
    assert all(o.replay for o in outs)
    for name in ACCOUNTS:
        assert sum(e["delta"] for e in store.ledger(name)) == store.view(name).balance
    client.close()


def test_a_failed_charge_call_leaves_nothing_half_applied(rig, start_redis):
    """The catalog versions live on a second (private) server here, so that exactly the
    catalog read can fail while the balance store stays up."""
    r = rig(accounts="[{id: a, plan: PREPAID_S, balance: '10.00'}]")
    port, proc = start_redis()
    cat_client = redis.Redis(port=port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
    load_catalog_text(cat_client, CATALOG_A, prefix=r.prefix)
    first = Charger(r.store, CatalogCache(cat_client, prefix=r.prefix), Clock())
    first.charge([parse({"id": "s:0", "kind": "initial", "account": "a", "service": "voice",
                         "session": "s", "seq": 0, "ts": TUE_PEAK,
                         "destination": "4917612345"})])
    load_catalog_text(cat_client, CATALOG_B, prefix=r.prefix)
    # a restarted engine: B compiled as current, A not yet read; account a cached
    cache = CatalogCache(cat_client, prefix=r.prefix, check_interval_s=3600)
    assert cache.current.version == "test-b"
    charger = Charger(r.store, cache, Clock())
    sms = {"kind": "event", "account": "a", "service": "sms", "ts": TUE_PEAK, "used": 1}
    charger.charge([parse({"id": "e0", **sms})])

    batch = [parse({"id": "e1", **sms}),
             parse({"id": "s:1", "kind": "update", "account": "a", "service": "voice",
                    "session": "s", "seq": 1, "ts": TUE_PEAK, "destination": "4917612345",
                    "used": 61})]
    proc.kill()
    proc.wait(timeout=10)
    with pytest.raises(StoreError):
        charger.charge(batch)  # e1 decided, then reading catalog A fails
    # the catalog server is back (same port, catalogs loaded again): the caller retries
    port2, _ = start_redis(port=port)
    assert port2 == port
    load_catalog_text(cat_client, CATALOG_A, prefix=r.prefix)
    load_catalog_text(cat_client, CATALOG_B, prefix=r.prefix)
    outs = charger.charge(batch)
    assert [o.record()["decision"]["charged"] for o in outs] == ["0.2000", "0.1515"]
    acct = r.store.view("a")
    assert sum(e["delta"] for e in r.store.ledger("a")) == acct.balance
    assert acct.balance == 10_000_000 - 200_000 - 200_000 - 151_500
