"""The baseline (bench/baseline) against the engine: same requests in, same outputs out.

* Agreement: gateway traffic (``flows.gateway_sim``) decided by ``chargeflow run --input`` (the
  engine's JSONL mode, private data dir and embedded Redis) and by ``Baseline.handle`` (the
  shared Redis, a private prefix) in the same order; every decision (but ``latency_us``),
  charge and reject must be identical, field for field. Once on the sample catalog as the
  benchmark sends it, once on a catalog and traffic built to reach the rarer rules.
* Replay: a request id seen before returns its first outputs and changes nothing.
* The process: ``python -m bench.baseline`` over the embedded broker decides what it reads
  and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from balances.accounts import AccountSpec
from bench.baseline.store import Baseline, provision
from charging.errors import RequestError
from charging.money import MICROS, parse_decimal
from charging.requests import parse
from flows.broker import EmbeddedBroker, ensure_topics
from flows.gateway_sim import Gateway
from tests.conftest import REDIS_URL, SAMPLE_TEXT
from tests.flows.conftest import REPO, CfEnv, jsonl

#: 2026-05-31 23:59:50 Europe/Berlin, a Sunday: midnight starts a new day, ISO week and month.
SUNDAY_NIGHT_MS = 1_780_264_790_000
TUE = "2026-11-24T10:00:00+01:00"


# -- helpers ------------------------------------------------------------------------------------

def specs_of(accounts: list[dict]) -> list[AccountSpec]:
    return [AccountSpec(a["id"], a["plan"], int(parse_decimal(a["balance"]) * MICROS),
                        a.get("status", "active"), a.get("allow_negative", False))
            for a in accounts]


def sample_accounts(n: int = 100) -> list[dict]:
    """Mostly funded accounts, some nearly dry (partial grants, CREDIT_LIMIT_REACHED), one
    blocked, one allowed to go negative."""
    balances = ["20.00"] * 7 + ["0.50", "0.12", "0.00"]
    out = [{"id": f"sub{i:03d}", "plan": "PREPAID_S", "balance": balances[i % 10]}
           for i in range(n - 2)]
    out.append({"id": "sub-blocked", "plan": "PREPAID_S", "balance": "5.00",
                "status": "blocked"})
    out.append({"id": "sub-neg", "plan": "PREPAID_S", "balance": "0.00",
                "allow_negative": True})
    return out


def gateway_requests(accounts: list[dict], n: int, **kw) -> list[dict]:
    gw = Gateway([a["id"] for a in accounts], **kw)
    return [gw.next() for _ in range(n)]


def run_engine(env: CfEnv, lines: list[bytes], tmp: Path) -> dict[str, list[dict]]:
    """The engine's JSONL mode over ``lines``: its decisions, charges and rejects."""
    infile = tmp / "requests.jsonl"
    infile.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp / "engine-out"
    res = env.cli("run", "--input", str(infile), "--output", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return {kind: jsonl(out / f"{kind}s.jsonl") for kind in ("decision", "charge", "reject")}


def run_baseline(client, prefix: str, catalog_text: str, accounts: list[dict],
                 lines: list[bytes]) -> dict[str, list[dict]]:
    provision(client, prefix, catalog_text, specs_of(accounts))
    baseline = Baseline(client, prefix)
    outs: dict[str, list[dict]] = {"decision": [], "charge": [], "reject": []}
    try:
        for line in lines:
            for kind, _key, value in baseline.handle(line):
                outs[kind].append(orjson.loads(value))
    finally:
        baseline.close()
    return outs


def strip(docs: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "latency_us"} for d in docs]


