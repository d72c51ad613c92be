"""The engine's position in the requests topic survives restarts and broker trouble: it never
charges a request twice and never skips one (docs/operations.md, "Position and replays").

* a restart after a graceful stop re-reads nothing, even once the idempotency records of what
  it decided have expired (it used to re-read the topic from its beginning and charge again);
* where it would start at requests older than the idempotency retention, it refuses, or skips
  or decides them when told to;
* a broker that comes back empty, with the topics re-created (with one partition, or with four
  where there was one), loses nothing: every request produced afterwards is decided;
* the group's committed offsets are what lag tools read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from fractions import Fraction

import pytest
from confluent_kafka import Consumer, TopicPartition

from flows.broker import EmbeddedBroker, answers, ensure_topics, tansu_binary
from tests.flows.conftest import (
    REPO,
    TOPICS,
    CfEnv,
    Kafka,
    accounts_of,
    cli_args,
    cli_env,
    drain,
    wait_for,
)
from tests.flows.oracle import Model, check_decision, event, strip_latency

TUE = "2026-11-24T10:00:00+01:00"
DAY_MS = 86_400_000


def committed(address: str, group: str = "chargeflow",
              topic: str = TOPICS["requests"]) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": address, "group.id": group})
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        return {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(topic, p) for p in parts], timeout=10)}
    finally:
        consumer.close()


def sms(rid: str, account: str) -> dict:
    return event(rid, account, "sms", 1, TUE)


def run_engine_once(env: CfEnv, *args: str, timeout_s: float = 120
                    ) -> subprocess.CompletedProcess:
    """``chargeflow run`` where it is expected to stop at start-up."""
    return subprocess.run(cli_args("run", "--data-dir", str(env.data_dir), *args), cwd=REPO,
                          env=cli_env(), capture_output=True, timeout=timeout_s, check=False)


def test_a_restart_past_the_retention_charges_nothing_twice(cf_env):
    """The issue's case: retention 2 s, one event, SIGTERM, a wait, a restart: it was charged
    twice (the restart re-read the topic from its beginning and the record had expired)."""
    env = cf_env(accounts_of(1, "10.00"))
    args = ("--idempotency-retention-s", "2", "--commit-s", "0.2")
    engine = env.start_engine(*args)
    charges, decisions = env.reader("charges"), env.reader("decisions")
    env.kafka.send([sms("once", "acct00000")])
    env.kafka.flush()
    wait_for(lambda: "once" in decisions.by_id, 60, "its decision", [decisions], engine)
    engine.proc.send_signal(signal.SIGTERM)
    assert engine.proc.wait(timeout=60) == 0, engine.log_tail()
    end = committed(env.broker)
    time.sleep(3)  # the idempotency record of "once" expires
    restarted = env.start_engine(*args)  # its probe is decided, so it reads on from `end`
    drain([charges, decisions])
    assert len(decisions.by_id["once"]) == 1 and len(charges.by_id["once"]) == 1
    assert env.balance_micros("acct00000") == 10_000_000 - 90_000  # one SMS at 0.09
    assert committed(env.broker)[0] > end[0]  # what lag tools read: the position moves on
    restarted.kill()


def test_resuming_the_groups_position_after_a_stop_past_the_retention_charges_once(cf_env):
    """A crash, then a stop longer than the retention: the restart resumes the committed
    offset and re-reads what was decided after it. Its records were not dropped (only a
    later charging write to the account drops them), so they are replays; the start-up
    check, which once refused such a restart, does not stand in the way."""
    env = cf_env(accounts_of(1, "10.00"))
    engine = env.start_engine("--commit-s", "0.2")
    decisions = env.reader("decisions")
    env.kafka.send([sms("first", "acct00000")])
    env.kafka.flush()
    wait_for(lambda: "first" in decisions.by_id, 60, "its decision", [decisions], engine)
    engine.proc.send_signal(signal.SIGTERM)
    assert engine.proc.wait(timeout=60) == 0, engine.log_tail()
    position = committed(env.broker)

    args = ("--idempotency-retention-s", "2")
    engine = env.start_engine(*args, "--commit-s", "600")  # decides, never commits
    env.kafka.send([sms(f"late{i}", "acct00000") for i in range(3)])
    env.kafka.flush()
    wait_for(lambda: all(f"late{i}" in decisions.by_id for i in range(3)), 60, "decisions",
             [decisions], engine)
    engine.kill()
    assert committed(env.broker) == position  # what they were read after: a re-read ahead
    time.sleep(3)  # longer than the retention: the requests' Kafka timestamps are older
    restarted = env.start_engine(*args, "--commit-s", "0.2")
    wait_for(lambda: all(len(decisions.by_id[f"late{i}"]) == 2 for i in range(3)), 60,
             "the replays", [decisions], restarted)
    drain([decisions])
    for i in range(3):  # the same decision again, charged once
        first, again = (strip_latency(d) for d in decisions.by_id[f"late{i}"])
        assert first == again
    assert env.balance_micros("acct00000") == 10_000_000 - 4 * 90_000
    restarted.kill()


def test_requests_older_than_the_retention_are_refused_skipped_or_decided(cf_env):
    env = cf_env(accounts_of(2, "10.00"))
    now = int(time.time() * 1000)
    old = [sms(f"old{i}", "acct00000") for i in range(5)]
    new = [sms(f"new{i}", "acct00001") for i in range(5)]
    EmbeddedBroker(env.data_dir).start()
    ensure_topics(env.broker, {TOPICS["requests"]: 1, TOPICS["decisions"]: 1,
                               TOPICS["charges"]: 1, TOPICS["rejects"]: 1})
    kafka = Kafka(env.broker)
    for r in old:  # written ten days ago (the Kafka timestamp), never read by any engine
        kafka.producer.produce(TOPICS["requests"], value=_json(r), key=b"acct00000",
                               timestamp=now - 10 * DAY_MS)
    kafka.send(new)
    kafka.flush()
    kafka.close()

    refused = run_engine_once(env, "--idempotency-retention-s", "86400")
    assert refused.returncode == 1, refused.stderr[-2000:]
    err = refused.stderr.decode()
    assert "older than the idempotency retention" in err and "partition 0" in err, err
    assert "--stale-requests skip" in err and "Traceback" not in err
    assert committed(env.broker) == {0: -1001}  # nothing moved

    decisions = env.reader("decisions")
    engine = env.start_engine("--idempotency-retention-s", "86400", "--stale-requests", "skip")
    wait_for(lambda: all(r["id"] in decisions.by_id for r in new), 60, "the new ones",
             [decisions], engine)
    drain([decisions])
    assert not any(r["id"] in decisions.by_id for r in old)
    assert env.balance_micros("acct00000") == 10_000_000  # the old ones were skipped
    assert "5 request(s) skipped" in engine.log_tail(20000)
    engine.kill()


def test_stale_requests_decide_reads_them_anyway(cf_env):
    env = cf_env(accounts_of(1, "10.00"))
    EmbeddedBroker(env.data_dir).start()
    ensure_topics(env.broker, {TOPICS["requests"]: 1, TOPICS["decisions"]: 1})
    kafka = Kafka(env.broker)
    for i in range(3):
        kafka.producer.produce(TOPICS["requests"], value=_json(sms(f"old{i}", "acct00000")),
                               key=b"acct00000", timestamp=int(time.time() * 1000) - 2 * DAY_MS)
    kafka.flush()
    kafka.close()
    decisions = env.reader("decisions")
    engine = env.start_engine("--idempotency-retention-s", "86400",
                              "--stale-requests", "decide")
    wait_for(lambda: all(f"old{i}" in decisions.by_id for i in range(3)), 60, "all three",
             [decisions], engine)
    assert "reading it anyway" in engine.log_tail(20000)
    engine.kill()


def _json(doc: dict) -> bytes:
    import orjson

    return orjson.dumps(doc)


# -- a broker that comes back empty ---------------------------------------------------------

def restart_broker_empty(env: CfEnv) -> None:
    """SIGKILL the embedded broker and start a new, empty one on the same address (its
    memory store keeps nothing: topics, messages and the group's offsets are gone)."""
    address = env.broker
    pid_file = env.data_dir / "broker.pid"
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 15
    while answers(address) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the engine meets a broker that is gone
    with open(env.data_dir / "broker.log", "ab") as log:
        proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", f"tcp://{address}",
             "--advertised-listener-url", f"tcp://{address}", "--storage-engine",
             "memory://tansu/"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(str(proc.pid))  # so that `chargeflow stop` ends it
    wait_for(lambda: answers(address), 15, "the new broker")


@pytest.mark.parametrize("partitions", [1, 4], ids=["same-partitions", "four-partitions"])
def test_a_broker_that_comes_back_empty_loses_no_request(cf_env, partitions):
    """Topics re-created after a broker restart: the engine resumed at its old offset and
    skipped exactly as many of the new requests; re-created with four partitions where there
    was one, it read only the one it had listed at start."""
    accounts = accounts_of(40, "100.00")
    env = cf_env(accounts)
    engine = env.start_engine("--commit-s", "0.2")
    before = [sms(f"a{i}", accounts[i % 40]["id"]) for i in range(3000)]
    decisions = env.reader("decisions")
    env.kafka.send(before)
    env.kafka.flush()
    wait_for(lambda: all(r["id"] in decisions.by_id for r in before), 120, "the first 3,000",
             [decisions], engine)
    decisions.close()

    restart_broker_empty(env)
    ensure_topics(env.broker, {TOPICS["requests"]: partitions,
                               TOPICS["decisions"]: partitions, TOPICS["charges"]: partitions,
                               TOPICS["rejects"]: 1})
    after = [sms(f"b{i}", accounts[i % 40]["id"]) for i in range(3000)]
    kafka = Kafka(env.broker)
    kafka.send(after)
    kafka.flush()
    kafka.close()
    decisions = env.reader("decisions")  # the new decisions topic, from its start
    wait_for(lambda: all(r["id"] in decisions.by_id for r in after), 180,
             "a decision for every request produced after the restart", [decisions], engine)
    drain([decisions])
    if partitions == 4:
        assert all(decisions.partitions[p] for p in range(4))  # all four partitions read
    model = Model(env.catalog, accounts)
    for r in before:
        model.apply(r)
    for r in after:
        copies = decisions.by_id[r["id"]]
        assert all(strip_latency(c) == strip_latency(copies[0]) for c in copies)
        check_decision(copies[0], r, model.apply(r))
    for a in accounts:  # each request applied once, on either side of the restart
        assert Fraction(env.balance_micros(a["id"]), 1_000_000) == model.balance(a["id"])
    assert "Traceback" not in engine.log_tail(200_000)
    engine.kill()
