"""The store floor of ``chargeflow bench e2e`` (``bench.echo``): its step does, per request,
the Redis writes and the outputs it claims to measure, against a real Redis."""

from __future__ import annotations

import orjson

from bench.echo import CHARGE, CHARGE_EVERY, DECISION, echo_step, store_floor_step
from flows.dataflow import Consumed, _Partition

REQUESTS = [{"id": f"r{k}", "kind": "event", "account": f"a{k % 3}", "service": "sms",
             "ts": 1795856400000, "used": 1} for k in range(10)]


def test_store_floor_writes_each_request_once_and_answers_each(redis_client, prefix):
    url = "redis://{host}:{port}/{db}".format(**redis_client.connection_pool.connection_kwargs)
    step = store_floor_step(url, prefix)
    mark = Consumed(_Partition(0), 10)
    out = step([orjson.dumps(r) for r in REQUESTS] + [mark])

    assert out[-1] is mark  # the batch's mark travels behind its outputs
    decisions = [orjson.loads(o.value) for o in out[:-1] if o.kind == "decision"]
    charges = [orjson.loads(o.value) for o in out[:-1] if o.kind == "charge"]
    assert [d["id"] for d in decisions] == [r["id"] for r in REQUESTS]
    assert [c["id"] for c in charges] == [r["id"] for k, r in enumerate(REQUESTS)
                                          if k % CHARGE_EVERY]
    assert {o.key for o in out[:-1]} == {b"a0", b"a1", b"a2"}
    # outputs of the engine's sizes on gateway traffic (a decision ~225 B, a charge ~305 B)
    gid = b"g11-24582"  # a gateway request id
    assert 215 <= len(gid.join(DECISION)) <= 235 and 295 <= len(gid.join(CHARGE)) <= 315

    for r in REQUESTS:  # the idempotency claim of every request, with its expiry
        key = f"{prefix}:{{{r['account']}}}:idem:{r['id']}"
        assert redis_client.get(key) == bytes(114) and redis_client.ttl(key) > 0
    for k in range(3):  # state and ledger: once per request of the account
        n = sum(1 for r in REQUESTS if r["account"] == f"a{k}")
        assert redis_client.hget(f"{prefix}:{{a{k}}}:acct", "fv") == str(n).encode()
        assert redis_client.xlen(f"{prefix}:{{a{k}}}:ledger") == n

    # a replayed batch claims nothing and writes nothing more, and is answered again
    again = step([orjson.dumps(r) for r in REQUESTS])
    assert sum(1 for o in again if o.kind == "decision") == len(REQUESTS)
    assert redis_client.xlen(f"{prefix}:{{a0}}:ledger") == 4


def test_echo_returns_each_message_as_it_came():
    mark = Consumed(_Partition(0), 2)
    out = echo_step([b"x", b"y", mark])
    assert [o.value for o in out[:-1]] == [b"x", b"y"] and out[-1] is mark