def assert_same(kind: str, engine: list[dict], baseline: list[dict],
                requests: Callable[[int, dict], object]) -> None:
    """Field-for-field equality, in order, with a readable account of the first differences."""
    engine, baseline = strip(engine), strip(baseline)
    if engine == baseline:
        return
    lines = [f"{kind}s differ: engine {len(engine)}, baseline {len(baseline)}"]
    shown = 0
    for i, (e, b) in enumerate(zip(engine, baseline)):
        if e == b:
            continue
        fields = sorted(k for k in e.keys() | b.keys() if e.get(k) != b.get(k))
        lines.append(f"#{i} id={e.get('id')!r} fields {fields}\n"
                     f"  request:  {requests(i, e)}\n"
                     f"  engine:   {e}\n  baseline: {b}")
        shown += 1
        if shown == 5:
            break
    if shown == 0:
        lines.append(f"one is a prefix of the other; first extra: "
                     f"{(engine + baseline)[min(len(engine), len(baseline))]}")
    pytest.fail("\n".join(lines), pytrace=False)


def agree(make_env, redis_client, prefix, tmp_path, catalog_text: str, accounts: list[dict],
          lines: list[bytes]) -> dict[str, list[dict]]:
    """Run both over ``lines``; assert every output agrees; the engine's outputs."""
    env = make_env(accounts, catalog_text)
    engine = run_engine(env, lines, tmp_path)
    baseline = run_baseline(redis_client, prefix, catalog_text, accounts, lines)
    valid, by_id = [], {}  # decisions come one per valid request, in order
    for line in lines:
        try:
            doc = orjson.loads(line)
            parse(doc)
        except (orjson.JSONDecodeError, RequestError, TypeError, AttributeError):
            continue
        valid.append(doc)
        by_id.setdefault((doc["account"], doc["id"]), doc)
    context = {
        "decision": lambda i, d: valid[i] if i < len(valid) else None,
        "charge": lambda i, c: by_id.get((c.get("account"), c.get("id"))),
        "reject": lambda i, r: r.get("raw", "")[:200],
    }
    for kind in ("decision", "charge", "reject"):
        assert_same(kind, engine[kind], baseline[kind], context[kind])
    return engine


@pytest.fixture
def make_env(tmp_path):
    """``make_env(accounts, catalog_text)``: a private engine data dir with the catalog and
    accounts loaded through the CLI (embedded Redis); stopped with ``chargeflow stop``."""
    envs: list[CfEnv] = []

    def make(accounts: list[dict], catalog_text: str = SAMPLE_TEXT) -> CfEnv:
        root = tmp_path / f"engine{len(envs)}"
        root.mkdir()
        env = CfEnv(root, catalog_text, accounts)
        envs.append(env)
        return env.prepare()

    yield make
    for env in envs:
        env.close()


# -- agreement on the benchmark's traffic --------------------------------------------------------

def test_agrees_with_the_engine_on_gateway_traffic(make_env, redis_client, prefix, tmp_path):
    accounts = sample_accounts()
    reqs = gateway_requests(accounts, 2500, seed=11, unknown_share=0.02)
    engine = agree(make_env, redis_client, prefix, tmp_path, SAMPLE_TEXT, accounts,
                   [orjson.dumps(r) for r in reqs])

    decisions = engine["decision"]
    assert [d["id"] for d in decisions] == [r["id"] for r in reqs]
    results = collections.Counter(d["result"] for d in decisions)
    for result in ("SUCCESS", "CREDIT_LIMIT_REACHED", "USER_UNKNOWN", "SESSION_UNKNOWN",
                   "END_USER_SERVICE_DENIED"):
        assert results[result] > 0, results
    assert results["SUCCESS"] > len(reqs) // 2, results
    # every kind of the gateway's traffic was decided, and not only refused
    seen = {(d["kind"], d["service"]) for d in decisions if d["result"] == "SUCCESS"}
    assert {("initial", "voice"), ("update", "voice"), ("terminate", "voice"),
            ("initial", "data"), ("update", "data"), ("terminate", "data"),
            ("event", "sms"), ("event", "data")} <= seen
    assert any(d["final"] and d["granted"] > 0 for d in decisions)  # partial grants
    charges = engine["charge"]
    assert any(c["allowance_units"] > 0 for c in charges)  # data from the allowance
    assert any(c["uncharged"] != "0" for c in charges)  # usage past what the balance had


