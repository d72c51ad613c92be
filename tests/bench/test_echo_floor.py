"""The floors of ``chargeflow bench e2e`` (``bench.echo``): the store floor's step does, per
request, the Redis writes and the outputs it claims to measure, in the engine's shares on
the same traffic, against a real Redis."""

from __future__ import annotations

import collections

import orjson

from bench.echo import CHARGE, CHARGE_SHARE, DECISION, LEDGER_SHARE, echo_step, store_floor_step
from flows.gateway_sim import Gateway
from flows.kafka_io import Consumed, _Worker

REQUESTS = [{"id": f"r{k}", "kind": "event", "account": f"a{k % 3}", "service": "sms",
             "ts": 1795856400000, "used": 1} for k in range(14)]


def _url(client) -> str:
    return "redis://{host}:{port}/{db}".format(**client.connection_pool.connection_kwargs)


def _ledgers(client, prefix: str) -> int:
    return sum(client.xlen(k) for k in client.scan_iter(f"{prefix}:*ledger", count=5000))


def test_store_floor_writes_each_request_once_and_answers_each(redis_client, prefix):
    step = store_floor_step(_url(redis_client), prefix)
    mark = Consumed(_Worker(None, "requests"), 0, 14)
    # two batches: the shares run over the stream, not per batch
    out = step([orjson.dumps(r) for r in REQUESTS[:5]]) + step(
        [orjson.dumps(r) for r in REQUESTS[5:]] + [mark])

    assert out[-1] is mark  # the batch's mark travels behind its outputs
    decisions = [orjson.loads(o.value) for o in out[:-1] if o.kind == "decision"]
    charges = [orjson.loads(o.value) for o in out[:-1] if o.kind == "charge"]
    assert [d["id"] for d in decisions] == [r["id"] for r in REQUESTS]
    k, n = CHARGE_SHARE  # 10 in 13: requests 0-9 and 13 of 0-13
    assert [c["id"] for c in charges] == [f"r{i}" for i in range(14) if i % n < k]
    assert {o.key for o in out[:-1]} == {b"a0", b"a1", b"a2"}
    # outputs of the engine's sizes on gateway traffic (a decision ~225 B, a charge ~305 B)
    gid = b"g11-24582"  # a gateway request id
    assert 215 <= len(gid.join(DECISION)) <= 235 and 295 <= len(gid.join(CHARGE)) <= 315

    for r in REQUESTS:  # the idempotency record of every request, in its account's hash
        key = f"{prefix}:{{{r['account']}}}:acct"
        assert redis_client.hget(key, f"fi:{r['id']}") == bytes(114)
    for a in range(3):  # the state: once per request of the account
        n_a = sum(1 for r in REQUESTS if r["account"] == f"a{a}")
        assert redis_client.hget(f"{prefix}:{{a{a}}}:acct", "fv") == str(n_a).encode()
    k, n = LEDGER_SHARE  # 4 in 7: 8 of 14
    assert _ledgers(redis_client, prefix) == sum(1 for i in range(14) if i % n < k) == 8

    # a replayed batch claims nothing and writes nothing more, and is answered again
    again = step([orjson.dumps(r) for r in REQUESTS])
    assert sum(1 for o in again if o.kind == "decision") == len(REQUESTS)
    assert _ledgers(redis_client, prefix) == 8


def test_store_floor_shares_are_the_engines_on_the_same_traffic(redis_client, prefix):
    """The engine on gateway traffic appends a ledger entry for ~0.56 of requests and emits
    a charge for ~0.77 (review 5 found the floor at 1.0 and 0.86)."""
    from balances.accounts import AccountSpec
    from balances.charger import Charger
    from balances.store import BalanceStore
    from charging.catalog import load_catalog
    from charging.compiler import compile_catalog
    from charging.decide import FixedCatalogs
    from flows.cli_common import sample_catalog_path
    from flows.engine import Engine

    accounts = [f"b{i:05d}" for i in range(2000)]
    gw = Gateway(accounts, seed=11)
    batches = [[orjson.dumps(gw.next()) for _ in range(512)] for _ in range(16)]
    n = sum(map(len, batches))

    store = BalanceStore(redis_client, prefix=f"{prefix}:e")
    store.upsert_accounts([AccountSpec(a, "PREPAID_S", 1_000_000_000) for a in accounts])
    engine = Engine(Charger(store, FixedCatalogs(compile_catalog(load_catalog(
        sample_catalog_path()))), lambda: 1_795_510_800_000))
    engine_out = collections.Counter(o.kind for b in batches for o in engine.process(b))
    engine_ledger = _ledgers(redis_client, f"{prefix}:e") - len(accounts)  # less the 'open's

    step = store_floor_step(_url(redis_client), f"{prefix}:f")
    floor_out = collections.Counter(o.kind for b in batches for o in step(list(b)))
    floor_ledger = _ledgers(redis_client, f"{prefix}:f")

    per = {"engine ledger": engine_ledger / n, "floor ledger": floor_ledger / n,
           "engine charges": engine_out["charge"] / n, "floor charges": floor_out["charge"] / n}
    print(per)
    assert floor_out["decision"] == engine_out["decision"] == n
    assert abs(per["floor charges"] - per["engine charges"]) < 0.03, per
    assert abs(per["floor ledger"] - per["engine ledger"]) < 0.05, per


def test_echo_returns_each_message_as_it_came():
    mark = Consumed(_Worker(None, "requests"), 0, 2)
    out = echo_step([b"x", b"y", mark])
    assert [o.value for o in out[:-1]] == [b"x", b"y"] and out[-1] is mark
