"""The notifier end to end: the real engine decides, its outputs go to the (embedded) broker,
the notifier reads them with its own consumer group, keeps its states in the real Redis,
emits events and delivers them to a real HTTP receiver that checks the signatures."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from balances.accounts import parse_accounts
from balances.store import BalanceStore
from catalog_cache.store import load_catalog_text
from flows.kafka import KafkaSettings
from flows.runtime import EngineConfig, make_engine
from notifications.notifier import Notifier, NotifierConfig, Topics
from notifications.rules import parse_rules
from tests.conftest import REDIS_URL, SAMPLE_TEXT, TUE_PEAK
from tests.notifications.conftest import SECRET, read_topic, wait_for

MOBILE = "4917612345"


def rules_text(url: str, tries: int = 3) -> str:
    return f"""
rules:
  - {{id: low, plan: PREPAID_S, below: "5.00"}}
  - {{id: data-use, plan: PREPAID_S, allowance: {{service: data, percent: [80, 100]}}}}
  - {{id: last, final: true}}
webhooks:
  - {{name: ok, url: "{url}/ok", secret: "{SECRET.decode()}"}}
  - {{name: flaky, url: "{url}/flaky", secret: "{SECRET.decode()}", types: [low_balance]}}
  - {{name: down, url: "{url}/down", secret: "{SECRET.decode()}", types: [final_grant]}}