# -- agreement on the rarer rules ------------------------------------------------------------------

#: The sample catalog with allowances of every period (two of them for data, used in plan
#: order), no catch-all voice rate (calls to fixed lines fail to rate), a service whose usage
#: can cost more than the engine represents, and a plan without data and sms.
EDGE_TEXT = (
    SAMPLE_TEXT.replace('version: "2026-11-a"', 'version: "edge-1"')
    .replace("  sms:   {unit: event}\n",
             "  sms:   {unit: event}\n  premium: {unit: event}\n  video: {unit: second}\n")
    .replace("      - id: other\n        steps: [{from: 0, price: \"0.20\", per: 60, "
             "increment: 60}]\n", "")
    .replace("      - {service: data, units: 1073741824, period: month}\n",
             "      - {service: data, units: 3000000, period: day}\n"
             "      - {service: data, units: 2000000, period: week}\n"
             "      - {service: sms, units: 2, period: month}\n")
    .replace("    tariffs: {voice: VOICE_STD, data: DATA_STD, sms: SMS_STD}\n",
             "    tariffs: {voice: VOICE_STD, data: DATA_STD, sms: SMS_STD, "
             "premium: PREMIUM}\n")
    + "  VOICE_ONLY:\n    tariffs: {voice: VOICE_STD}\n"
)
EDGE_TEXT = EDGE_TEXT.replace(
    "plans:\n",
    "  PREMIUM:\n    service: premium\n    quota: 1\n"
    "    rates: [{id: premium, steps: [{from: 0, price: \"10000\", per: 1, increment: 1}]}]\n"
    "plans:\n")
assert "premium: PREMIUM" in EDGE_TEXT and "id: other" not in EDGE_TEXT
assert "period: week" in EDGE_TEXT and "VOICE_ONLY" in EDGE_TEXT


def edge_accounts() -> list[dict]:
    base = [{"id": f"e{i:02d}", "plan": "PREPAID_S", "balance": b}
            for i, b in enumerate(["30.00", "30.00", "30.00", "2.00", "0.40", "0.05"] * 5)]
    return base + [
        {"id": "x-restart", "plan": "PREPAID_S", "balance": "10.00"},
        {"id": "x-dry", "plan": "PREPAID_S", "balance": "0.20"},
        {"id": "x-neg", "plan": "PREPAID_S", "balance": "1.00", "allow_negative": True},
        {"id": "x-huge", "plan": "PREPAID_S", "balance": "5000000000.00"},
        {"id": "x-voice", "plan": "VOICE_ONLY", "balance": "3.00"},
        {"id": "x-blocked", "plan": "PREPAID_S", "balance": "3.00", "status": "blocked"},
        {"id": "x-both", "plan": "PREPAID_S", "balance": "3.00"},
    ]


def _s(rid, kind, account, service, session, seq, **kw) -> dict:
    return {"id": rid, "kind": kind, "account": account, "service": service,
            "session": session, "seq": seq, "ts": TUE, **kw}


def _e(rid, account, service, used, **kw) -> dict:
    return {"id": rid, "kind": "event", "account": account, "service": service, "used": used,
            "ts": TUE, **kw}


