"""``reply_to`` (CONTRACT §2, §6.5): a request naming a topic also gets its decision written
there, so a gateway instance reads only its own answers; a replay answers there again."""

from __future__ import annotations

import orjson
import pytest

from charging.errors import RequestError
from charging.requests import decode, parse
from tests.flows.oracle import event, strip_latency
from tests.flows.test_engine import ACCOUNTS, new_engine, prepare

TUE = "2026-11-24T10:00:00+01:00"


def test_reply_to_is_a_kafka_topic_name():
    base = event("r1", "alice", "sms", 1, TUE)
    assert parse(dict(base, reply_to="chargeflow.replies.gw-1")).reply_to == \
        "chargeflow.replies.gw-1"
    assert parse(base).reply_to is None
    assert parse(decode(orjson.dumps(dict(base, ts=1795856400000, reply_to="a_b-c.d")))
                 ).reply_to == "a_b-c.d"  # the fast path too
    for bad in ("", "with space", "x" * 250, 7, ["t"]):
        with pytest.raises(RequestError, match="reply_to") as exc:
            parse(dict(base, reply_to=bad))
        assert exc.value.code == "INVALID_FIELD"


def test_the_decision_goes_to_reply_to_too_and_a_replay_answers_there_again(redis_client,
                                                                           prefix):
    prepare(redis_client, prefix, ACCOUNTS)
    engine = new_engine(prefix)
    asked = dict(event("r1", "alice", "sms", 1, TUE), reply_to="replies.gw-1")
    plain = event("r2", "alice", "sms", 1, TUE)
    outputs = engine.process([orjson.dumps(asked), orjson.dumps(plain)])
    replies = [o for o in outputs if o.kind == "reply"]
    decisions = {orjson.loads(o.value)["id"]: o for o in outputs if o.kind == "decision"}
    assert [(o.topic, o.key) for o in replies] == [("replies.gw-1", b"alice")]
    assert replies[0].value == decisions["r1"].value  # the decision itself, once more
    assert all(o.topic is None for o in outputs if o.kind != "reply")

    again = engine.process([orjson.dumps(dict(asked, reply_to="replies.gw-2"))])
    reply = [o for o in again if o.kind == "reply"]
    assert [o.topic for o in reply] == ["replies.gw-2"]  # the retransmission's gateway
    assert strip_latency(orjson.loads(reply[0].value)) == \
        strip_latency(orjson.loads(decisions["r1"].value))
