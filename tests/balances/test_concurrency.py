"""Several OS processes, each with its own Charger, charge the same few accounts at once
while another process tops them up. Writers conflict (version check) and retry; afterwards
every account's books must add up exactly, whatever the interleaving.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import time

import orjson
import pytest

from tests.balances.workload import (
    Plan,
    Result,
    TopupPlan,
    charge_worker,
    shared_event,
    topup_worker,
)
from tests.conftest import REDIS_URL, micros

ACCOUNTS = {  # id -> (balance, allow_negative)
    "c0": ("3.00", False), "c1": ("3.00", False), "c2": ("1.50", False),
    "c3": ("0.80", False), "c4": ("6.00", False), "c5": ("2.00", False),
    "n0": ("0.50", True), "n1": ("0", True),
}
WORKERS = 3
BATCHES = 40
SHARED = 12  # "dup-<k>" events every worker sends


def accounts_file() -> str:
    return "\n".join(orjson.dumps({"id": a, "plan": "PREPAID_S", "balance": b,
                                   "allow_negative": neg}).decode()
                     for a, (b, neg) in ACCOUNTS.items())


@pytest.fixture
def processes():
    ctx = multiprocessing.get_context("spawn")
    started: list = []
    yield ctx, started
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(timeout=10)


def test_concurrent_chargers_and_topups_keep_every_account_exact(rig, processes):
    r = rig(accounts=accounts_file())
    names = list(ACCOUNTS)
    ctx, started = processes
    barrier = ctx.Barrier(WORKERS + 1)
    results_q = ctx.Queue()
    for w in range(WORKERS):
        plan = Plan(worker=f"w{w}", redis_url=REDIS_URL, prefix=r.prefix, accounts=names,
                    batches=BATCHES, seed=100 + w, shared_ids=SHARED)
        started.append(ctx.Process(target=charge_worker, args=(plan, barrier, results_q)))
    started.append(ctx.Process(target=topup_worker, args=(
        TopupPlan(REDIS_URL, r.prefix, names, count=60), barrier, results_q)))
    for p in started:
        p.start()

    results: list[Result] = []
    topups: dict[str, tuple[str, int]] = {}
    deadline = time.monotonic() + 150
    for _ in range(WORKERS + 1):
        try:
            item = results_q.get(timeout=max(1.0, deadline - time.monotonic()))
        except queue_mod.Empty:
            pytest.fail("workers did not finish in time")
        if isinstance(item, tuple):
            _, topups, error = item
            assert error is None, error
        else:
            assert item.error is None, f"{item.worker} failed:\n{item.error}"
            results.append(item)
    for p in started:
        p.join(timeout=30)

    # every request id got one decision, the same for every worker that sent it
    decisions: dict[str, dict] = {}
    requests: dict[str, dict] = {}
    for res in results:
        for rid, d in res.decisions.items():
            if rid in decisions:
                assert d == decisions[rid], f"{rid} answered differently to two callers"
            decisions[rid] = d
            requests[rid] = res.requests[rid]
    assert all(f"dup-{k}" in decisions for k in range(SHARED))
    for k in range(SHARED):  # the duplicated events: one decision, charged once
        assert requests[f"dup-{k}"] == shared_event(k, names)

    by_result: dict[str, int] = {}
    for d in decisions.values():
        by_result[d["result"]] = by_result.get(d["result"], 0) + 1
    assert by_result.get("SUCCESS", 0) > 50, by_result
    assert by_result.get("CREDIT_LIMIT_REACHED", 0) > 0, by_result  # money ran out somewhere
    assert len(topups) > 10

    open_sessions: dict[str, str] = {}
    for res in results:
        open_sessions.update(res.open_sessions)

    interleavings = 0
    for name in names:
        acct = r.store.view(name)
        charged = {rid: micros(d["charged"]) for rid, d in decisions.items()
                   if d["account"] == name}
        topped = {tid: amount for tid, (a, amount) in topups.items() if a == name}
        expected = r.initial[name] + sum(topped.values()) - sum(charged.values())
        assert acct.balance == expected, name

        ledger = r.store.ledger(name)
        assert sum(e["delta"] for e in ledger) == acct.balance, name
        money = [(e["id"], e["delta"]) for e in ledger[1:]]
        assert sorted(money) == sorted(
            [(rid, -c) for rid, c in charged.items() if c] + list(topped.items())), name
        writers = [e["id"].split("-")[0].split(":")[0] for e in ledger[1:]]
        interleavings += sum(1 for x, y in zip(writers, writers[1:], strict=False) if x != y)

        if not acct.allow_negative:
            assert acct.balance >= 0 and acct.balance - acct.reserved >= 0, name
        assert acct.reserved == sum(s.money_reserved for s in acct.sessions.values()), name
        for service, buckets in acct.allowances.items():
            held = sum(s.allowance_reserved[0] for s in acct.sessions.values()
                       if s.service == service and s.allowance_reserved)
            assert buckets[0].reserved == held, (name, service)
        assert set(acct.sessions) == {s for s, a in open_sessions.items() if a == name}, name
        assert set(r.expiry_members(name)) == {f"{name}\x1f{s}" for s in acct.sessions}
    # the writers really ran at the same time on the same accounts
    assert interleavings > 0