MOBILE = "4917612345"
SCRIPTED: list[dict | bytes] = [
    # a session id restarted while open: the old reservation is released, nothing charged
    _s("r0", "initial", "x-restart", "voice", "rs", 0, destination=MOBILE),
    _s("r1", "update", "x-restart", "voice", "rs", 1, used=70),
    _s("r2", "initial", "x-restart", "voice", "rs", 0, destination="+" + MOBILE,
       requested=90, used=12),  # used on an initial is charged too
    _s("r3", "update", "x-restart", "data", "rs", 1, used=50),  # the session's service counts
    _s("r4", "terminate", "x-restart", "voice", "rs", 2, used=400),
    _s("r5", "terminate", "x-restart", "voice", "rs", 3, used=5,
       destination=MOBILE),  # ended: SESSION_UNKNOWN
    # data sessions over the allowances: day bucket, then week bucket, then money
    _s("d0", "initial", "x-restart", "data", "ds", 0, requested=4_000_000),
    _s("d1", "update", "x-restart", "data", "ds", 1, used=3_500_000, requested=2**40),
    _s("d2", "update", "x-restart", "data", "ds", 2, used=2_000_000, requested=0),
    _e("d3", "x-restart", "data", 1_000_000),
    _s("d4", "terminate", "x-restart", "data", "ds", 3, used=7_000_000),
    _e("m0", "x-restart", "sms", 1), _e("m1", "x-restart", "sms", 2),
    _e("m2", "x-restart", "sms", 0), _e("m3", "x-restart", "sms", 1),
    # running dry: partial grant, a refused update keeps the session, then terminate
    _s("y0", "initial", "x-dry", "voice", "ys", 0, destination=MOBILE, requested=60),
    _s("y1", "update", "x-dry", "voice", "ys", 1, used=60, requested=300),
    _s("y2", "update", "x-dry", "voice", "ys", 2, used=40),
    _s("y3", "update", "x-dry", "voice", "ys", 3, used=10),
    _s("y4", "terminate", "x-dry", "voice", "ys", 4, used=30),
    _e("y5", "x-dry", "sms", 3),  # more than the allowance and the balance: refused whole
    _s("y6", "initial", "x-dry", "voice", "ys2", 0, destination=MOBILE),  # refused, final
    _s("y7", "update", "x-dry", "voice", "ys2", 1, used=20,
       destination=MOBILE),  # never held: SESSION_UNKNOWN
    # an account allowed to go negative, down to the floor
    _e("n0", "x-neg", "sms", 40),
    _e("n1", "x-neg", "premium", 1_000_000),  # 10^10: down to −(2^53 − 1) micros, rest owed
    _e("n2", "x-neg", "sms", 1),
    _s("n3", "initial", "x-neg", "voice", "ns", 0, destination=MOBILE),
    _s("n4", "terminate", "x-neg", "voice", "ns", 1, used=30),
    # costs beyond 9·10^12: RATING_FAILED; a session with such usage is ended
    _e("h0", "x-huge", "premium", 2**40),
    _s("h1", "initial", "x-huge", "premium", "hs", 0, requested=5),
    _s("h2", "update", "x-huge", "premium", "hs", 1, used=2**40),
    _s("h3", "update", "x-huge", "premium", "hs", 2, used=1),
    _s("h4", "initial", "x-huge", "premium", "hs2", 0, requested=2**40),
    _s("h5", "terminate", "x-huge", "premium", "hs2", 1, used=3),
    # no rate for the destination, plan without the service, blocked, service unknown
    _s("v0", "initial", "x-voice", "voice", "vs", 0, destination="4930123456"),
    _s("v1", "initial", "x-voice", "voice", "vs2", 0),  # no destination at all
    _e("v2", "x-voice", "data", 10), _e("v3", "x-voice", "sms", 1),
    _e("v4", "x-voice", "video", 10), _e("v5", "x-blocked", "sms", 1),
    _s("v6", "update", "x-voice", "voice", "nope", 3, used=61, destination=MOBILE),
    _s("v7", "terminate", "x-voice", "voice", "nope2", 3, used=61, destination="4930"),
    # times as RFC 3339 with fractions and offsets, and epoch ms; a Saturday off-peak call
    _s("t0", "initial", "x-both", "voice", "ts", 0, destination=MOBILE,
       ts="2026-11-28T10:00:00.999+01:00"),
    _s("t1", "terminate", "x-both", "voice", "ts", 1, used=61, ts=1_795_856_461_000),
    _e("t2", "x-both", "data", 123_457, ts="2026-11-24T09:00:00Z"),
    # an id reused for another account is a new request there (here in another engine
    # batch than the first use: see test_an_id_reused_for_another_account_in_one_batch)
    _e("m0", "x-both", "sms", 1),
    # rejects: the same reject documents
    b'{"id": "bad-1", "kind": "event"',
    b"not json",
    b'{"id":"bad-2","kind":"event","account":"x-both","service":"sms","ts":"x\xff"}',
    orjson.dumps({"id": "bad-3", "kind": "event", "account": "x-both", "service": "sms",
                  "ts": TUE, "used": -3}),
    orjson.dumps({"id": "bad-4", "kind": "event", "account": "x-both", "ts": TUE}),
    orjson.dumps({"id": "bad-5", "kind": "initial", "account": "x-both", "service": "voice",
                  "ts": TUE, "session": "s"}),
    orjson.dumps({"id": "bad-6", "kind": "event", "account": "x-both", "service": "sms",
                  "ts": "2026-11-24T10:00:00"}),
    orjson.dumps({"id": "bad-7", "kind": "event", "account": "x-both", "service": "sms",
                  "ts": TUE, "destination": "49-30"}),
    orjson.dumps({"id": "x" * 129, "kind": "event", "account": "x-both", "service": "sms",
                  "ts": TUE}),
    orjson.dumps([1, 2]),
    b'{"id":"bad-8","kind":"event","account":"x-both","service":"sms","ts":"' +
    b"9" * 70_000 + b'"}',
]


