"""A Kafka stream with more than 10,000 malformed messages among valid ones.

Every malformed message goes to ``chargeflow.rejects`` with the right code, a detail that
names the field, and its raw payload (base64 when not UTF-8, the first 64 KiB when huge);
requests for unknown accounts and services are decided (USER_UNKNOWN,
END_USER_SERVICE_DENIED); every valid request is decided as the reference model says; balances
move by the valid requests only; the engine keeps running.
"""

from __future__ import annotations

import base64
import random
import time
from collections import Counter
from fractions import Fraction

import orjson

from tests.flows.conftest import accounts_of, drain, wait_for
from tests.flows.oracle import (
    Model,
    account_traffic,
    check_charge,
    check_decision,
    event,
    interleave,
)

TUE = "2026-11-24T10:00:00+01:00"
RAW_LIMIT = 64 * 1024
N_BAD = 10_500
HUGE = [1 << 20, 1 << 20, 1 << 20, (1 << 20) + 12_345, 64 * 1024 + 1]


def _valid_like(i: int, account: str) -> dict:
    return {"id": f"bad-{i}", "kind": "event", "account": account, "service": "sms",
            "ts": TUE, "used": 1}


def _without(doc: dict, key: str, i: int) -> dict:
    out = {k: v for k, v in doc.items() if k != key}
    out["tag"] = f"bad-{i}"  # an unknown field (ignored) that keeps the payload unique
    return out


def bad_message(i: int, account: str, rng: random.Random) -> tuple[bytes, str, str | None]:
    """(payload, reject code, field the detail names) — each payload unique."""
    v = _valid_like(i, account)
    sess = dict(v, kind="update", session=f"s-{i}", seq=1)
    kind = i % 40
    if kind == 0:
        text = orjson.dumps(v)
        return text[:rng.randint(len(b'{"id":"bad-%d"' % i), len(text) - 1)], "MALFORMED", None
    if kind == 1:
        return f"garbage bad-{i} <xml/>".encode(), "MALFORMED", None
    if kind == 2:
        return (b'{"id":"bad-%d","kind":"event","account":"\xff\xfe%s","service":"sms"}'
                % (i, account.encode())), "MALFORMED", None
    if kind == 3:
        return b"\xc3\x28 bad-%d \xa0\xa1" % i, "MALFORMED", None
    if kind == 4:
        return orjson.dumps([f"bad-{i}", v]), "MALFORMED", None
    if kind == 5:
        return orjson.dumps(f"bad-{i}"), "MALFORMED", None
    if kind == 6:
        return b"{'id': 'bad-%d'}" % i, "MALFORMED", None  # python, not JSON
    wrong = {
        7: ("used", "10"), 8: ("used", 1.5), 9: ("used", True), 10: ("used", {"n": 1}),
        11: ("ts", True), 12: ("ts", {"at": 1}), 13: ("ts", "2026-11-24 10:00"),
        14: ("account", 5), 15: ("account", [account]), 16: ("account", ""),
        17: ("service", 7), 18: ("kind", "refund"), 19: ("kind", 3),
        20: ("destination", "49-17"), 21: ("destination", 4917), 22: ("requested", "all"),
        23: ("id", f"bad-{i}-" + "x" * 128), 24: ("ts", 5_000_000_000_000),
        25: ("used", 2**40 + 1),
    }
    if kind in wrong:
        field, value = wrong[kind]
        doc = dict(v, **{field: value})
        return orjson.dumps(doc), "INVALID_FIELD", field
    if kind == 26:
        return orjson.dumps(dict(sess, session=5)), "INVALID_FIELD", "session"
    if kind == 27:
        return orjson.dumps(dict(sess, seq="1")), "INVALID_FIELD", "seq"
    negative = {28: "used", 29: "requested", 30: "seq"}
    if kind in negative:
        field = negative[kind]
        return orjson.dumps(dict(sess, **{field: -rng.randint(1, 10**6)})), "INVALID_FIELD", field
    missing = {31: "id", 32: "kind", 33: "account", 34: "service", 35: "ts"}
    if kind in missing:
        return orjson.dumps(_without(v, missing[kind], i)), "MISSING_FIELD", missing[kind]
    if kind == 36:
        return orjson.dumps(_without(dict(sess, kind="initial"), "session", i)), \
            "MISSING_FIELD", "session"
    if kind == 37:
        return orjson.dumps(_without(sess, "seq", i)), "MISSING_FIELD", "seq"
    if kind == 38:
        return orjson.dumps(dict(v, used=-1)), "INVALID_FIELD", "used"
    return orjson.dumps(dict(v, id=f"bad-{i}" + "\u00e9" * 200)), "INVALID_FIELD", "id"


def huge(size: int, k: int) -> bytes:
    head = b'{"id":"huge-%d","kind":"event","account":"acct00001","service":"sms","ts":1,' \
           b'"used":1,"pad":"' % k
    return head + b"z" * (size - len(head) - 2) + b'"}'