delivery: {{tries: {tries}, backoff_s: 0.05, max_backoff_s: 0.2, timeout_s: 2}}
"""


class Run:
    """Notifiers in threads; all stopped at teardown."""

    def __init__(self, broker: str, prefix: str, topics: Topics, redis_client):
        self.broker, self.prefix, self.topics, self.client = broker, prefix, topics, redis_client
        self.running: list[tuple[Notifier, threading.Event, threading.Thread]] = []

    def start(self, text: str, group: str | None = None, source: str = "kafka") -> Notifier:
        cfg = NotifierConfig(KafkaSettings(self.broker, group=group or uuid.uuid4().hex),
                             prefix=self.prefix, topics=self.topics, poll_s=0.05,
                             source=source)
        n = Notifier(cfg, parse_rules(text), self.client)
        stop = threading.Event()
        t = threading.Thread(target=n.run, args=(stop,), daemon=True)
        t.start()
        self.running.append((n, stop, t))
        return n

    def stop(self, n: Notifier) -> None:
        for item in list(self.running):
            if item[0] is n:
                item[1].set()
                item[2].join(30)
                self.running.remove(item)

    def caught_up(self, n: Notifier) -> bool:
        """Every message on the input topics is handled (its offset in Redis)."""
        done = n.state.offsets()
        c = Consumer({"bootstrap.servers": self.broker, "group.id": "x"})
        try:
            for topic in (self.topics.decisions, self.topics.charges):
                _, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
                if hi and done.get((topic, 0), 0) < hi:
                    return False
            return True
        finally:
            c.close()


@pytest.fixture
def run(broker, prefix, topics, redis_client) -> Iterator[Run]:
    r = Run(broker, prefix, topics, redis_client)
    yield r
    for n, _, _ in list(r.running):
        r.stop(n)


@pytest.fixture
def produce(broker, topics) -> Iterator[Callable[[list[tuple[str, bytes]]], None]]:
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 1})

    def send(outputs: list[tuple[str, bytes]]) -> None:
        for kind, value in outputs:
            topic = topics.decisions if kind == "decision" else topics.charges
            producer.produce(topic, value=value, key=orjson.loads(value)["account"].encode())
        assert producer.flush(10) == 0

    yield send
    producer.flush(5)
    producer.close()


@pytest.fixture
def engine(redis_client, prefix):
    """The real engine on the sample catalog, account a1 (PREPAID_S) with 5.05."""
    catalog = load_catalog_text(redis_client, SAMPLE_TEXT, prefix=prefix)
    BalanceStore(redis_client, prefix=prefix).upsert_accounts(parse_accounts(
        '{"id": "a1", "plan": "PREPAID_S", "balance": "5.05"}\n', catalog))
    eng = make_engine(EngineConfig(redis_url=REDIS_URL, prefix=prefix))

    def decide(*requests: dict) -> list[tuple[str, bytes]]:
        outs = eng.process([orjson.dumps({"ts": TUE_PEAK, "account": "a1", **r})
                            for r in requests])
        return [(o.kind, o.value) for o in outs if o.kind in ("decision", "charge")]

    return decide


GIB = 1 << 30


def test_engine_outputs_cross_once_each_and_replays_and_restarts_emit_nothing(
        run, engine, produce, receiver, broker, topics):
    outputs = engine(
        {"id": "sms-1", "kind": "event", "service": "sms", "used": 1},  # 5.05 -> 4.96
        {"id": "sms-2", "kind": "event", "service": "sms", "used": 1},  # still below
        {"id": "data-1", "kind": "event", "service": "data", "used": GIB * 85 // 100},
        {"id": "data-2", "kind": "event", "service": "data", "used": GIB // 100},  # 86 %
        {"id": "v-1", "kind": "initial", "service": "voice", "session": "s1", "seq": 0,
         "destination": MOBILE, "requested": 100_000},  # more than 4.87 pays: final
    )
    decisions = {orjson.loads(v)["id"]: orjson.loads(v) for k, v in outputs if k == "decision"}
    assert decisions["sms-1"]["balance"] == "4.96" and decisions["v-1"]["final"] is True
    receiver.fail("/flaky", 500, 500)  # an outage: two failures, then 200
    n = run.start(rules_text(receiver.url))
    produce(outputs)
    wait_for(lambda: run.caught_up(n), "the notifier to read the engine's outputs")
    events = read_topic(broker, topics.notifications)
    assert sorted((e["type"], e["threshold"], e["request"]) for e in events) == [
        ("allowance_used", 80, "data-1"), ("final_grant", None, "v-1"),
        ("low_balance", "5.00", "sms-1")]
    low = next(e for e in events if e["type"] == "low_balance")
    assert (low["account"], low["value"], low["rule"]) == ("a1", "4.96", "low")
    wait_for(lambda: len(receiver.delivered("/ok")) == 3, "3 deliveries to /ok")
    assert sorted(e["id"] for e in receiver.delivered("/ok")) == sorted(e["id"] for e in events)
    # the flaky receiver: two 500s, then the same event accepted on the third try
    wait_for(lambda: receiver.delivered("/flaky"), "the retried delivery")
    assert receiver.tries("/flaky") == 3 and receiver.delivered("/flaky") == [low]
    assert receiver.refused == 0

    # the engine's outputs again (a replay), then a notifier restarted with its position lost
    produce(outputs)
    wait_for(lambda: run.caught_up(n), "the replay to be read")
    run.stop(n)
    again = run.start(rules_text(receiver.url))  # a new group: reads everything again
    wait_for(lambda: run.caught_up(again), "the restarted notifier to read everything")
    run.stop(again)
    assert len(read_topic(broker, topics.notifications)) == 3
    assert len(receiver.delivered("/ok")) == 3


def test_from_the_outbox_the_engine_s_charging_crosses_once_each_with_no_topic(
        run, engine, receiver, broker, topics, redis_client, prefix):
    """``--source outbox``: the same engine requests as above, nothing produced to the
    engine's topics; the outbox its writes append to gives the same three events, and
    the requests again (replays) give none."""
    n = run.start(rules_text(receiver.url), group="from-outbox", source="outbox")
    wait_for(lambda: n.state.outbox_position() is not None, "the notifier's first batch")
    requests = (
        {"id": "sms-1", "kind": "event", "service": "sms", "used": 1},  # 5.05 -> 4.96
        {"id": "sms-2", "kind": "event", "service": "sms", "used": 1},
        {"id": "data-1", "kind": "event", "service": "data", "used": GIB * 85 // 100},
        {"id": "v-1", "kind": "initial", "service": "voice", "session": "s1", "seq": 0,
         "destination": MOBILE, "requested": 100_000},  # a final grant that only reserves
    )
    engine(*requests)
    wait_for(lambda: len(receiver.delivered("/ok")) == 3, "3 deliveries to /ok")
    engine(*requests)  # replays: nothing written to the outbox, nothing notified
    BalanceStore(redis_client, prefix=prefix).topup("a1", 10_000, reason="adjustment")  # 4.88
    outbox = f"{prefix}:outbox:{{all}}"
    wait_for(lambda: n.state.outbox_position()
             == redis_client.xrevrange(outbox, count=1)[0][0].decode(), "the last entry")
    events = read_topic(broker, topics.notifications)
    assert sorted((e["type"], e["threshold"], e["request"]) for e in events) == [
        ("allowance_used", 80, "data-1"), ("final_grant", None, "v-1"),
        ("low_balance", "5.00", "sms-1")]
    final = next(e for e in events if e["type"] == "final_grant")
    assert final["value"] > 0 and final["balance"] == "4.87"
    assert read_topic(broker, topics.decisions) == []  # nothing came from a topic
    assert len(receiver.delivered("/ok")) == 3


def test_a_top_up_re_arms_the_low_balance_rule(run, engine, produce, receiver, broker,
                                               topics, redis_client, prefix):
    n = run.start(rules_text(receiver.url))
    produce(engine({"id": "sms-1", "kind": "event", "service": "sms", "used": 1}))
    BalanceStore(redis_client, prefix=prefix).topup("a1", 1_000_000)  # 4.96 -> 5.96
    produce(engine({"id": "sms-2", "kind": "event", "service": "sms", "used": 1},  # re-arms
                   {"id": "v-1", "kind": "event", "service": "voice", "destination": MOBILE,
                    "used": 6000}))  # capped at 5.00: 0.87
    wait_for(lambda: run.caught_up(n), "the notifier to read the engine's outputs")
    lows = [e for e in read_topic(broker, topics.notifications) if e["type"] == "low_balance"]
    assert [e["request"] for e in lows] == ["sms-1", "v-1"]
    assert lows[0]["id"] != lows[1]["id"]


def test_balance_changes_outside_the_engine_notify_once_per_crossing(
        run, engine, receiver, broker, topics, redis_client, prefix):
    """Adjustments and top-ups (the account API's, ``chargeflow topup``'s script) reach the
    notifier through the outbox, with no engine decision at all: a debit below 5.00 fires,
    a top-up re-arms, the next debit fires again; a restart emits nothing again."""
    store = BalanceStore(redis_client, prefix=prefix)
    store.topup("a1", -10_000, topup_id="before", reason="adjustment", actor="k0")  # 5.04
    n = run.start(rules_text(receiver.url), group="outside")
    wait_for(lambda: n.state.outbox_position() is not None, "the notifier's first batch")

    def lows() -> list[dict]:
        return [e for e in read_topic(broker, topics.notifications)
                if e["type"] == "low_balance"]

    store.topup("a1", -100_000, topup_id="adj-1", reason="adjustment", actor="k1")  # 4.94
    store.topup("a1", -10_000, topup_id="adj-2", reason="adjustment", actor="k1")  # 4.93
    wait_for(lambda: len(lows()) == 1, "the first crossing")
    store.topup("a1", 1_000_000, topup_id="top-1", reason="topup", actor="k1")  # 5.93
    store.topup("a1", -1_000_000, topup_id="adj-3", reason="adjustment", actor="k1")  # 4.93
    wait_for(lambda: len(lows()) == 2, "the second crossing")
    first, second = lows()
    assert (first["account"], first["threshold"], first["value"], first["request"]) == (
        "a1", "5.00", "4.94", "adj-1")
    assert (second["value"], second["request"]) == ("4.93", "adj-3")
    assert first["id"] != second["id"]
    wait_for(lambda: len(receiver.delivered("/ok")) == 2, "the webhook deliveries")
    assert [e["request"] for e in receiver.delivered("/ok")] == ["adj-1", "adj-3"]
    run.stop(n)
    # restarted (same group): it resumes after the position it recorded, nothing again
    again = run.start(rules_text(receiver.url), group="outside")
    store.topup("a1", -10_000, topup_id="adj-4", reason="adjustment", actor="k1")  # 4.92
    wait_for(lambda: again.state.outbox_position() == redis_client.xrevrange(
        f"{prefix}:outbox:{{all}}", count=1)[0][0].decode(), "the restarted notifier")
    assert len(lows()) == 2


def test_the_last_failed_try_goes_to_the_dead_letter_topic(run, engine, produce, receiver,
                                                           broker, topics):
    receiver.fail("/down", *[503] * 10)
    n = run.start(rules_text(receiver.url, tries=3))
    produce(engine({"id": "sms-1", "kind": "event", "service": "sms", "used": 1},
                   {"id": "v-1", "kind": "initial", "service": "voice", "session": "s1",
                    "seq": 0, "destination": MOBILE, "requested": 100_000}))  # final
    wait_for(lambda: run.caught_up(n), "the notifier to read the engine's outputs")
    wait_for(lambda: read_topic(broker, topics.dead_letters), "a dead letter")
    (dead,) = read_topic(broker, topics.dead_letters)
    assert (dead["webhook"], dead["tries"], dead["error"]) == ("down", 3, "HTTP 503")
    assert dead["event"]["type"] == "final_grant" and dead["event"]["request"] == "v-1"
    assert SECRET.decode() not in orjson.dumps(dead).decode()
    assert receiver.tries("/down") == 3
    # the other webhooks are not held up: /ok has both events, /flaky the low balance
    wait_for(lambda: len(receiver.delivered("/ok")) == 2
             and len(receiver.delivered("/flaky")) == 1, "the other deliveries")


def test_bad_messages_and_an_unreadable_account_hold_nothing_up(
        run, engine, produce, receiver, broker, topics, redis_client, prefix):
    store = BalanceStore(redis_client, prefix=prefix)
    redis_client.hset(store.keys.account("broken"), mapping={"plan": "PREPAID_S", "b": "x"})
    n = run.start(rules_text(receiver.url))
    junk = [b"not json", b"[1, 2]", b'{"id": 7, "account": "a1"}', b"",
            orjson.dumps({"id": "j1", "account": "a1", "result": "SUCCESS", "balance": "x"}),
            orjson.dumps({"id": "j2", "account": "a1", "result": "SUCCESS",
                          "balance": "0.0000001"}),
            orjson.dumps({"id": "j3", "account": "broken", "result": "SUCCESS",
                          "balance": "0.00"})]
    p = Producer({"bootstrap.servers": broker})
    for value in junk:
        p.produce(topics.decisions, value=value)
        p.produce(topics.charges, value=value)
    assert p.flush(10) == 0
    produce(engine({"id": "sms-1", "kind": "event", "service": "sms", "used": 1}))
    wait_for(lambda: run.caught_up(n), "the notifier to read past the junk")
    (event,) = read_topic(broker, topics.notifications)
    assert (event["account"], event["request"]) == ("a1", "sms-1")