def edge_lines() -> tuple[list[dict], list[bytes]]:
    """Gateway traffic across Sunday midnight (allowances refill) with the scripted requests
    spread over it in their order, and replays of earlier lines (same batch and later)."""
    accounts = edge_accounts()
    gw = [orjson.dumps(r) for r in gateway_requests(accounts[:30], 2000, seed=5,
                                                    unknown_share=0.02,
                                                    ts_ms=SUNDAY_NIGHT_MS)]
    lines: list[bytes] = []
    script = [x if isinstance(x, bytes) else orjson.dumps(x) for x in SCRIPTED]
    every = len(gw) // len(script)
    for i, line in enumerate(gw):
        lines.append(line)
        if i % every == 0 and script:
            lines.append(script.pop(0))
        if i % 97 == 50:  # a replay of an earlier gateway line, maybe in the same batch
            lines.append(gw[(i * 7919) % (i + 1)])
    lines += script
    lines += gw[:40]  # the start again, in another engine batch: all replays
    return accounts, lines


def test_agrees_with_the_engine_on_the_rarer_rules(make_env, redis_client, prefix, tmp_path):
    accounts, lines = edge_lines()
    engine = agree(make_env, redis_client, prefix, tmp_path, EDGE_TEXT, accounts, lines)

    decisions = engine["decision"]
    results = collections.Counter(d["result"] for d in decisions)
    assert set(results) == {"SUCCESS", "CREDIT_LIMIT_REACHED", "USER_UNKNOWN",
                            "SESSION_UNKNOWN", "END_USER_SERVICE_DENIED", "RATING_FAILED"}
    by_id = {(d["account"], d["id"]): d for d in decisions}
    charges = {(c["account"], c["id"]): c for c in engine["charge"]}
    # the scripted cases really went where they were meant to
    assert by_id["x-restart", "r5"]["result"] == "SESSION_UNKNOWN"
    assert charges["x-restart", "d1"]["allowance_units"] == 3_500_000
    assert by_id["x-dry", "y3"]["result"] == "CREDIT_LIMIT_REACHED"
    assert by_id["x-dry", "y6"]["final"] and by_id["x-dry", "y6"]["granted"] == 0
    assert by_id["x-dry", "y7"]["result"] == "SESSION_UNKNOWN"
    assert charges["x-neg", "n1"]["uncharged"] != "0"
    assert charges["x-neg", "n2"]["uncharged"] == "0.0900"
    assert by_id["x-huge", "h0"]["result"] == "RATING_FAILED"
    assert by_id["x-huge", "h2"]["result"] == "RATING_FAILED"
    assert by_id["x-huge", "h3"]["result"] == "SESSION_UNKNOWN"
    assert by_id["x-voice", "v0"]["result"] == "RATING_FAILED"
    assert by_id["x-voice", "v2"]["result"] == "END_USER_SERVICE_DENIED"
    assert len(engine["reject"]) == 11
    assert by_id["x-both", "m0"]["result"] == "SUCCESS"
    # allowances refilled after midnight: data from the allowance on both sides of it
    data = [c for c in engine["charge"] if c["service"] == "data" and c["allowance_units"]]
    assert {c["ts"][:13] for c in data} >= {"2026-05-31T21", "2026-05-31T22"}  # UTC