def test_malformed_stream_is_rejected_and_valid_requests_decided(cf_env):
    rng = random.Random(99)
    accounts = accounts_of(200, "20.00") + [
        {"id": "poor", "plan": "PREPAID_S", "balance": "0.30"}]
    env = cf_env(accounts)
    engine = env.start_engine()
    decisions, charges, rejects = (env.reader(k) for k in ("decisions", "charges", "rejects"))

    per = {a["id"]: account_traffic(a["id"], rng, rng.randint(0, 2), rng.randint(1, 4),
                                    rng.randint(0, 2)) for a in accounts[:200]}
    per["poor"] = [event(f"poor-{k}", "poor", "sms", 1, TUE) for k in range(6)]
    decided_bad = []  # well-formed, but for an unknown account or service
    for k in range(300):
        acct = rng.choice(accounts)["id"]
        svc = rng.choice(["fax", "mms", "VOICE", "sms "])
        per[acct].append(event(f"nosvc-{k}", acct, svc, 1, TUE))
        decided_bad.append(f"nosvc-{k}")
    for k in range(300):
        per[f"ghost-{k % 40}"] = per.get(f"ghost-{k % 40}", []) + [
            event(f"ghost-{k}", f"ghost-{k % 40}", "sms", 1, TUE)]
        decided_bad.append(f"ghost-{k}")
    valid = list(interleave(per, rng))

    expected_rejects: Counter = Counter()
    fields: dict[bytes, str | None] = {}
    stream: list[tuple[bytes | None, bytes | None]] = []  # (key, payload)
    for i in range(N_BAD):
        payload, code, field = bad_message(i, rng.choice(accounts)["id"], rng)
        key = rng.choice([None, rng.choice(accounts)["id"].encode()])
        stream.append((key, payload))
        expected_rejects[(payload[:RAW_LIMIT], code)] += 1
        fields[payload[:RAW_LIMIT]] = field
    for k, size in enumerate(HUGE):
        payload = huge(size, k)
        stream.append((b"acct00001", payload))
        expected_rejects[(payload[:RAW_LIMIT], "TOO_LARGE")] += 1
        fields[payload[:RAW_LIMIT]] = None
    for k in range(4):  # tombstones and empty payloads
        stream.append((b"acct00002", None if k % 2 else b""))
        expected_rejects[(b"", "MALFORMED")] += 1
    rng.shuffle(stream)
    # interleave: valid requests keep their order, bad ones go anywhere between them
    mixed: list[tuple[bytes | None, bytes | None]] = []
    bad_iter = iter(stream)
    share = len(stream) / len(valid)
    owed = 0.0
    for r in valid:
        owed += share
        while owed >= 1:
            mixed.append(next(bad_iter))
            owed -= 1
        mixed.append((r["account"].encode(), orjson.dumps(r)))
    mixed.extend(bad_iter)
    n_rejects = sum(expected_rejects.values())
    assert n_rejects >= 10_000

    t0 = time.monotonic()
    for key, payload in mixed:
        env.kafka.send([payload], key=key)
    env.kafka.flush()  # the broker accepted every message, the 1 MiB ones included
    ids = {r["id"] for r in valid}
    wait_for(lambda: ids <= decisions.by_id.keys() and len(rejects.docs) >= n_rejects, 180,
             "every decision and reject", [decisions, rejects], engine)
    elapsed = time.monotonic() - t0
    print(f"\n[bad-input] {len(mixed)} messages ({n_rejects} malformed, {len(valid)} "
          f"well-formed) handled in {elapsed:.2f} s = {len(mixed) / elapsed:,.0f} msg/s")
    drain([decisions, charges, rejects])

    # every malformed message rejected once, with its code, a detail and its raw payload
    got: Counter = Counter()
    for doc in rejects.docs:
        raw = (base64.b64decode(doc["raw"]) if doc.get("raw_encoding") == "base64"
               else doc["raw"].encode())
        got[(raw, doc["error"])] += 1
        assert doc["detail"], doc
        field = fields.get(raw)
        if field is not None:
            assert f"'{field}'" in doc["detail"], doc
        if raw.startswith(b'{"id":"huge-'):
            assert doc["raw_truncated_from"] in HUGE and len(raw) == RAW_LIMIT
        else:
            assert "raw_truncated_from" not in doc
        if doc.get("raw_encoding") == "base64":
            try:
                raw.decode("utf-8")
                raise AssertionError(f"base64 used for a UTF-8 payload: {doc}")
            except UnicodeDecodeError:
                pass
    assert got == expected_rejects
    print(f"[bad-input] reject codes {dict(Counter(d['error'] for d in rejects.docs))}")

    # no malformed message was decided or charged; every well-formed one was decided
    assert not [i for i in decisions.by_id if i.startswith(("bad-", "huge-"))]
    assert not [i for i in charges.by_id if i not in ids]
    model = Model(env.catalog, accounts)
    for r in valid:
        exp = model.apply(r)
        (d,) = decisions.by_id[r["id"]]
        check_decision(d, r, exp)
        if exp.charge is None:
            assert r["id"] not in charges.by_id, r
        else:
            (c,) = charges.by_id[r["id"]]
            check_charge(c, r, exp, env.catalog)
    assert {decisions.by_id[i][0]["result"] for i in decided_bad} == {
        "USER_UNKNOWN", "END_USER_SERVICE_DENIED"}
    assert all(decisions.by_id[i][0]["result"] == "USER_UNKNOWN"
               for i in decided_bad if i.startswith("ghost-"))
    assert all(decisions.by_id[i][0]["result"] == "END_USER_SERVICE_DENIED"
               for i in decided_bad if i.startswith("nosvc-"))

    # balances moved by the valid requests only
    for a in accounts:
        view = env.store.view(a["id"])
        assert Fraction(view.balance, 1_000_000) == model.balance(a["id"]), a["id"]
        assert env.ledger_sum(a["id"]) == view.balance
    assert Fraction(env.balance_micros("poor"), 1_000_000) == Fraction("0.03")
    assert engine.proc.poll() is None, engine.log_tail()
