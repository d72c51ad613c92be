"""A repeated request id returns the same decision again and changes nothing (CONTRACT §3.1),
whether it is repeated in the same batch, in a later batch of the same Charger, or by a
restarted caller (a brand-new store and Charger). Top-ups with an id apply once.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from balances.charger import Charger
from balances.topups import Topup
from charging.records import Decision
from tests.conftest import Rig, req

ACCOUNTS = ("[{id: a, plan: PREPAID_S, balance: '10.00'}, "
            "{id: poor, plan: PREPAID_S, balance: '0.05'}, "
            "{id: blk, plan: PREPAID_S, balance: '5.00', status: blocked}]")
ALL = ("a", "poor", "blk", "ghost")


def _initial(r: Rig) -> None:
    r.one(req(id="s:0", kind="initial", account="a", service="voice", session="s"))


#: op kind -> (set-up run before, the request to replay, its expected result)
CASES: dict[str, tuple[Callable[[Rig], None] | None, dict, str]] = {
    "event": (None, req(id="op", kind="event", account="a", service="sms", used=2),
              "SUCCESS"),
    "event_refused": (None, req(id="op", kind="event", account="poor", service="sms",
                                used=1), "CREDIT_LIMIT_REACHED"),
    "initial": (None, req(id="op", kind="initial", account="a", service="voice",
                          session="n"), "SUCCESS"),
    "initial_refused": (None, req(id="op", kind="initial", account="poor", service="voice",
                                  session="p"), "CREDIT_LIMIT_REACHED"),
    "update": (_initial, req(id="op", kind="update", account="a", service="voice",
                             session="s", used=61), "SUCCESS"),
    "terminate": (_initial, req(id="op", kind="terminate", account="a", service="voice",
                                session="s", used=90), "SUCCESS"),
    "unknown_session": (None, req(id="op", kind="update", account="a", service="voice",
                                  session="nope", used=61), "SESSION_UNKNOWN"),
    "user_unknown": (None, req(id="op", kind="event", account="ghost", service="sms",
                               used=1), "USER_UNKNOWN"),
    "denied": (None, req(id="op", kind="event", account="blk", service="sms", used=1),
               "END_USER_SERVICE_DENIED"),
}


def snapshot(r: Rig, versions: bool = True) -> dict:
    """Everything a request can change, without stream entry ids and write times (and,
    to compare two rigs, without the account versions: they come from the server's clock)."""
    out = {}
    for a in ALL:
        ledger = [{k: v for k, v in e.items() if k not in ("entry", "time", "time_ms")}
                  for e in r.store.ledger(a)]
        idem = sorted(k.decode().rpartition(":idem:")[2]
                      for k in r.client.scan_iter(match=r.store.keys.idem(a, "*")))
        raw = r.raw(a) if versions else {k: v for k, v in r.raw(a).items() if k != b"ver"}
        out[a] = (raw, ledger, r.expiry_members(a), idem)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_replay_in_the_same_batch(rig, case):
    setup, op, result = CASES[case]
    once, twice = rig(accounts=ACCOUNTS, sub="once"), rig(accounts=ACCOUNTS, sub="twice")
    for r in (once, twice):
        if setup:
            setup(r)
    (single,) = once.charge(op)
    first, again = twice.charge(op, dict(op, used=op.get("used", 0) + 7))
    assert single.decision.result == result
    assert first.decision == single.decision == again.decision
    assert again.replay and again.charge == first.charge and again.ledger == []
    assert snapshot(twice, versions=False) == snapshot(once, versions=False)


@pytest.mark.parametrize("when", ["later_batch", "restarted_caller"])
@pytest.mark.parametrize("case", list(CASES))
def test_replay_later_returns_the_first_decision_and_changes_nothing(rig, case, when):
    setup, op, result = CASES[case]
    r = rig(accounts=ACCOUNTS)
    if setup:
        setup(r)
    first = r.one(op)
    assert first.decision.result == result and not first.replay
    # the account moves on in between (a later request, a later clock)
    r.clock.advance(5_000)
    r.one(req(id="later", kind="event", account="a", service="sms", used=1))
    before = snapshot(r)
    charger: Charger = r.charger if when == "later_batch" else r.fresh_charger()
    for variant in (op, dict(op, used=op.get("used", 0) + 1000, requested=5)):
        (again,) = r.charge(variant, charger=charger)
        assert again.decision == first.decision
        assert again.replay and again.charge == first.charge
        assert snapshot(r) == before
    # a replay next to new requests: only the new ones take effect
    outs = r.charge(req(id="new", kind="event", account="a", service="sms", used=1), op,
                    charger=charger)
    assert outs[1].decision == first.decision and outs[1].replay
    assert outs[0].decision.result == "SUCCESS" and not outs[0].replay
    assert r.ledger_sum("a") == r.store.view("a").balance


def test_a_whole_session_replayed_after_it_ended(rig):
    r = rig(accounts=ACCOUNTS)
    steps = [req(id="s:0", kind="initial", account="a", service="voice", session="s"),
             req(id="s:1", kind="update", account="a", service="voice", session="s", seq=1,
                 used=100),
             req(id="s:2", kind="update", account="a", service="voice", session="s", seq=2,
                 used=100),
             req(id="s:3", kind="terminate", account="a", service="voice", session="s",
                 seq=3, used=10)]
    firsts = [r.one(s).decision for s in steps]
    before = snapshot(r)
    for charger in (r.charger, r.fresh_charger()):
        again = r.charge(*steps, charger=charger)
        assert [o.decision for o in again] == firsts
        assert all(o.replay for o in again)
        assert snapshot(r) == before
    # the session did not come back to life
    assert r.store.view("a").sessions == {}


def test_decisions_are_kept_with_their_account(rig):
    r = rig(accounts=ACCOUNTS)
    first = r.one(CASES["event"][1])
    assert r.store.record("a", "op") is not None
    assert r.client.ttl(r.store.keys.account("a")) == -1  # kept until a write trims it
    assert not r.client.exists(r.store.keys.idem("a", "op"))
    assert r.fresh_charger().charge([first.request])[0].replay


def test_topup_with_id_applies_once_across_store_objects(rig):
    r = rig(accounts=ACCOUNTS)
    assert r.store.topup("a", 2_000_000, topup_id="pay-1") == Topup("ok", 12_000_000)
    r.one(req(id="e", kind="event", account="a", service="sms", used=1))
    again = r.fresh_charger().store.topup("a", 2_000_000, topup_id="pay-1")
    assert again == Topup("replay", 12_000_000, id_amount=2_000_000)  # the balance it left
    acct = r.store.view("a")
    assert acct.balance == 12_000_000 - 90_000
    assert [e["id"] for e in r.store.ledger("a")] == ["open", "pay-1", "e"]
    # the same id on another account is another top-up
    assert r.store.topup("poor", 1_000_000, topup_id="pay-1") == Topup("ok", 1_050_000)


def test_topup_ids_do_not_collide_with_request_ids(rig):
    r = rig(accounts=ACCOUNTS)
    r.one(req(id="topup:pay-9", kind="event", account="a", service="sms", used=1))
    assert r.store.topup("a", 1_000_000, topup_id="pay-9") == Topup("ok", 10_910_000)


def test_request_ids_do_not_collide_with_topup_ids(rig):
    r = rig(accounts=ACCOUNTS)
    r.store.topup("a", 1_000_000, topup_id="pay-9")
    (out,) = r.charge(req(id="topup:pay-9", kind="event", account="a", service="sms",
                          used=1), charger=r.fresh_charger())
    assert isinstance(out.decision, Decision) and out.decision.result == "SUCCESS"
    assert r.store.view("a").balance == 10_910_000
