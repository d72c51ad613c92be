"""Poison messages against the real engine: ``chargeflow run`` over the embedded broker with
``--recovery``, and the JSONL mode.

A request whose ``id``, ``kind``, ``used`` or ``ts`` is an array or object nested 1,000 deep
is valid JSON, and a map nested as deep in ``kind`` valid MessagePack; building their rejects
used to raise ``RecursionError``, which stopped the engine (exit 1; under ``--recovery`` a
crash loop replaying the same batch, nothing after the poison ever decided). A field given
twice charged the last account named. Sent between valid requests, each poison must now get
its reject on ``chargeflow.rejects``, every valid request before and after it its decision,
and the engine must keep running.
"""

from __future__ import annotations

import base64
from fractions import Fraction

import msgpack
import orjson

from tests.flows.conftest import jsonl, wait_for

TUE = "2026-11-24T10:00:00+01:00"
ACCOUNTS = [{"id": "alice", "plan": "PREPAID_S", "balance": "10.00"},
            {"id": "bob", "plan": "PREPAID_S", "balance": "10.00"}]
SMS = Fraction(9, 100)


def valid(n: int) -> dict:
    return {"id": f"v-{n}", "kind": "event", "account": "alice", "service": "sms", "ts": TUE,
            "used": 1}


def json_poisons() -> list[tuple[str, bytes]]:
    """(field the reject names, payload): each would be alice's SMS but for one field."""
    def with_field(n: int, field: str, raw: bytes) -> bytes:
        body = orjson.dumps({k: v for k, v in valid(n).items() if k != field})[:-1]
        return body + b',"' + field.encode() + b'":' + raw + b"}"

    array, obj = b"[" * 1000 + b"]" * 1000, b'{"a":' * 999 + b"1" + b"}" * 999
    return [
        ("id", with_field(900, "id", array)),
        ("kind", with_field(901, "kind", array)),
        ("used", with_field(902, "used", obj)),
        ("ts", with_field(903, "ts", array)),
        ("account", orjson.dumps({"id": "p-4", "kind": "event", "account": "alice",
                                  "service": "sms", "ts": TUE, "used": 1})[:-1]
         + b',"account":"bob"}'),
    ]


def msgpack_poisons() -> list[tuple[str, bytes]]:
    def with_field(n: int, field: str, raw: bytes) -> bytes:
        rest = {k: v for k, v in valid(n).items() if k != field}
        return (bytes([0x80 | (len(rest) + 1)]) + b"".join(
            msgpack.packb(k) + msgpack.packb(v) for k, v in rest.items())
            + msgpack.packb(field) + raw)

    deep_map = b"\x81\xa1k" * 1000 + b"\xc0"
    twice = [*dict(valid(904), id="p-4").items(), ("account", "bob")]
    return [
        ("kind", with_field(900, "kind", deep_map)),
        ("id", with_field(901, "id", deep_map)),
        ("used", with_field(902, "used", b"\x91" * 1000 + b"\x01")),
        ("ts", with_field(903, "ts", deep_map)),
        ("account", bytes([0x80 | len(twice)])
         + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in twice)),
    ]


def stream(poisons: list[tuple[str, bytes]], encode) -> tuple[list[bytes], list[str]]:
    """Valid requests with a poison after every second one; (payloads, valid ids)."""
    payloads, ids, n = [], [], 0
    for _, poison in poisons:
        for _ in range(2):
            payloads.append(encode(valid(n)))
            ids.append(f"v-{n}")
            n += 1
        payloads.append(poison)
    for _ in range(3):
        payloads.append(encode(valid(n)))
        ids.append(f"v-{n}")
        n += 1
    return payloads, ids


def raw_of(reject: dict) -> bytes:
    if reject.get("raw_encoding") == "base64":
        return base64.b64decode(reject["raw"])
    return reject["raw"].encode()


def check_rejects(rejects: list[dict], poisons: list[tuple[str, bytes]]) -> None:
    by_raw = {raw_of(r): r for r in rejects}
    assert len(rejects) == len(poisons), rejects
    for field, poison in poisons:
        rej = by_raw[poison]
        assert rej["error"] == "MALFORMED", rej
        assert f"field '{field}'" in rej["detail"], rej


def run_over_kafka(cf_env, tmp_path, fmt: str, poisons, encode) -> None:
    env = cf_env(ACCOUNTS)
    engine = env.start_engine("--recovery", str(tmp_path / "recovery"), "--snapshot-s", "0.5",
                              "--format", fmt, fmt=fmt)
    decisions, rejects = env.reader("decisions"), env.reader("rejects")
    payloads, ids = stream(poisons, encode)
    for payload in payloads:
        env.kafka.send([payload], key=b"alice")
    env.kafka.flush()
    wait_for(lambda: set(ids) <= decisions.by_id.keys() and len(rejects.docs) >= len(poisons),
             120, "a decision for every valid request and a reject for every poison",
             [decisions, rejects], engine)
    assert [decisions.by_id[i][0]["result"] for i in ids] == ["SUCCESS"] * len(ids)
    check_rejects(rejects.docs, poisons)
    # the engine is still up a few snapshots later, and decides what comes next
    env.kafka.send([encode(valid(999))], key=b"alice")
    env.kafka.flush()
    wait_for(lambda: "v-999" in decisions.by_id, 60, "the request after the poisons",
             [decisions], engine)
    assert engine.proc.poll() is None, engine.log_tail()
    assert Fraction(env.balance_micros("alice"), 10**6) == 10 - SMS * (len(ids) + 1)
    assert env.balance_micros("bob") == 10_000_000  # "account" given twice charged no one


def test_json_poison_over_kafka_with_recovery(cf_env, tmp_path):
    run_over_kafka(cf_env, tmp_path, "json", json_poisons(), orjson.dumps)


def test_msgpack_poison_over_kafka_with_recovery(cf_env, tmp_path):
    run_over_kafka(cf_env, tmp_path, "msgpack", msgpack_poisons(), msgpack.packb)


def test_json_poison_in_jsonl_mode(cf_env, tmp_path):
    env = cf_env(ACCOUNTS)
    poisons = json_poisons()
    payloads, ids = stream(poisons, orjson.dumps)
    infile = tmp_path / "requests.jsonl"
    infile.write_bytes(b"\n".join(payloads) + b"\n")
    out = tmp_path / "out"
    res = env.cli("run", "--input", str(infile), "--output", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert [d["id"] for d in jsonl(out / "decisions.jsonl")] == ids
    assert [c["id"] for c in jsonl(out / "charges.jsonl")] == ids
    check_rejects(jsonl(out / "rejects.jsonl"), poisons)
    assert Fraction(env.balance_micros("alice"), 10**6) == 10 - SMS * len(ids)
    assert env.balance_micros("bob") == 10_000_000
