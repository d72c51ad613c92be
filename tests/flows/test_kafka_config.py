"""Kafka as operators run it: their own librdkafka settings (a file and -X), topic and group
names of their choosing, and librdkafka's logs through the project's logging."""

from __future__ import annotations

import logging
import subprocess

import orjson
import pytest

from flows.broker import EmbeddedBroker, ensure_topics, free_port
from flows.kafka import KafkaConfigError, RepeatFilter, load_settings, parse_properties
from tests.flows.conftest import (
    REPO,
    ById,
    Kafka,
    TopicReader,
    accounts_of,
    cli_args,
    cli_env,
    wait_for,
)
from tests.flows.oracle import event

TUE = "2026-11-24T10:00:00+01:00"


def test_a_properties_file_and_x_settings_are_read_in_that_order(tmp_path):
    f = tmp_path / "kafka.properties"
    f.write_text("# SASL over TLS\nsecurity.protocol=SASL_SSL\n\nsasl.mechanism = SCRAM-SHA-512\n"
                 "! also a comment\nsasl.username=engine\nsasl.password=pw\n", "utf-8")
    got = load_settings(str(f), ["sasl.username=other", "client.id=cf-1"])
    assert got == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                   "sasl.username": "other", "sasl.password": "pw", "client.id": "cf-1"}


@pytest.mark.parametrize("text, says", [
    ("security.protocol\n", "kafka.properties:1: expected key=value"),
    ("a.b=1\na.b=2\n", "kafka.properties:2: a.b is set twice"),
    ("enable.auto.commit=true\n", "enable.auto.commit cannot be changed"),
    ("group.id=x\n", "use --group"),
    ("no.such.property=1\n", 'No such configuration property: "no.such.property"'),
    ("security.protocol=bogus\n", 'Invalid value "bogus"'),
])
def test_a_setting_that_cannot_be_used_is_refused_with_where(tmp_path, text, says):
    f = tmp_path / "kafka.properties"
    f.write_text(text, "utf-8")
    with pytest.raises(KafkaConfigError, match=says.replace(".", r"\.").replace('"', '.')):
        load_settings(str(f), [])


def test_parse_properties_keeps_equals_signs_in_values():
    assert parse_properties("sasl.jaas.config=a=b=c\n", "f") == {"sasl.jaas.config": "a=b=c"}


def test_repeated_lines_are_written_once_per_interval_with_a_count():
    now = [0.0]
    flt = RepeatFilter(every_s=30, clock=lambda: now[0])

    def rec(msg):
        return logging.LogRecord("chargeflow.kafka", logging.ERROR, "", 0, msg, None, None)

    lines = [f"Connect to 127.0.0.1:{port} failed (after {ms}ms)" for port, ms in
             [(9092, 0), (9092, 3), (9092, 51)]]
    assert [flt.filter(rec(x)) for x in lines] == [True, False, False]
    assert flt.filter(rec("another line")) is True
    now[0] = 31.0
    r = rec(lines[0])
    assert flt.filter(r) is True and r.getMessage().endswith("(2 more like it in the last 30 s)")


def _run(data_dir, *args, timeout=120):
    return subprocess.run(cli_args("run", "--data-dir", str(data_dir), *args), cwd=REPO,
                          env=cli_env(), capture_output=True, timeout=timeout, check=False)


def test_a_bad_setting_exits_1_and_an_unreachable_broker_2_in_one_line(cf_env, tmp_path):
    env = cf_env([])
    bad = _run(env.data_dir, "--kafka", "127.0.0.1:1", "-X", "enable.auto.commit=true")
    assert bad.returncode == 1 and b"cannot be changed" in bad.stderr, bad.stderr
    gone = _run(env.data_dir, "--kafka", f"127.0.0.1:{free_port()}")
    assert gone.returncode == 2, gone.stderr
    lines = gone.stderr.decode().strip().splitlines()
    assert len(lines) <= 3 and "cannot reach Kafka" in lines[-1], lines  # not ~300 lines
    assert "Traceback" not in gone.stderr.decode()


def test_sasl_settings_reach_the_engines_clients(cf_env):
    """SASL against a broker that takes none: the engine cannot connect (without the
    settings it would), so they reached its clients."""
    env = cf_env([])
    address = EmbeddedBroker(env.data_dir).start()
    res = _run(env.data_dir, "--kafka", address, "-X", "security.protocol=SASL_PLAINTEXT",
               "-X", "sasl.mechanism=SCRAM-SHA-512", "-X", "sasl.username=engine",
               "-X", "sasl.password=S3cretPW")
    assert res.returncode == 2 and b"cannot reach Kafka" in res.stderr, res.stderr[-2000:]
    assert b"S3cretPW" not in res.stderr + res.stdout


def test_topic_and_group_names_are_the_operators(cf_env):
    env = cf_env(accounts_of(1, "10.00"))
    address = EmbeddedBroker(env.data_dir).start()
    names = {"requests": "ops.in", "decisions": "ops.out", "charges": "ops.money",
             "rejects": "ops.bad"}
    ensure_topics(address, {t: 1 for t in names.values()})
    kafka = Kafka(address)
    kafka.send([event("r1", "acct00000", "sms", 1, TUE)], topic=names["requests"])
    kafka.send([b"not json"], topic=names["requests"])
    kafka.flush()
    engine = env.spawn_engine("--kafka", address, "--group", "billing-ops",
                              "--commit-s", "0.2", *[x for kind, t in names.items()
                                                     for x in (f"--{kind}-topic", t)])
    decisions, charges = ById(address, names["decisions"]), ById(address, names["charges"])
    try:
        wait_for(lambda: "r1" in decisions.by_id and "r1" in charges.by_id, 90,
                 "r1 on the operator's topics", [decisions, charges], engine)
        from tests.flows.test_positions import committed

        wait_for(lambda: committed(address, "billing-ops", names["requests"]) == {0: 2}, 30,
                 "group billing-ops to commit both requests", engine=engine)
        rejects = TopicReader(address, names["rejects"])
        wait_for(lambda: rejects.poll(0.1) or rejects.docs, 30, "the reject", engine=engine)
        assert orjson.loads(rejects.values[0])["error"] == "MALFORMED"
        rejects.close()
    finally:
        decisions.close()
        charges.close()
