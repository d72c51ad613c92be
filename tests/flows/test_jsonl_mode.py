"""``chargeflow run --input FILE|- --output DIR``: the broker-less JSONL mode, end to end."""

from __future__ import annotations

import random
from fractions import Fraction

import orjson

from tests.flows.conftest import CfEnv, accounts_of, jsonl
from tests.flows.oracle import (
    Model,
    account_traffic,
    check_charge,
    check_decision,
    event,
    interleave,
    strip_latency,
)

TUE = "2026-11-24T10:00:00+01:00"

BAD_LINES = [  # (line, reject code)
    (b'{"id": "bad-1", "kind": "event"', "MALFORMED"),
    (b"not json at all", "MALFORMED"),
    (b'{"id":"bad-2","kind":"event","account":"acct00001","service":"sms","ts":"x\xff"}',
     "MALFORMED"),
    (orjson.dumps({"id": "bad-3", "kind": "event", "account": "acct00001", "service": "sms",
                   "ts": TUE, "used": -3}), "INVALID_FIELD"),
    (orjson.dumps({"id": "bad-4", "kind": "event", "account": "acct00001", "ts": TUE}),
     "MISSING_FIELD"),
    (orjson.dumps({"id": "bad-5", "kind": "event", "account": 7, "service": "sms", "ts": TUE}),
     "INVALID_FIELD"),
    (b'{"id":"bad-6","kind":"event","account":"acct00001","service":"sms","ts":"' +
     b"9" * 70_000 + b'"}', "TOO_LARGE"),
]


