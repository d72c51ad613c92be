"""Webhook deliveries survive a crash: ``chargeflow notify`` (a process, the embedded Redis
of its data dir, the module's broker) emits events while its receiver is down, has
committed its position, and is killed with SIGKILL; restarted, it delivers every event
(by id), signed, once the receiver is back."""

from __future__ import annotations

import signal
import subprocess
import uuid

import orjson
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from flows.broker import ensure_topics
from tests.notifications.conftest import SECRET, read_topic, wait_for
from tests.notifications.test_cli import REPO
from tests.notifications.test_cli_run import cli

ACCOUNTS = ("a1", "a2", "a3", "a4")


def committed(broker: str, group: str, topic: str) -> int:
    """The group's committed offset of partition 0 of ``topic`` (-1001: none)."""
    c = Consumer({"bootstrap.servers": broker, "group.id": group})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.offset
    finally:
        c.close()


def test_a_sigkill_with_deliveries_pending_loses_none(tmp_path, broker, receiver):
    data = tmp_path / "data"
    (tmp_path / "accounts.jsonl").write_text("".join(
        f'{{"id": "{a}", "plan": "PREPAID_S", "balance": "9.00"}}\n' for a in ACCOUNTS))
    (tmp_path / "rules.yaml").write_text(f"""
rules:
  - {{id: low, below: "5.00"}}
webhooks:
  - {{name: crm, url: "{receiver.url}/hook", secret: "{SECRET.decode()}"}}
delivery: {{tries: 100, backoff_s: 0.05, max_backoff_s: 0.2, timeout_s: 2}}
""")
    group = f"notify-{uuid.uuid4().hex[:8]}"
    catalog = REPO / "charging" / "samples" / "catalog.yaml"
    receiver.fail("/hook", *[503] * 100_000)  # down until the test says otherwise
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        log = open(tmp_path / f"notify-{len(procs)}.log", "wb")  # noqa: SIM115 - the child's
        proc = subprocess.Popen(cli("notify", "--rules", str(tmp_path / "rules.yaml"),
                                    "--kafka", broker, "--group", group, data_dir=data),
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        procs.append(proc)
        return proc

    try:
        for args in (("catalog", "load", str(catalog)),
                     ("accounts", "load", str(tmp_path / "accounts.jsonl"))):
            subprocess.run(cli(*args, data_dir=data), cwd=REPO, check=True,
                           capture_output=True, timeout=60)
        ensure_topics(broker, {"chargeflow.decisions": 1, "chargeflow.charges": 1,
                               "chargeflow.notifications": 1,
                               "chargeflow.notifications.dlq": 1})
        first = start()
        p = Producer({"bootstrap.servers": broker})
        for a in ACCOUNTS:
            p.produce("chargeflow.decisions", key=a.encode(), value=orjson.dumps(
                {"id": f"r-{a}", "account": a, "result": "SUCCESS", "balance": "4.00",
                 "granted": 0, "final": False}))
        assert p.flush(10) == 0
        wait_for(lambda: len(read_topic(broker, "chargeflow.notifications")) == 4,
                 "the four events", timeout_s=60)
        events = {e["id"]: e for e in read_topic(broker, "chargeflow.notifications")}
        # the batch is done (position committed) and every delivery was tried and failed
        wait_for(lambda: committed(broker, group, "chargeflow.decisions") == 4,
                 "the notifier's commit")
        wait_for(lambda: {h.body["id"] for h in receiver.hits} == set(events),
                 "a failed try of each event")
        first.send_signal(signal.SIGKILL)
        first.wait(20)
        assert receiver.delivered("/hook") == []
        r = redis.Redis(unix_socket_path=str(data / "redis.sock"))
        try:  # what the crash left: the four deliveries, still to do
            assert r.hlen(f"cf:notify:deliveries:{group}") == 4
        finally:
            r.close()

        receiver.fail("/hook")  # the receiver is back
        second = start()
        wait_for(lambda: {e["id"] for e in receiver.delivered("/hook")} == set(events),
                 "every event delivered after the restart", timeout_s=60)
        assert receiver.refused == 0  # each try signed with the webhook's secret
        assert all(e == events[e["id"]] for e in receiver.delivered("/hook"))
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0, (tmp_path / "notify-1.log").read_text()
        r = redis.Redis(unix_socket_path=str(data / "redis.sock"))
        try:
            assert r.hlen(f"cf:notify:deliveries:{group}") == 0
        finally:
            r.close()
        assert read_topic(broker, "chargeflow.notifications.dlq") == []
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        subprocess.run(cli("stop", data_dir=data), cwd=REPO, capture_output=True, timeout=60)
