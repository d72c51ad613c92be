"""``serve`` without Kafka: the doors' round trip to an engine on a thread of the same
process (gateway.local.LocalBridge), against a real Redis: the engine's own decisions, in
arrival order, a retransmission answered as a replay, the same timeout and back-pressure
promises as the Kafka bridge."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest

from flows.runtime import EngineConfig, make_engine
from gateway.bridge import AnswerTimeout, Busy
from gateway.local import LocalBridge, RequestRejected
from tests.conftest import REDIS_URL
from tests.flows.oracle import event, strip_latency
from tests.flows.test_engine import ACCOUNTS, new_engine, prepare

TUE = "2026-11-24T10:00:00+01:00"


@pytest.fixture
def bridge(redis_client, prefix):
    prepare(redis_client, prefix, ACCOUNTS)
    b = LocalBridge(partial(make_engine, EngineConfig(redis_url=REDIS_URL, prefix=prefix)),
                    timeout_s=30)
    b.start()
    yield b
    b.close()


def test_decisions_are_the_engines_in_arrival_order(bridge, redis_client, prefix):
    prepare(redis_client, f"{prefix}:direct", ACCOUNTS)
    direct = new_engine(f"{prefix}:direct")
    # carol has 0.10: the second and later SMS run her dry, so order matters
    requests = [event(f"o{i}", "carol" if i % 2 else "alice", "sms", 1, TUE) for i in range(8)]

    async def concurrently():
        return await asyncio.gather(*(bridge.decide([r]) for r in requests))

    got = [d for (d,) in asyncio.run(concurrently())]
    import orjson

    want = [orjson.loads(o.value) for o in direct.process([orjson.dumps(r) for r in requests])
            if o.kind == "decision"]
    assert [strip_latency(d) for d in got] == [strip_latency(d) for d in want]
    assert [d["result"] for d in got if d["account"] == "carol"][:2] == \
        ["SUCCESS", "CREDIT_LIMIT_REACHED"]

    (again,) = asyncio.run(bridge.decide([requests[1]]))  # a retransmission: a replay
    assert strip_latency(again) == strip_latency(got[1])


def test_a_request_the_engine_rejects_is_an_error_of_the_door(bridge):
    with pytest.raises(RequestRejected, match="INVALID_FIELD"):
        asyncio.run(bridge.decide([dict(event("bad", "alice", "sms", 1, TUE), used=-1)]))


def test_timeout_and_back_pressure(redis_client, prefix):
    prepare(redis_client, prefix, ACCOUNTS)

    def slow_engine():
        engine = make_engine(EngineConfig(redis_url=REDIS_URL, prefix=prefix))
        process = engine.process

        class Slow:
            def process(self, payloads, entered):
                time.sleep(0.6)
                return process(payloads, entered)

            def idle(self):
                engine.idle()

        return Slow()

    b = LocalBridge(slow_engine, timeout_s=0.2, max_inflight=2)
    b.start()
    try:
        with pytest.raises(AnswerTimeout):
            asyncio.run(b.decide([event("t1", "alice", "sms", 1, TUE)]))
        with pytest.raises(Busy):
            asyncio.run(b.decide([event(f"t{i}", "alice", "sms", 1, TUE) for i in range(3)]))
        b.timeout_s = 30
        (d,) = asyncio.run(b.decide([event("t1", "alice", "sms", 1, TUE)]))  # decided anyway
        assert d["result"] == "SUCCESS"
    finally:
        b.close()