def build_input(seed: int = 11) -> tuple[list[dict], list[dict], list[bytes]]:
    """(accounts, valid requests in input order, input lines with bad ones and blanks)."""
    rng = random.Random(seed)
    accounts = accounts_of(400, "50.00") + [
        {"id": "dry", "plan": "PREPAID_S", "balance": "1.00"},
        {"id": "blocked", "plan": "PREPAID_S", "balance": "1.00", "status": "blocked"},
    ]
    per = {a["id"]: account_traffic(a["id"], rng, rng.randint(0, 2), rng.randint(1, 3),
                                    rng.randint(0, 2)) for a in accounts[:400]}
    per["dry"] = [event(f"dry-{k}", "dry", "sms", 1, TUE) for k in range(15)]
    per["blocked"] = [event("blocked-1", "blocked", "sms", 1, TUE)]
    per["ghost"] = [event("ghost-1", "ghost", "sms", 1, TUE)]
    valid = list(interleave(per, rng))
    lines = [orjson.dumps(r) for r in valid]
    for k, (bad, _) in enumerate(BAD_LINES):  # spread over the input
        lines.insert((k + 1) * len(lines) // (len(BAD_LINES) + 1), bad)
    lines.insert(5, b"")  # blank lines are skipped
    lines.insert(9, b"   ")
    return accounts, valid, lines


def check_outputs(env: CfEnv, out_dir, accounts, valid, model: Model) -> list[dict]:
    decisions = jsonl(out_dir / "decisions.jsonl")
    charges = jsonl(out_dir / "charges.jsonl")
    rejects = jsonl(out_dir / "rejects.jsonl")
    # one decision per valid request, in input order
    assert [d["id"] for d in decisions] == [r["id"] for r in valid]
    expected_charges = []
    for r, d in zip(valid, decisions):
        exp = model.apply(r)
        check_decision(d, r, exp)
        if exp.charge is not None:
            expected_charges.append((r, exp))
    assert [c["id"] for c in charges] == [r["id"] for r, _ in expected_charges]
    for c, (r, exp) in zip(charges, expected_charges):
        check_charge(c, r, exp, env.catalog)
    assert [x["error"] for x in rejects] == [code for _, code in BAD_LINES]
    assert all(x["detail"] for x in rejects)
    return decisions


def test_jsonl_file_run_decides_every_request_in_order(cf_env, tmp_path):
    accounts, valid, lines = build_input()
    assert len(lines) > 2 * 1024  # more than one engine batch
    env = cf_env(accounts)
    infile = tmp_path / "requests.jsonl"
    infile.write_bytes(b"\r\n".join(lines) + b"\r\n")  # CRLF line ends
    out = tmp_path / "out"
    res = env.cli("run", "--input", str(infile), "--output", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (env.data_dir / "broker.pid").exists()  # no broker in JSONL mode
    model = Model(env.catalog, accounts)
    decisions = check_outputs(env, out, accounts, valid, model)

    # one account's requests applied in input order: the balance steps down 0.09 at a time
    dry = [d for d in decisions if d["account"] == "dry"]
    assert [Fraction(d["balance"]) for d in dry] == \
        [Fraction(100 - 9 * min(k, 11), 100) for k in range(1, 16)]
    assert [d["result"] for d in dry] == ["SUCCESS"] * 11 + ["CREDIT_LIMIT_REACHED"] * 4
    assert {d["result"] for d in decisions if d["account"] == "blocked"} == \
        {"END_USER_SERVICE_DENIED"}
    assert [d["result"] for d in decisions if d["account"] == "ghost"] == ["USER_UNKNOWN"]

    # final state: balances equal the model, ledgers sum to them, no session left open
    for a in accounts:
        view = env.store.view(a["id"])
        assert Fraction(view.balance, 1_000_000) == model.balance(a["id"]), a
        assert env.ledger_sum(a["id"]) == view.balance
        assert view.reserved == 0 and view.sessions == {}
    shown = orjson.loads(env.cli_ok("balance", "dry", "--json").stdout)
    assert (shown["id"], shown["plan"], shown["status"], shown["balance"], shown["reserved"],
            shown["sessions"]) == ("dry", "PREPAID_S", "active", "0.01", "0.00", [])

    # the same input again: every id replays its outputs, nothing is charged twice
    out2 = tmp_path / "out2"
    res = env.cli("run", "--input", str(infile), "--output", str(out2))
    assert res.returncode == 0, res.stderr[-3000:]
    assert [strip_latency(d) for d in jsonl(out2 / "decisions.jsonl")] == \
        [strip_latency(d) for d in decisions]
    # re-emitted exactly as first written
    assert jsonl(out2 / "charges.jsonl") == jsonl(out / "charges.jsonl")
    assert [x["error"] for x in jsonl(out2 / "rejects.jsonl")] == [c for _, c in BAD_LINES]
    for a in accounts:
        assert Fraction(env.balance_micros(a["id"]), 1_000_000) == model.balance(a["id"])


def test_jsonl_from_stdin(cf_env, tmp_path):
    accounts = accounts_of(3, "2.00")
    env = cf_env(accounts)
    rng = random.Random(3)
    per = {a["id"]: account_traffic(a["id"], rng, 2, 3, 1) for a in accounts}
    valid = list(interleave(per, rng))
    stdin = b"\n".join(orjson.dumps(r) for r in valid) + b"\n{oops"  # no final newline
    out = tmp_path / "out"
    res = env.cli("run", "--input", "-", "--output", str(out), stdin=stdin)
    assert res.returncode == 0, res.stderr[-3000:]
    model = Model(env.catalog, accounts)
    decisions = jsonl(out / "decisions.jsonl")
    assert [d["id"] for d in decisions] == [r["id"] for r in valid]
    for r, d in zip(valid, decisions):
        check_decision(d, r, model.apply(r))
    assert [x["error"] for x in jsonl(out / "rejects.jsonl")] == ["MALFORMED"]
    assert jsonl(out / "rejects.jsonl")[0]["raw"] == "{oops"
    for a in accounts:
        assert Fraction(env.balance_micros(a["id"]), 1_000_000) == model.balance(a["id"])
        assert env.ledger_sum(a["id"]) == env.balance_micros(a["id"])


def test_jsonl_empty_input_and_usage_errors(cf_env, tmp_path):
    env = cf_env(accounts_of(1))
    out = tmp_path / "out"
    res = env.cli("run", "--input", "-", "--output", str(out), stdin=b"")
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("decisions.jsonl", "charges.jsonl", "rejects.jsonl"):
        assert (out / name).read_bytes() == b""
    res = env.cli("run", "--input", "-")  # --input without --output
    assert res.returncode == 1
    assert b"--output" in res.stderr


def test_jsonl_missing_input_file_is_a_clear_error(cf_env, tmp_path):
    env = cf_env(accounts_of(1))
    missing = tmp_path / "missing.jsonl"
    res = env.cli("run", "--input", str(missing), "--output", str(tmp_path / "out"))
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert b"Traceback" not in res.stderr and str(missing).encode() in res.stderr


def test_jsonl_refuses_the_options_of_a_kafka_run(cf_env, tmp_path):
    """--input runs one worker over a file, with no broker: a --kafka, --workers or
    --recovery given with it would be silently ignored, so it is refused, naming them, and
    nothing is decided or written."""
    env = cf_env(accounts_of(1))
    out = tmp_path / "out"
    line = orjson.dumps({"id": "r1", "kind": "event", "account": "acct00000", "service": "sms",
                         "ts": 1795510800000, "used": 1}) + b"\n"
    res = env.cli("run", "--input", "-", "--output", str(out), "--kafka", "127.0.0.1:9092",
                  "--workers", "2", "--recovery", str(tmp_path / "rec"), stdin=line)
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert b"Traceback" not in res.stderr
    for option in (b"--kafka", b"--workers", b"--recovery"):
        assert option in res.stderr
    assert not out.exists() and not (tmp_path / "rec").exists()
