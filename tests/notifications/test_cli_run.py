"""``chargeflow notify`` as a process: embedded Redis in its data dir, the module's broker,
a crossing in, an event out, SIGTERM stops it with exit 0."""

from __future__ import annotations

import signal
import subprocess
import sys

import orjson
from confluent_kafka import Producer

from flows.broker import ensure_topics
from tests.notifications.conftest import read_topic, wait_for
from tests.notifications.test_cli import REPO


def cli(*args: str, data_dir) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args, "--data-dir", str(data_dir)]


def test_the_command_emits_a_crossing_and_stops_on_sigterm(tmp_path, broker):
    data = tmp_path / "data"
    (tmp_path / "accounts.jsonl").write_text(
        '{"id": "a1", "plan": "PREPAID_S", "balance": "9.00"}\n')
    (tmp_path / "rules.yaml").write_text("rules:\n  - {id: low, below: '5.00'}\n")
    catalog = REPO / "charging" / "samples" / "catalog.yaml"
    try:
        for args in (("catalog", "load", str(catalog)),
                     ("accounts", "load", str(tmp_path / "accounts.jsonl"))):
            subprocess.run(cli(*args, data_dir=data), cwd=REPO, check=True,
                           capture_output=True, timeout=60)
        ensure_topics(broker, {"chargeflow.decisions": 1, "chargeflow.charges": 1,
                               "chargeflow.notifications": 1})
        log = open(tmp_path / "notify.log", "wb")  # noqa: SIM115 - the child's
        proc = subprocess.Popen(cli("notify", "--rules", str(tmp_path / "rules.yaml"),
                                    "--kafka", broker, data_dir=data),
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            p = Producer({"bootstrap.servers": broker})
            for rid, balance in (("r1", "6.00"), ("r2", "4.00"), ("r3", "3.00")):
                p.produce("chargeflow.decisions", key=b"a1", value=orjson.dumps(
                    {"id": rid, "account": "a1", "result": "SUCCESS", "balance": balance,
                     "granted": 0, "final": False}))
            assert p.flush(10) == 0
            wait_for(lambda: read_topic(broker, "chargeflow.notifications"),
                     "the notifier's event", timeout_s=30)
            (event,) = read_topic(broker, "chargeflow.notifications")
            assert (event["request"], event["value"]) == ("r2", "4.00")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, (tmp_path / "notify.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()
    finally:
        subprocess.run(cli("stop", data_dir=data), cwd=REPO, capture_output=True, timeout=60)