def test_an_id_reused_for_another_account_in_one_batch(make_env, redis_client, prefix,
                                                       tmp_path):
    accounts = [{"id": "ann", "plan": "PREPAID_S", "balance": "1.00"},
                {"id": "bob", "plan": "PREPAID_S", "balance": "1.00"}]
    lines = [orjson.dumps(_e("same-id", "ann", "sms", 1)),
             orjson.dumps(_e("same-id", "bob", "sms", 1))]
    engine = agree(make_env, redis_client, prefix, tmp_path, SAMPLE_TEXT, accounts, lines)
    assert [(d["account"], d["balance"]) for d in engine["decision"]] == \
        [("ann", "0.91"), ("bob", "0.91")]


# -- replay ----------------------------------------------------------------------------------------

def test_a_replayed_id_returns_its_first_outputs_and_changes_nothing(redis_client, prefix):
    accounts = [{"id": "alice", "plan": "PREPAID_S", "balance": "3.00"}]
    provision(redis_client, prefix, SAMPLE_TEXT, specs_of(accounts))
    baseline = Baseline(redis_client, prefix)
    try:
        initial = orjson.dumps(_s("c0", "initial", "alice", "voice", "c", 0,
                                  destination=MOBILE))
        update = orjson.dumps(_s("c1", "update", "alice", "voice", "c", 1, used=75))
        baseline.handle(initial)
        first = baseline.handle(update)
        state = redis_client.get(baseline.keys.state("alice"))
        ledger = baseline.ledger("alice")
        again = baseline.handle(update)
        assert [k for k, _, _ in first] == ["decision", "charge"]
        assert strip([orjson.loads(v) for _, _, v in again]) == \
            strip([orjson.loads(v) for _, _, v in first])
        assert redis_client.get(baseline.keys.state("alice")) == state
        assert baseline.ledger("alice") == ledger
        decision = orjson.loads(first[0][2])
        assert (decision["result"], decision["charged"], decision["balance"]) == \
            ("SUCCESS", "0.1725", "2.8275")  # 0.05 + 0.10 + 15 s at 0.09/min
        assert sum(e["delta"] for e in ledger) == baseline.state("alice").balance
        # a reject is not remembered: the same bad bytes are rejected again
        bad = b'{"id": "c2"'
        assert [k for k, _, _ in baseline.handle(bad)] == ["reject"]
        assert [k for k, _, _ in baseline.handle(bad)] == ["reject"]
    finally:
        baseline.close()


def test_concurrent_baselines_on_one_account_lose_no_change(redis_client, prefix):
    """Two baselines charging one account at once: WATCH/EXEC makes the loser decide again,
    so every charge lands exactly once and the balances decided are all different."""
    accounts = [{"id": "shared", "plan": "PREPAID_S", "balance": "100.00"}]
    provision(redis_client, prefix, SAMPLE_TEXT, specs_of(accounts))
    decided: list[dict] = []

    def worker(tag: str) -> None:
        baseline = Baseline(redis_client, prefix)
        try:
            for k in range(150):  # 0.09 each
                outs = baseline.handle(orjson.dumps(_e(f"{tag}{k}", "shared", "sms", 1)))
                decided.append(orjson.loads(outs[0][2]))
        finally:
            baseline.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(decided) == 300 and {d["result"] for d in decided} == {"SUCCESS"}
    assert len({d["balance"] for d in decided}) == 300
    baseline = Baseline(redis_client, prefix)
    try:
        assert baseline.state("shared").balance == 100_000_000 - 300 * 90_000
        assert sum(e["delta"] for e in baseline.ledger("shared")) == 73_000_000
    finally:
        baseline.close()


