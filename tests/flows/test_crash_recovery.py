"""Crash recovery: 100,000 requests, the engine SIGKILLed at random moments and restarted.

``chargeflow run --commit-s 0.5`` over the embedded broker and Redis. All
requests are produced up front (events and voice sessions over ~2,000 accounts, some of them
running dry so that order matters); the engine is SIGKILLed at least five times while it
works through them (at random progress points, and once more during a restart), each time
restarted with the same data dir (it resumes from its group's committed offsets).
Afterwards every request id has a
decision, duplicate decisions of one id are identical, every decision is the one the
reference model gives in per-account input order, every balance equals the model's (each
request applied exactly once) and its ledger sum, and no request id appears twice in a ledger.
"""

from __future__ import annotations

import random
import time
from fractions import Fraction

import pytest

from tests.flows.conftest import SAMPLE_TEXT, CfEnv, accounts_of, drain, wait_for
from tests.flows.oracle import (
    Model,
    account_traffic,
    check_charge,
    check_decision,
    event,
    interleave,
    strip_latency,
)

N_REQUESTS = 100_000
N_KILLS = 6  # at progress points; plus one during a restart
TUE = "2026-11-24T10:00:00+01:00"


def workload(rng: random.Random) -> tuple[list[dict], list[dict]]:
    rich = accounts_of(1980, "500.00")
    dry = accounts_of(20, "3.00", prefix="dry")
    accounts = rich + dry
    per = {a["id"]: account_traffic(a["id"], rng, rng.randint(4, 8), rng.randint(10, 20),
                                    rng.randint(5, 12)) for a in accounts}
    total = sum(len(v) for v in per.values())
    k = 0
    while total < N_REQUESTS:  # top up with SMS to exactly N_REQUESTS
        acct = accounts[k % len(accounts)]["id"]
        per[acct].append(event(f"{acct}-x{k}", acct, "sms", 1, TUE))
        total += 1
        k += 1
    requests = list(interleave(per, rng))
    assert len(requests) == N_REQUESTS
    return accounts, requests


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory):
    """The run, once for the module: 100k requests, SIGKILLs, restarts, all outputs read."""
    rng = random.Random(4242)
    accounts, requests = workload(rng)
    ids = {r["id"] for r in requests}
    assert len(ids) == N_REQUESTS
    root = tmp_path_factory.mktemp("crash")
    env = CfEnv(root, SAMPLE_TEXT, accounts)
    try:
        env.prepare()
        yield run_with_kills(env, rng, root, accounts, requests, ids)
    finally:
        env.close()


def run_with_kills(env: CfEnv, rng, root, accounts, requests, ids) -> dict:
    args = ("--commit-s", "0.5")
    engine = env.start_engine(*args)
    decisions, charges = env.reader("decisions"), env.reader("charges")
    rejects = env.reader("rejects")

    t0 = time.monotonic()
    env.kafka.send(requests)
    env.kafka.flush()
    produced_s = time.monotonic() - t0

    points = sorted(rng.uniform(0.05, 0.85) * N_REQUESTS for _ in range(N_KILLS))
    kills, early_kills, log = 0, 0, []
    done = last = 0  # distinct ids decided (the probe's included: a negligible offset)
    for point in points:
        deadline = time.monotonic() + 60
        # past the progress point, and past the last kill: the restarted engine works
        while (done < point or done <= last) and time.monotonic() < deadline:
            if engine.proc.poll() is not None:
                raise AssertionError(f"engine died by itself:\n{engine.log_tail()}")
            decisions.poll(0.05)
            done = len(decisions.by_id)
        assert done >= point and done > last, f"no progress past {done} decisions"
        time.sleep(rng.uniform(0, 0.2))  # a random moment within the batch being worked
        engine.kill()
        kills += 1
        last = done
        log.append((round(time.monotonic() - t0, 2), done))
        engine = env.spawn_engine(*args)
        if not early_kills and kills == N_KILLS // 2:
            time.sleep(rng.uniform(0.3, 1.5))  # killed again while restarting/recovering
            engine.kill()
            early_kills += 1
            log.append((round(time.monotonic() - t0, 2), "during restart"))
            engine = env.spawn_engine(*args)
    wait_for(lambda: ids <= decisions.by_id.keys(), 120, "a decision for every request",
             [decisions], engine)
    elapsed = time.monotonic() - t0
    drain([decisions, charges, rejects])
    copies = sum(len(v) for i, v in decisions.by_id.items() if i in ids)
    print(f"\n[crash] {N_REQUESTS} requests produced in {produced_s:.2f} s, all decided in "
          f"{elapsed:.1f} s ({N_REQUESTS / elapsed:,.0f} req/s including restarts) with "
          f"{kills} SIGKILLs under load + {early_kills} during a restart at (s, decided) "
          f"{log}; {copies - N_REQUESTS} duplicate decisions")
    model = Model(env.catalog, accounts)
    expected = [model.apply(r) for r in requests]
    return {"env": env, "accounts": accounts, "requests": requests, "expected": expected,
            "model": model, "decisions": decisions, "charges": charges, "kills": kills,
            "rejects": rejects,
            "engine": engine}


def test_every_request_decided_and_applied_exactly_once(crash_run):
    env, model = crash_run["env"], crash_run["model"]
    assert crash_run["kills"] >= 5
    decisions, charges = crash_run["decisions"], crash_run["charges"]
    results: dict[str, int] = {}
    for r, exp in zip(crash_run["requests"], crash_run["expected"]):
        ds = decisions.by_id[r["id"]]
        first = strip_latency(ds[0])
        assert all(strip_latency(d) == first for d in ds[1:]), ds
        check_decision(ds[0], r, exp)  # the model's decision, in per-account input order
        results[exp.result] = results.get(exp.result, 0) + 1
        cs = charges.by_id.get(r["id"], [])
        if exp.charge is None:
            assert cs == [], (r, cs)
        elif cs:  # (whether every charge is there: the next test)
            assert all(c == cs[0] for c in cs)
            check_charge(cs[0], r, exp, env.catalog)
    print(f"[crash] results {results}")
    assert crash_run["rejects"].docs == []  # restarts never turn into bogus rejects
    assert results.get("CREDIT_LIMIT_REACHED", 0) > 0  # order mattered for the dry accounts

    for a in crash_run["accounts"]:
        acct = a["id"]
        view = env.store.view(acct)
        assert Fraction(view.balance, 1_000_000) == model.balance(acct), acct
        ledger = env.store.ledger(acct)
        assert sum(e["delta"] for e in ledger) == view.balance, acct
        entry_ids = [e["id"] for e in ledger]
        assert len(entry_ids) == len(set(entry_ids)), acct  # each request applied once
        assert view.reserved == 0 and view.sessions == {}, acct


def test_every_charge_survives_the_kills(crash_run):
    charges = crash_run["charges"]
    missing = [r["id"] for r, exp in zip(crash_run["requests"], crash_run["expected"])
               if exp.charge is not None and r["id"] not in charges.by_id]
    total = sum(1 for exp in crash_run["expected"] if exp.charge is not None)
    print(f"[crash] charges missing after the kills: {len(missing)} of {total}")
    assert missing == []
