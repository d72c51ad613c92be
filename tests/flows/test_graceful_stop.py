"""SIGTERM while the engine works through a backlog (issue 4, Operations: graceful shutdown,
"finish the batch, flush producers"). The engine exits 0 having decided every request it read
and put those decisions on the broker: on one partition, the decided requests are a prefix of
the requests, with no hole, and it commits that position for its group. A restart decides
the rest and nothing it decided before (the position was committed at the stop), and every
balance is as if each request had been applied once."""

from __future__ import annotations

import signal
from fractions import Fraction

from tests.flows.conftest import accounts_of, drain, wait_for
from tests.flows.oracle import Model, check_decision, event, strip_latency

TUE = "2026-11-24T10:00:00+01:00"
N = 30_000


def test_sigterm_mid_backlog_finishes_what_it_read_and_a_restart_the_rest(cf_env):
    accounts = accounts_of(300, "1000.00")
    env = cf_env(accounts)
    args = ("--commit-s", "0.5")
    engine = env.start_engine(*args)  # one worker: one partition, read in order
    decisions = env.reader("decisions")
    requests = [event(f"t{i}", accounts[i % len(accounts)]["id"], "voice" if i % 3 else "sms",
                      1 + i % 90, TUE, destination="4917612345") for i in range(N)]
    env.kafka.send(requests)
    env.kafka.flush()
    wait_for(lambda: sum(r["id"] in decisions.by_id for r in requests[:3000]) == 3000, 120,
             "3,000 decisions", [decisions], engine)
    engine.proc.send_signal(signal.SIGTERM)
    assert engine.proc.wait(timeout=60) == 0, engine.log_tail()
    drain([decisions])
    decided = [r["id"] for r in requests if r["id"] in decisions.by_id]
    assert 3000 <= len(decided) < N, len(decided)  # it stopped inside the backlog
    assert decided == [r["id"] for r in requests[:len(decided)]]  # what it read, all decided
    first = {rid: decisions.by_id[rid][0] for rid in decided}

    restarted = env.start_engine(*args)
    wait_for(lambda: all(r["id"] in decisions.by_id for r in requests), 180,
             "a decision for every request", [decisions], restarted)
    drain([decisions])
    model = Model(env.catalog, accounts)
    for r in requests:
        copies = decisions.by_id[r["id"]]
        assert all(strip_latency(c) == strip_latency(copies[0]) for c in copies), copies
        if r["id"] in first:
            assert len(copies) == 1, copies  # not read again after the graceful stop
        check_decision(copies[0], r, model.apply(r))
    for a in accounts:
        view = env.store.view(a["id"])
        assert Fraction(view.balance, 1_000_000) == model.balance(a["id"]), a["id"]
        assert env.ledger_sum(a["id"]) == view.balance
