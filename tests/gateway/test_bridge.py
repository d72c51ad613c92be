"""The gateways' round trip (CONTRACT §6.5) against a real engine on the embedded broker:
decisions come back on the instance's own reply topic, correlated by id; a retransmission is
a replay; no answer in time is AnswerTimeout, too many waiting requests Busy."""

from __future__ import annotations

import asyncio

import pytest

from flows.kafka import KafkaSettings
from gateway.bridge import AnswerTimeout, Busy, KafkaBridge
from tests.flows.conftest import accounts_of
from tests.flows.oracle import event

TUE = "2026-11-24T10:00:00+01:00"


def test_decisions_come_back_to_the_instance_that_asked(cf_env):
    env = cf_env(accounts_of(2, "1.00"))
    engine = env.start_engine("--commit-s", "0.2")
    mine = KafkaBridge(KafkaSettings(env.broker), "gw-a", timeout_s=30)
    other = KafkaBridge(KafkaSettings(env.broker), "gw-b", timeout_s=30)
    mine.start()
    other.start()
    try:
        async def both():
            a = mine.decide([event("a1", "acct00000", "sms", 1, TUE),
                             event("a2", "acct00001", "sms", 1, TUE)])
            b = other.decide([event("b1", "acct00000", "sms", 1, TUE)])
            return await asyncio.gather(a, b)

        (a1, a2), (b1,) = asyncio.run(both())
        assert (a1["id"], a2["id"], b1["id"]) == ("a1", "a2", "b1")
        assert a1["result"] == a2["result"] == b1["result"] == "SUCCESS"
        # a retransmission: the same id again is the same decision, charged once
        (again,) = asyncio.run(mine.decide([event("a1", "acct00000", "sms", 1, TUE)]))
        assert {k: v for k, v in again.items() if k != "latency_us"} == \
            {k: v for k, v in a1.items() if k != "latency_us"}
        assert env.balance_micros("acct00000") == 1_000_000 - 2 * 90_000
    finally:
        mine.close()
        other.close()
    engine.kill()


def test_no_answer_in_time_and_too_many_waiting(cf_env):
    env = cf_env(accounts_of(1, "1.00"))
    engine = env.start_engine("--commit-s", "0.2")
    engine.kill()  # nobody answers now
    bridge = KafkaBridge(KafkaSettings(env.broker), "gw-c", timeout_s=0.5, max_inflight=2)
    bridge.start()
    try:
        with pytest.raises(AnswerTimeout):
            asyncio.run(bridge.decide([event("t1", "acct00000", "sms", 1, TUE)]))
        with pytest.raises(Busy):
            asyncio.run(bridge.decide([event(f"t{i}", "acct00000", "sms", 1, TUE)
                                       for i in range(3)]))
        assert bridge.inflight == 0
        # the engine back: the request that timed out was decided anyway, and a
        # retransmission gets that real answer
        restarted = env.start_engine("--commit-s", "0.2")
        bridge.timeout_s = 60
        (d,) = asyncio.run(bridge.decide([event("t1", "acct00000", "sms", 1, TUE)]))
        assert d["result"] == "SUCCESS"
        assert env.balance_micros("acct00000") == 1_000_000 - 90_000
        restarted.kill()
    finally:
        bridge.close()