# -- the process over a real broker ------------------------------------------------------------

def _read_until(proc: subprocess.Popen, text: str, timeout_s: float) -> list[str]:
    """Lines of ``proc``'s stdout until one equals ``text`` (a thread, so it can time out)."""
    seen: list[str] = []
    found = threading.Event()

    def pump() -> None:
        for raw in proc.stdout:
            seen.append(raw.decode(errors="replace").rstrip("\n"))
            if seen[-1] == text:
                found.set()
                return

    threading.Thread(target=pump, daemon=True).start()
    if not found.wait(timeout_s):
        raise AssertionError(f"no {text!r} line within {timeout_s} s; stdout so far: {seen}")
    return seen


def test_the_process_decides_requests_from_kafka(redis_client, prefix, tmp_path):
    accounts = sample_accounts(20)
    provision(redis_client, prefix, SAMPLE_TEXT, specs_of(accounts))
    topics = {k: f"{prefix}.{k}" for k in ("requests", "decisions", "charges", "rejects")}
    broker = EmbeddedBroker(tmp_path / "kafka")
    proc = None
    try:
        address = broker.start()
        ensure_topics(address, {topics["requests"]: 2, topics["decisions"]: 2,
                                topics["charges"]: 2, topics["rejects"]: 1})
        log = open(tmp_path / "baseline.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.baseline", "--kafka", address, "--redis", REDIS_URL,
             "--prefix", prefix, "--source", topics["requests"],
             "--decisions", topics["decisions"], "--charges", topics["charges"],
             "--rejects", topics["rejects"]],
            cwd=REPO, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        _read_until(proc, "baseline ready", 60)

        reqs = gateway_requests(accounts, 50, seed=3, unknown_share=0.05)
        producer = Producer({"bootstrap.servers": address, "linger.ms": 5})
        for r in reqs:
            producer.produce(topics["requests"], value=orjson.dumps(r),
                             key=r["account"].encode())
        producer.produce(topics["requests"], value=b"{oops", key=b"x")
        assert producer.flush(30) == 0

        decided = _collect(address, topics["decisions"], {r["id"] for r in reqs}, 60, proc)
        assert set(decided) == {r["id"] for r in reqs}
        for r in reqs:
            d = decided[r["id"]]
            assert (d["kind"], d["account"], d["service"]) == \
                (r["kind"], r["account"], r["service"])
            assert isinstance(d["latency_us"], int) and d["latency_us"] >= 0
        assert "USER_UNKNOWN" in {d["result"] for d in decided.values()}
        rejects = _collect(address, topics["rejects"], None, 30, proc, key="raw", want=1)
        assert list(rejects) == ["{oops"]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "baseline.log").read_text()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        # the broker is this process's child: once it exits on SIGTERM it is a zombie that
        # EmbeddedBroker.stop counts as running until its timeout, so keep that short
        broker.stop(timeout_s=2)


def _collect(address: str, topic: str, ids: set[str] | None, timeout_s: float,
             proc: subprocess.Popen, key: str = "id", want: int = 0) -> dict[str, dict]:
    """Read ``topic`` from the start of every partition until every id in ``ids`` (or
    ``want`` documents) came; documents by ``key``."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5})
    try:
        parts = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        got: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_s
        while (ids is not None and not ids <= set(got)) or (ids is None and len(got) < want):
            assert proc.poll() is None, f"the baseline exited ({proc.returncode})"
            assert time.monotonic() < deadline, \
                f"timed out on {topic}: {len(got)} of {len(ids) if ids else want}"
            for m in consumer.consume(500, timeout=0.2):
                if m.error() is None:
                    doc = orjson.loads(m.value())
                    got[doc[key]] = doc
        return got
    finally:
        consumer.close()
