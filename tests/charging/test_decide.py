"""The charging rules of CONTRACT §3 and §4.2, on in-memory state (``charging.decide``).

Expected amounts are worked out by hand (the arithmetic is in the comments) or with the
Fraction reference rater (``charging.reference``); never by calling ``decide`` again.

Hand rules used below, sample catalog, voice rate ``mobile_peak`` (a DE_MOBILE number on a
weekday 08-20 Berlin): rating(0) = 0; rating(u) = 0.05 + 0.10 = 0.15 for 1 ≤ u ≤ 60;
rating(u) = 0.15 + (u − 60) · 0.0015 above, capped at 5.00 (from u = 3294 on).
Rate ``other`` (any other number): 0.20 per started minute. ``data``: 0.01 per MiB in
1024-byte increments, rounded up to 4 decimals. ``sms``: 0.09 each.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from charging import reference
from charging.decide import BALANCE_LIMIT, FixedCatalogs, release_silent
from charging.records import Decision, Result, Stored, format_balance
from charging.state import Account, Bucket, Session

from .decide_helpers import (
    COMPILED,
    LANDLINE,
    MOBILE,
    NO_CATCH_ALL_TEXT,
    NOSMS_TEXT,
    NOW,
    SAMPLE,
    SAMPLE_TEXT,
    SAT_10,
    TUE_10,
    VERSION,
    GiB,
    MiB,
    account,
    amount,
    check_held,
    data_bucket,
    decide,
    eur,
    load,
    ms,
    one,
    ref_cost,
    ref_step,
    ref_units,
    req,
    snapshot,
    tariff_rate,
)

VOICE_T, PEAK = tariff_rate("voice", TUE_10, MOBILE)
_, OTHER = tariff_rate("voice", TUE_10, LANDLINE)
DATA_T, DATA_R = tariff_rate("data", TUE_10, None)


def test_hand_rules_match_the_reference():
    """The hand arithmetic of the module docstring, checked once against the reference."""
    assert PEAK.id == "mobile_peak" and OTHER.id == "other" and DATA_R.id == "data"
    assert ref_cost("voice", 30) == eur("0.15")
    assert ref_cost("voice", 61) == eur("0.1515")
    assert ref_cost("voice", 300) == eur("0.51")  # 0.15 + 240 · 0.0015
    assert ref_cost("voice", 3293) == eur("4.9995")
    assert ref_cost("voice", 3294) == eur("5.00")  # 5.001 capped
    assert ref_cost("voice", 61, SAT_10) == eur("0.122")
    assert ref_cost("voice", 61, TUE_10, LANDLINE) == eur("0.40")
    assert ref_cost("data", 10 * MiB, TUE_10, None) == eur("0.10")
    assert ref_cost("sms", 1, TUE_10, None) == eur("0.09")


# -- §4.2 checks first -------------------------------------------------------------------------

KINDS = ("event", "initial", "update", "terminate")


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_account_is_user_unknown_and_changes_nothing(kind):
    other = account("1.00", aid="b")
    before = snapshot(other)
    outcomes, changes = decide([req("x1", kind, account="ghost", used=30)],
                               {"ghost": None, "b": other})
    out = outcomes[0]
    assert out.decision.result == "USER_UNKNOWN"
    assert out.decision.granted == 0
    assert out.record()["decision"]["balance"] is None
    assert out.decision.charged == 0
    assert out.charge is None and out.ledger == [] and not out.replay
    assert not changes["ghost"].changed
    assert not changes["ghost"].sessions_written and not changes["ghost"].sessions_removed
    assert other == before and "b" not in changes


def test_account_missing_from_the_map_is_user_unknown():
    outcomes, _ = decide([req("x1", "event", account="nobody", used=30)], {})
    assert outcomes[0].decision.result == "USER_UNKNOWN"


def _open_session(acct: Account, sid: str = "s", **fields) -> Session:
    """Open a session through decide (mobile_peak, default quota 300 → 0.51 held)."""
    out = one(req(f"{sid}:0", "initial", session=sid, **fields), acct)
    assert out.decision.result == "SUCCESS", out.decision
    return acct.sessions[sid]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("service", ["voice", "data"])
def test_blocked_account_is_denied_before_anything_else(kind, service):
    acct = account("10.00")
    _open_session(acct)  # an open session "s", 0.51 held
    acct.status = "blocked"
    before = snapshot(acct)
    out = one(req("s:1", kind, service=service, session="s", seq=1, used=30, requested=60),
              acct)
    assert out.decision.result == "END_USER_SERVICE_DENIED"
    assert out.decision.granted == 0 and out.decision.validity_s == 0
    assert out.record()["decision"]["balance"] == "10.00" and out.decision.charged == 0
    assert out.charge is None and out.ledger == []
    # nothing changes: the open session is neither charged, released nor restarted, no
    # allowance bucket is created for data
    assert acct == before
    assert acct.sessions["s"].money_reserved == eur("0.51")


def test_blocked_account_initial_gets_no_session():
    acct = account("10.00", status="blocked")
    out = one(req("s:0", "initial"), acct)
    assert out.decision.result == "END_USER_SERVICE_DENIED"
    assert acct.sessions == {} and acct.reserved == 0 and acct.allowances == {}


def test_blocked_account_without_money_is_denied_not_credit_limited():
    acct = account("0.00", status="blocked")
    assert one(req("e", "event", used=30), acct).decision.result == "END_USER_SERVICE_DENIED"


@pytest.mark.parametrize("kind", KINDS)
def test_service_outside_the_plan_is_denied(kind):
    cat, _, catalogs = load(NOSMS_TEXT)
    assert "sms" not in cat.plans["NOSMS"].tariffs
    acct = account("10.00", plan="NOSMS")
    before = snapshot(acct)
    out = one(req("m1", kind, service="sms", destination=None, used=1), acct,
              catalogs=catalogs)
    assert out.decision.result == "END_USER_SERVICE_DENIED"
    assert out.decision.granted == 0
    assert out.record()["decision"]["balance"] == "10.00"
    assert out.charge is None and out.ledger == []
    assert acct == before


def test_service_unknown_to_the_catalog_is_denied():
    acct = account("10.00")
    before = snapshot(acct)
    out = one(req("m1", "event", service="mms", used=1), acct)
    assert out.decision.result == "END_USER_SERVICE_DENIED"
    assert acct == before


def test_service_denied_for_one_plan_not_another_in_the_same_batch():
    _, _, catalogs = load(NOSMS_TEXT)
    a = account("1.00", aid="a", plan="NOSMS")
    b = account("1.00", aid="b")
    outcomes, _ = decide([req("1", "event", account="a", service="sms", used=1),
                          req("2", "event", account="b", service="sms", used=1)],
                         {"a": a, "b": b}, catalogs=catalogs)
    assert [o.decision.result for o in outcomes] == ["END_USER_SERVICE_DENIED", "SUCCESS"]
    assert a.balance == eur("1.00") and b.balance == eur("0.91")


# -- initial ----------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [{}, {"requested": 0}], ids=["absent", "zero"])
def test_initial_full_grant_is_the_tariff_quota(extra):
    acct = account("10.00")
    outcomes, changes = decide([req("s:0", "initial", **extra)], {"a": acct})
    d = outcomes[0].record()["decision"]
    assert d == {
        "id": "s:0", "kind": "initial", "account": "a", "service": "voice", "session": "s",
        "seq": 0, "result": "SUCCESS", "granted": 300, "validity_s": 600, "final": False,
        "balance": "10.00", "charged": d["charged"],
    }
    assert amount(d["charged"]) == 0
    assert outcomes[0].charge is None and outcomes[0].ledger == []
    s = acct.sessions["s"]
    assert (s.service, s.tariff, s.rate_id, s.catalog_version) == (
        "voice", "VOICE_STD", "mobile_peak", VERSION)
    assert (s.chargeable, s.used, s.granted, s.seq, s.validity_s) == (0, 0, 300, 0, 600)
    assert s.last_seen_ms == NOW
    assert s.money_reserved == eur("0.51") == ref_cost("voice", 300)
    assert acct.reserved == eur("0.51") and acct.balance == eur("10.00")
    assert changes["a"].sessions_written == {"s"} and changes["a"].changed
    check_held(acct)


def test_initial_honours_requested():
    acct = account("10.00")
    out = one(req("s:0", "initial", requested=90), acct)
    assert out.decision.result == "SUCCESS"
    assert out.decision.granted == 90 and out.decision.final is False
    # 0.15 + 30 · 0.0015 = 0.195
    assert acct.sessions["s"].money_reserved == eur("0.195") == ref_cost("voice", 90)
    assert acct.reserved == eur("0.195")


def test_initial_rate_is_selected_by_its_ts_and_destination():
    acct = account("10.00")
    decide([req("s1:0", "initial", session="s1", ts=SAT_10),
            req("s2:0", "initial", session="s2", destination=LANDLINE)], {"a": acct})
    assert acct.sessions["s1"].rate_id == "mobile"
    assert acct.sessions["s1"].money_reserved == eur("0.60")  # 300 · 0.12 / 60
    assert acct.sessions["s2"].rate_id == "other"
    assert acct.sessions["s2"].money_reserved == eur("1.00")  # 5 minutes · 0.20
    check_held(acct)


@pytest.mark.parametrize("balance, rate, expected_g, expected_money", [
    # mobile_peak: 0.15 + (g − 60) · 0.0015 ≤ 0.20  ⇔  g ≤ 93 (0.1995); g = 94 costs 0.201
    ("0.20", "mobile_peak", 93, "0.1995"),
    # other: 0.20 per started minute; 0.50 buys two whole minutes
    ("0.50", "other", 120, "0.40"),
    # mobile_peak: the connect fee and first minute alone fit exactly
    ("0.15", "mobile_peak", 60, "0.15"),
])
def test_initial_partial_grant_is_the_largest_affordable(balance, rate, expected_g,
                                                           expected_money):
    destination = MOBILE if rate == "mobile_peak" else LANDLINE
    _, r = tariff_rate("voice", TUE_10, destination)
    assert r.id == rate
    available = Fraction(Decimal(balance))
    g, money = reference.max_grant(VOICE_T, r, 0, 0, 300, available)
    assert (g, money) == (expected_g, Fraction(Decimal(expected_money)))
    assert reference.grant_money(VOICE_T, r, 0, 0, g + 1) > available  # g + 1 unaffordable

    acct = account(balance)
    out = one(req("s:0", "initial", destination=destination), acct)
    d = out.record()["decision"]
    assert (d["result"], d["granted"], d["final"], d["validity_s"]) == (
        "SUCCESS", expected_g, True, 600)
    assert acct.sessions["s"].money_reserved == eur(expected_money)
    assert acct.reserved == eur(expected_money)
    assert acct.balance == eur(balance)
    check_held(acct)


def test_initial_final_when_requested_is_exactly_affordable_is_false():
    acct = account("0.15")
    out = one(req("s:0", "initial", requested=60), acct)
    assert (out.decision.granted, out.decision.final) == (60, False)


def test_initial_credit_limit_leaves_no_session():
    acct = account("0.10")  # below 0.15, the price of the first second
    out, = decide([req("s:0", "initial")], {"a": acct})[0]
    d = out.record()["decision"]
    assert d["result"] == "CREDIT_LIMIT_REACHED"
    assert d["granted"] == 0 and d["validity_s"] == 0
    assert d["balance"] == "0.10" and amount(d["charged"]) == 0
    assert out.charge is None and out.ledger == []
    assert acct.sessions == {} and acct.reserved == 0 and acct.balance == eur("0.10")


def test_initial_rating_failed_when_no_rate_matches():
    cat, _, catalogs = load(NO_CATCH_ALL_TEXT)
    assert [r.id for r in cat.tariffs["VOICE_STD"].rates] == ["mobile_peak", "mobile"]
    acct = account("10.00")
    outcomes, _ = decide([req("s:0", "initial", destination=LANDLINE),
                          req("e1", "event", destination=LANDLINE, used=30),
                          req("e2", "event", destination=None, used=30),
                          req("t:0", "initial", session="t")],  # a mobile number still rates
                         {"a": acct}, catalogs=catalogs)
    assert [o.decision.result for o in outcomes] == [
        "RATING_FAILED", "RATING_FAILED", "RATING_FAILED", "SUCCESS"]
    assert all(o.decision.granted == 0 for o in outcomes[:3])
    assert all(o.charge is None and o.ledger == [] for o in outcomes[:3])
    assert set(acct.sessions) == {"t"}
    assert acct.balance == eur("10.00") and acct.reserved == eur("0.51")
    # CONTRACT §4.1: the decision says why; nothing charged, in the tariff's decimals
    assert [o.decision.detail for o in outcomes] == [
        f"no rate of tariff 'VOICE_STD' matches destination {LANDLINE!r} at ts {ms(TUE_10)}",
        f"no rate of tariff 'VOICE_STD' matches destination {LANDLINE!r} at ts {ms(TUE_10)}",
        f"no rate of tariff 'VOICE_STD' matches destination None at ts {ms(TUE_10)}", None]
    # VOICE_STD: 4 decimals
    assert [o.record()["decision"]["charged"] for o in outcomes[:3]] == ["0.0000"] * 3


# a price so high that 10,000 SMS cost 10**13 > 9·10**12, the largest cost the engine holds
HUGE_TEXT = SAMPLE_TEXT.replace('price: "0.09", per: 1,', 'price: "1000000000", per: 1,')
# data at 10,000,000.00 a MiB (no cap): a session opens on the month's free GiB, but the
# largest report (2**40 bytes) would cost ~1.05·10**13 beyond it
STEEP_TEXT = SAMPLE_TEXT.replace('price: "0.01", per: 1048576,',
                                 'price: "10000000", per: 1048576,')


def test_rating_beyond_the_engine_range_fails_with_a_detail_and_replays_alike():
    assert HUGE_TEXT != SAMPLE_TEXT and STEEP_TEXT != SAMPLE_TEXT
    _, _, catalogs = load(HUGE_TEXT)
    acct = account("10.00")
    out = one(req("e1", "event", service="sms", destination=None, used=10_000), acct,
              catalogs=catalogs)
    d = out.record()["decision"]
    assert (d["result"], d["charged"], d["balance"]) == ("RATING_FAILED", "0.0000", "10.00")
    assert d["detail"] == ("the cost of 10000 units exceeds 9,000,000,000,000, the largest "
                           "the engine represents")
    assert out.charge is None and out.ledger == [] and acct.balance == eur("10.00")
    again = one(req("e1", "event", service="sms", destination=None, used=10_000), acct,
                catalogs=catalogs, previous={("a", "e1"): out.stored()})
    assert again.replay and again.decision == out.decision and again.record()["decision"] == d

    # a session step beyond the range: RATING_FAILED saying so, and the session is ended
    _, _, catalogs = load(STEEP_TEXT)
    rich = account("10000000.00")
    opened = one(req("s:0", "initial", service="data", destination=None), rich,
                 catalogs=catalogs)
    assert opened.decision.result == "SUCCESS", opened.decision
    step = one(req("s:1", "update", service="data", destination=None, used=2**40), rich,
               catalogs=catalogs)
    assert (step.decision.result, step.record()["decision"]["charged"]) == (
        "RATING_FAILED", "0.0000")
    assert step.decision.detail == (
        "the session's cost for its 0 units so far and 1099511627776 more exceeds "
        "9,000,000,000,000, the largest the engine represents; the session is ended")
    assert rich.sessions == {} and rich.reserved == 0


# -- update / terminate -----------------------------------------------------------------------

def test_update_commits_the_step_and_regrants():
    acct = account("10.00")
    _open_session(acct)
    out = one(req("s:1", "update", used=30), acct, now=NOW + 5000)
    d = out.record()["decision"]
    # rating(30) − rating(0) = 0.15; new grant 300 from C = 30: rating(330) − rating(30)
    # = (0.15 + 270 · 0.0015) − 0.15 = 0.405
    assert (d["result"], d["granted"], d["validity_s"], d["final"]) == ("SUCCESS", 300, 600, False)
    assert d["balance"] == "9.85" and amount(d["charged"]) == eur("0.15")
    c = out.record()["charge"]
    assert c["units"] == 30 and c["rated_units"] == 60 and c["allowance_units"] == 0
    assert amount(c["cost"]) == eur("0.15") and amount(c["uncharged"]) == 0
    assert (c["tariff"], c["rate"], c["catalog_version"], c["currency"]) == (
        "VOICE_STD", "mobile_peak", VERSION, "EUR")
    assert c["balance"] == "9.85" and c["session"] == "s" and c["seq"] == 1
    assert out.ledger == [{"id": "s:1", "delta": -eur("0.15"), "balance": eur("9.85"),
                           "reason": "update", "catalog_version": VERSION}]
    s = acct.sessions["s"]
    assert (s.chargeable, s.used, s.granted, s.seq, s.last_seen_ms) == (30, 30, 300, 1,
                                                                          NOW + 5000)
    assert s.money_reserved == eur("0.405") == ref_step(VOICE_T, PEAK, 30, 330)
    assert acct.reserved == eur("0.405") and acct.balance == eur("9.85")
    check_held(acct)


def test_update_keeps_the_rate_selected_at_initial():
    acct = account("10.00")
    _open_session(acct)  # Tuesday peak: mobile_peak
    out = one(req("s:1", "update", ts=SAT_10, used=61), acct)  # Saturday would be `mobile`
    assert out.charge.rate == "mobile_peak"
    assert out.charge.cost == eur("0.1515")  # not 0.122


def test_update_requested_and_rated_units_across_the_first_minute():
    acct = account("10.00")
    _open_session(acct, requested=10)
    o1 = one(req("s:1", "update", used=10, requested=10), acct)
    o2 = one(req("s:2", "update", seq=2, used=55, requested=7), acct)
    # 10 s: the whole first minute (60 rated units) and the connect fee: 0.15
    assert (o1.charge.cost, o1.charge.rated_units) == (eur("0.15"), 60)
    # 10 → 65 s: the first minute is paid; 5 more seconds at 0.0015 = 0.0075, 5 rated units
    assert (o2.charge.cost, o2.charge.rated_units) == (eur("0.0075"), 5)
    assert o2.decision.granted == 7
    assert acct.sessions["s"].money_reserved == eur("0.0105")  # 7 · 0.0015


CHUNKS = [
    [30, 31, 100, 39],  # 200 s in all: 0.15 + 140 · 0.0015 = 0.36
    [1, 59, 1],  # exactly around the first-minute boundary
    [0, 0, 61, 0],
    [3000, 2000, 10],  # crosses the 5.00 cap
    [100_000],  # a single terminate
    [60, 3233, 1, 1],  # 3293 = 4.9995, then the cap: 0.0005, then 0
]


@pytest.mark.parametrize("chunks", CHUNKS, ids=[str(c) for c in CHUNKS])
@pytest.mark.parametrize("batched", [False, True], ids=["batch-per-step", "one-batch"])
def test_session_charges_sum_to_the_one_shot_rating(chunks, batched):
    acct = account("100.00")
    steps = [req("s:0", "initial")]
    for k, used in enumerate(chunks[:-1], start=1):
        steps.append(req(f"s:{k}", "update", seq=k, used=used))
    steps.append(req(f"s:{len(chunks)}", "terminate", seq=len(chunks), used=chunks[-1]))
    if batched:
        outcomes, _ = decide(steps, {"a": acct})
    else:
        outcomes = []
        for k, step in enumerate(steps):
            outcomes.append(one(step, acct, now=NOW + k * 1000))
            check_held(acct)
    assert all(o.decision.result == "SUCCESS" for o in outcomes), outcomes
    total = sum(chunks)
    expected = ref_cost("voice", total)
    costs = [o.charge.cost if o.charge else 0 for o in outcomes]
    assert sum(costs) == expected
    assert all(o.charge.uncharged == 0 for o in outcomes if o.charge)
    assert sum(o.decision.charged for o in outcomes) == expected
    # the first step that uses anything pays the connect fee and the whole first minute
    # (0.15) on its own, later steps never pay them again (checked step by step below)
    first = next(i for i, c in enumerate(costs) if c)
    assert costs[first] == ref_cost("voice", chunks[first - 1]) >= eur("0.15")
    # each step is rating(U_after) − rating(U_before), its rated units the difference of
    # the rated units; a step that costs nothing (nothing used, or beyond the cap) has no
    # charge record
    cum = 0
    for k, used in enumerate(chunks, start=1):
        o = outcomes[k]
        assert costs[k] == ref_step(VOICE_T, PEAK, cum, cum + used)
        if costs[k]:
            assert o.charge.units == used
            assert o.charge.rated_units == (ref_units(VOICE_T, PEAK, cum + used)[1]
                                               - ref_units(VOICE_T, PEAK, cum)[1])
        else:
            assert o.charge is None and o.ledger == []
        cum += used
    assert sum(-e["delta"] for o in outcomes for e in o.ledger) == expected
    assert acct.balance == eur("100.00") - expected
    assert acct.sessions == {} and acct.reserved == 0


def test_terminate_releases_everything():
    acct = account("10.00")
    _open_session(acct)
    _open_session(acct, "other", requested=60)
    outcomes, changes = decide([req("s:1", "terminate", used=45)], {"a": acct})
    d = outcomes[0].record()["decision"]
    assert (d["result"], d["granted"], d["validity_s"], d["final"]) == ("SUCCESS", 0, 0, False)
    assert amount(d["charged"]) == eur("0.15") and d["balance"] == "9.85"
    assert "s" not in acct.sessions
    assert changes["a"].sessions_removed == {"s"} and "s" not in changes["a"].sessions_written
    assert acct.reserved == eur("0.15")  # only the other session's 60 s are still held
    check_held(acct)
    one(req("other:1", "terminate", session="other", used=0), acct)
    assert acct.sessions == {} and acct.reserved == 0 and acct.balance == eur("9.85")


def test_session_keeps_the_catalog_version_of_its_initial():
    """A session opened under one catalog version is rated with that version's rate, even
    after a newer version became current (as long as the older one is still held)."""
    v2_text = (SAMPLE_TEXT.replace('version: "2026-11-a"', 'version: "2026-12-a"')
               .replace('connect_fee: "0.05"', 'connect_fee: "0.50"'))
    _, v2, _ = load(v2_text)
    both = FixedCatalogs(v2, (COMPILED,))
    acct = account("10.00")
    _open_session(acct)  # under 2026-11-a
    out = one(req("s:1", "update", used=30), acct, catalogs=both)
    assert out.charge.catalog_version == VERSION
    assert out.charge.cost == eur("0.15")  # not 0.50 + 0.10
    ev = one(req("e", "event", used=30), acct, catalogs=both)  # new usage: the new version
    assert ev.charge.catalog_version == "2026-12-a"
    assert ev.charge.cost == eur("0.60")


def test_step_with_another_service_does_not_touch_that_services_allowance():
    acct = account("10.00")
    _open_session(acct)  # a voice session
    out = one(req("s:1", "update", service="data", used=600), acct)
    one(req("s:2", "terminate", seq=2, used=0), acct)
    assert acct.sessions == {}
    # voice has no allowance: 600 s are not paid from the data allowance, and nothing of the
    # data allowance stays held once no session is open (check_held: reserved == Σ holds)
    assert out.charge is None or out.charge.allowance_units == 0
    for bucket in acct.allowances.get("data", []):
        assert (bucket.units, bucket.reserved) == (GiB, 0)


# -- money held -------------------------------------------------------------------------------

def test_second_session_only_gets_money_the_first_does_not_hold():
    acct = account("1.00")
    o1 = one(req("s1:0", "initial", session="s1"), acct)
    assert o1.decision.granted == 300 and acct.reserved == eur("0.51")
    check_held(acct)
    o2 = one(req("s2:0", "initial", session="s2"), acct)
    # available 1.00 − 0.51 = 0.49: 0.15 + (g − 60) · 0.0015 ≤ 0.49 ⇔ g ≤ 286 (0.489)
    g, money = reference.max_grant(VOICE_T, PEAK, 0, 0, 300, Fraction(49, 100))
    assert (g, money) == (286, Fraction(489, 1000))
    assert (o2.decision.result, o2.decision.granted, o2.decision.final) == (
        "SUCCESS", 286, True)
    assert acct.sessions["s2"].money_reserved == eur("0.489")
    assert acct.reserved == eur("0.999")
    check_held(acct)
    # 0.001 left: an sms (0.09) is refused, a third session gets nothing
    o3 = one(req("e1", "event", service="sms", destination=None, used=1), acct)
    assert o3.decision.result == "CREDIT_LIMIT_REACHED" and acct.balance == eur("1.00")
    o4 = one(req("s3:0", "initial", session="s3"), acct)
    assert o4.decision.result == "CREDIT_LIMIT_REACHED" and "s3" not in acct.sessions
    check_held(acct)
    # the first session ends using 10 s (0.15); its unused 0.36 returns
    one(req("s1:1", "terminate", session="s1", used=10), acct)
    assert acct.balance == eur("0.85") and acct.reserved == eur("0.489")
    check_held(acct)
    o5 = one(req("e2", "event", service="sms", destination=None, used=1), acct)
    assert o5.decision.result == "SUCCESS" and acct.balance == eur("0.76")
    check_held(acct)


def test_update_regrant_is_limited_by_other_sessions():
    acct = account("1.00")
    one(req("s1:0", "initial", session="s1", requested=60), acct)  # holds 0.15
    one(req("s2:0", "initial", session="s2"), acct)  # 0.51
    # s1 reports 60 s (0.15); the re-grant from C = 60 may use 1.00 − 0.15 − 0.51 = 0.34:
    # (g) · 0.0015 ≤ 0.34 ⇔ g ≤ 226
    out = one(req("s1:1", "update", session="s1", used=60), acct)
    g, money = reference.max_grant(VOICE_T, PEAK, 60, 0, 300, Fraction(34, 100))
    assert (g, money) == (226, Fraction(339, 1000))
    assert (out.decision.granted, out.decision.final) == (226, True)
    assert acct.sessions["s1"].money_reserved == eur("0.339")
    assert acct.balance == eur("0.85") and acct.reserved == eur("0.849")
    check_held(acct)


# -- overuse ----------------------------------------------------------------------------------

def test_overuse_is_charged_as_far_as_the_balance_allows_rest_uncharged():
    acct = account("1.00")
    _open_session(acct, requested=60)  # holds 0.15
    out = one(req("s:1", "terminate", used=1000), acct)
    # rating(1000) = 0.15 + 940 · 0.0015 = 1.56; 1.00 can be taken, 0.56 cannot
    assert ref_cost("voice", 1000) == eur("1.56")
    assert out.decision.result == "SUCCESS"
    assert out.decision.charged == eur("1.00") and out.record()["decision"]["balance"] == "0.00"
    assert out.charge.cost == eur("1.00")
    assert out.charge.uncharged == eur("0.56")
    assert out.charge.units == 1000 and out.charge.rated_units == 1000
    assert out.ledger[0]["delta"] == -eur("1.00") and out.ledger[0]["balance"] == 0
    assert acct.balance == 0 and acct.reserved == 0 and acct.sessions == {}


def test_overuse_on_allow_negative_goes_negative():
    acct = account("1.00", allow_negative=True)
    _open_session(acct, requested=60)
    out = one(req("s:1", "terminate", used=1000), acct)
    assert out.charge.cost == eur("1.56")
    assert out.charge.uncharged == 0
    assert out.record()["decision"]["balance"] == "-0.56" and acct.balance == -eur("0.56")
    assert out.ledger[0]["delta"] == -eur("1.56")


@pytest.mark.parametrize("balance", ["12.50", "-100.00"])
def test_a_huge_grant_on_allow_negative_is_bounded_like_balances(balance):
    # 2**40 SMS at 0.09 would hold 2**40 × 90,000 ≈ 9.9·10**16 micros (it did on 1d4aa33),
    # beyond the ±(2**53 − 1) balances keep to: the grant is the most that keeps reserved
    # ≤ 2**53 − 1 and balance − reserved ≥ −(2**53 − 1), and final
    acct = account(balance, allow_negative=True)
    requested = 2**40
    out = one(req("s:0", "initial", service="sms", destination=None, requested=requested),
              acct)
    room = BALANCE_LIMIT + min(acct.balance, 0)  # the tighter of the two bounds
    assert out.decision.result == "SUCCESS"
    assert out.decision.granted == room // eur("0.09") < requested
    assert out.decision.final is True
    assert acct.reserved == out.decision.granted * eur("0.09") == \
        acct.sessions["s"].money_reserved
    assert acct.reserved <= BALANCE_LIMIT
    assert acct.balance - acct.reserved >= -BALANCE_LIMIT
    assert acct.balance - acct.reserved - eur("0.09") < -BALANCE_LIMIT or \
        acct.reserved + eur("0.09") > BALANCE_LIMIT  # one SMS more would not fit
    # a second session finds no room left, and is refused as a grant of 0
    again = one(req("t:0", "initial", session="t", service="sms", destination=None,
                    requested=requested), acct)
    assert again.decision.result == "CREDIT_LIMIT_REACHED"
    assert again.decision.granted == 0 and acct.reserved <= BALANCE_LIMIT


def test_overuse_never_takes_money_another_session_holds():
    acct = account("1.00")
    one(req("s1:0", "initial", session="s1"), acct)  # holds 0.51
    one(req("s2:0", "initial", session="s2", requested=60), acct)  # holds 0.15
    out = one(req("s2:1", "terminate", session="s2", used=1000), acct)
    # 1.56 owed, 1.00 − 0.51 = 0.49 may be taken
    assert out.charge.cost == eur("0.49")
    assert out.charge.uncharged == eur("1.07")
    assert acct.balance == eur("0.51") == acct.reserved
    check_held(acct)


def test_update_overuse_then_no_regrant():
    acct = account("0.20")
    _open_session(acct, requested=60)  # 0.15 held
    out = one(req("s:1", "update", used=100), acct)
    # rating(100) = 0.15 + 40 · 0.0015 = 0.21: 0.20 taken, 0.01 uncharged; nothing left
    assert out.charge.cost == eur("0.20")
    assert out.charge.uncharged == eur("0.01")
    d = out.record()["decision"]
    assert (d["result"], d["granted"], d["final"]) == ("CREDIT_LIMIT_REACHED", 0, True)
    assert acct.balance == 0 and acct.reserved == 0
    check_held(acct)
    # the session's chargeable units moved on: a later report is rated from C = 100
    acct.balance = eur("1.00")
    out2 = one(req("s:2", "terminate", seq=2, used=10), acct)
    assert out2.charge.cost == eur("0.015")  # 10 · 0.0015, no second connect fee


# -- events -----------------------------------------------------------------------------------

def test_event_is_debited_at_once():
    acct = account("1.00")
    out = one(req("e1", "event", service="sms", destination=None, used=1), acct)
    assert out.record()["decision"] == {
        "id": "e1", "kind": "event", "account": "a", "service": "sms", "session": None,
        "seq": None, "result": "SUCCESS", "granted": 0, "validity_s": 0, "final": False,
        "balance": "0.91", "charged": "0.0900",
    }
    assert out.record()["charge"] == {
        "id": "e1", "account": "a", "service": "sms", "session": None, "seq": None,
        "ts": "2026-11-24T09:00:00.000Z", "units": 1, "rated_units": 1, "allowance_units": 0,
        "cost": "0.0900", "currency": "EUR", "tariff": "SMS_STD", "rate": "sms",
        "catalog_version": VERSION, "balance": "0.91", "uncharged": "0",
    }
    assert out.ledger == [{"id": "e1", "delta": -90000, "balance": 910000, "reason": "event",
                           "catalog_version": VERSION}]
    assert acct.balance == 910000 and type(acct.balance) is int


def test_event_voice_worked_example():
    acct = account("10.00")
    out = one(req("e1", "event", used=61), acct)
    assert out.charge.rate == "mobile_peak" and out.charge.rated_units == 61
    assert out.record()["charge"]["cost"] == "0.1515" and acct.balance == eur("9.8485")


@pytest.mark.parametrize("balance, result, after", [
    ("0.10", "CREDIT_LIMIT_REACHED", "0.10"),  # cannot pay 0.15: nothing taken
    ("0.149999", "CREDIT_LIMIT_REACHED", "0.149999"),
    ("0.15", "SUCCESS", "0.00"),  # pays exactly
])
def test_event_all_or_nothing(balance, result, after):
    acct = account(balance)
    out = one(req("e1", "event", used=30), acct)
    assert out.decision.result == result
    assert acct.balance == eur(after)
    assert out.record()["decision"]["balance"] == format_balance(eur(after))
    if result != "SUCCESS":
        assert out.charge is None and out.ledger == [] and out.decision.charged == 0


def test_event_cannot_use_money_held_for_a_session():
    acct = account("0.60")
    _open_session(acct)  # 0.51 held; 0.09 free
    assert one(req("e1", "event", used=30), acct).decision.result == "CREDIT_LIMIT_REACHED"
    ok = one(req("e2", "event", service="sms", destination=None, used=1), acct)
    assert ok.decision.result == "SUCCESS" and acct.balance == eur("0.51")
    check_held(acct)


def test_event_with_zero_units_charges_nothing():
    acct = account("1.00")
    out = one(req("e1", "event", used=0), acct)
    assert out.decision.result == "SUCCESS"
    assert out.decision.charged == 0 and out.record()["decision"]["balance"] == "1.00"
    assert out.charge is None and out.ledger == [] and acct.balance == eur("1.00")


def test_event_zero_balance_zero_units_is_not_refused():
    acct = account("0.00")
    assert one(req("e1", "event", used=0), acct).decision.result == "SUCCESS"


def test_event_on_allow_negative_is_never_refused():
    acct = account("0.00", allow_negative=True)
    out = one(req("e1", "event", used=30), acct)
    assert out.decision.result == "SUCCESS" and out.record()["decision"]["balance"] == "-0.15"
    assert out.charge.uncharged == 0


# -- unknown sessions -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["update", "terminate"])
def test_unknown_session_is_charged_like_an_event(kind):
    acct = account("10.00")
    out = one(req("x:1", kind, session="x", used=30, requested=300), acct)
    d = out.record()["decision"]
    assert (d["result"], d["granted"], d["validity_s"]) == ("SESSION_UNKNOWN", 0, 0)
    assert amount(d["charged"]) == eur("0.15") and d["balance"] == "9.85"
    assert out.charge.cost == eur("0.15") == ref_cost("voice", 30)
    assert out.charge.rate == "mobile_peak" and out.charge.rated_units == 60
    assert out.charge.uncharged == 0
    assert out.ledger[0]["delta"] == -eur("0.15")
    assert acct.sessions == {} and acct.reserved == 0  # no session appears


def test_unknown_session_cannot_be_refused_rest_uncharged():
    acct = account("0.10")
    out = one(req("x:1", "terminate", session="x", used=30), acct)
    assert out.decision.result == "SESSION_UNKNOWN"
    assert out.charge.cost == eur("0.10")
    assert out.charge.uncharged == eur("0.05")
    assert acct.balance == 0


def test_partial_take_of_an_unrounded_balance_is_exact():
    acct = account("0.123456")
    out = one(req("x:1", "terminate", session="x", used=30), acct)
    assert out.record()["decision"]["charged"] == "0.123456"
    assert out.record()["charge"]["cost"] == "0.123456"
    assert out.record()["charge"]["uncharged"] == "0.026544"  # 0.15 − 0.123456
    assert out.record()["decision"]["balance"] == "0.00" and acct.balance == 0


def test_unknown_session_does_not_take_held_money():
    acct = account("0.60")
    _open_session(acct)  # 0.51 held
    out = one(req("x:1", "update", session="x", used=30), acct)
    assert out.charge.cost == eur("0.09")
    assert out.charge.uncharged == eur("0.06")
    assert acct.balance == eur("0.51")
    check_held(acct)


def test_terminate_after_terminate_is_session_unknown():
    acct = account("10.00")
    outcomes, _ = decide([req("s:0", "initial"), req("s:1", "terminate", used=30),
                          req("s:2", "terminate", seq=2, used=30)], {"a": acct})
    assert [o.decision.result for o in outcomes] == ["SUCCESS", "SUCCESS", "SESSION_UNKNOWN"]
    # the late report is rated on its own, like an event: connect fee and first minute again
    assert outcomes[2].charge.cost == eur("0.15")
    assert acct.balance == eur("9.70")


def test_unknown_session_with_nothing_used_charges_nothing():
    acct = account("10.00")
    out = one(req("x:1", "update", session="x"), acct)
    assert out.decision.result == "SESSION_UNKNOWN" and out.decision.granted == 0
    assert out.charge is None and out.ledger == [] and acct.balance == eur("10.00")


# -- allowances -------------------------------------------------------------------------------

def test_event_within_the_allowance_costs_nothing():
    acct = account("1.00")
    out = one(req("d1", "event", service="data", destination=None, used=MiB), acct)
    assert out.decision.result == "SUCCESS"
    assert out.decision.charged == 0 and out.record()["decision"]["balance"] == "1.00"
    c = out.record()["charge"]
    assert c is not None  # allowance was taken: a charge record
    assert (c["units"], c["allowance_units"], c["rated_units"]) == (MiB, MiB, 0)
    assert amount(c["cost"]) == 0 and amount(c["uncharged"]) == 0
    assert out.ledger == []
    bucket, = acct.allowances["data"]
    assert (bucket.units, bucket.reserved, bucket.period) == (GiB - MiB, 0, "2026-11")


def test_event_crossing_the_allowance_pays_the_rest_from_position_zero():
    acct = account("1.00", allowances=data_bucket(1000))
    used = 1000 + 2 * MiB + 100
    out = one(req("d1", "event", service="data", destination=None, used=used), acct)
    # chargeable 2 MiB + 100, rated from position 0: 2 MiB + 1024 rated bytes
    # = 0.02 + 1024 · 0.01 / 1048576 = 0.020009765625 → 0.0201 (up).
    # (Rating positions 1000 .. used instead would give 0.0201 − 0.0001 = 0.0200.)
    cost, rated = ref_units(DATA_T, DATA_R, 2 * MiB + 100)
    assert (cost, rated) == (eur("0.0201"), 2 * MiB + 1024)
    assert ref_step(DATA_T, DATA_R, 1000, used) == eur("0.0200")
    c = out.record()["charge"]
    assert (c["units"], c["allowance_units"], c["rated_units"]) == (used, 1000, 2 * MiB + 1024)
    assert amount(c["cost"]) == eur("0.0201")
    assert acct.balance == eur("0.9799") and acct.allowances["data"][0].units == 0


def test_event_refused_takes_no_allowance_either():
    acct = account("0.00", allowances=data_bucket(1000))
    out = one(req("d1", "event", service="data", destination=None, used=MiB), acct)
    assert out.decision.result == "CREDIT_LIMIT_REACHED"
    assert acct.allowances["data"][0].units == 1000 and acct.balance == 0


def test_session_grant_holds_allowance_then_money():
    acct = account("1.00", allowances=data_bucket(1000))
    out = one(req("d:0", "initial", service="data", destination=None, session="d"), acct)
    # quota 10 MiB: 1000 bytes from the allowance, money for 10 MiB − 1000 bytes from C = 0:
    # ceil(10484760 / 1024) · 1024 = 10 MiB rated → 0.10
    g, money = reference.max_grant(DATA_T, DATA_R, 0, 1000, 10 * MiB, Fraction(1))
    assert (g, money) == (10 * MiB, Fraction(1, 10))
    assert (out.decision.granted, out.decision.final) == (10 * MiB, False)
    s = acct.sessions["d"]
    assert s.money_reserved == eur("0.10") and s.allowance_reserved == [1000]
    assert acct.allowances["data"][0].reserved == 1000
    check_held(acct)


def test_allowance_held_by_a_session_is_not_available_to_others():
    acct = account("1.00")
    o1 = one(req("d1:0", "initial", service="data", destination=None, session="d1",
                 requested=GiB), acct)
    assert o1.decision.granted == GiB
    assert acct.sessions["d1"].allowance_reserved == [GiB]
    assert acct.sessions["d1"].money_reserved == 0 and acct.reserved == 0
    assert acct.allowances["data"][0].reserved == GiB
    # another session: no allowance left, money for the whole quota (10 MiB = 0.10)
    one(req("d2:0", "initial", service="data", destination=None, session="d2"), acct)
    assert acct.sessions["d2"].allowance_reserved == [0]
    assert acct.sessions["d2"].money_reserved == eur("0.10")
    # an event: pays for every byte (1 MiB = 0.01)
    ev = one(req("e1", "event", service="data", destination=None, used=MiB), acct)
    assert ev.charge.allowance_units == 0 and ev.charge.cost == eur("0.01")
    check_held(acct)
    # the holder consumes its allowance at no cost
    up = one(req("d1:1", "update", service="data", destination=None, session="d1",
                 used=5 * MiB, requested=MiB), acct)
    assert up.charge.allowance_units == 5 * MiB and up.charge.cost == 0
    bucket = acct.allowances["data"][0]
    assert bucket.units == GiB - 5 * MiB and bucket.reserved == MiB
    assert acct.balance == eur("0.99")
    check_held(acct)
    # terminating the holder returns the unused allowance
    one(req("d1:2", "terminate", service="data", destination=None, session="d1", seq=2), acct)
    assert bucket.reserved == 0 and bucket.units == GiB - 5 * MiB
    check_held(acct)


def test_monthly_allowance_rolls_over_at_local_midnight():
    acct = account("1.00")
    nov = one(req("n1", "event", service="data", destination=None,
                  ts="2026-11-15T12:00:00+01:00", used=GiB), acct)
    assert nov.charge.allowance_units == GiB and acct.balance == eur("1.00")
    assert acct.allowances["data"][0].units == 0
    # 2026-11-30 23:59:59 Berlin = 22:59:59 UTC: still November, so paid (1 MiB = 0.01)
    late = one(req("n2", "event", service="data", destination=None,
                   ts="2026-11-30T22:59:59Z", used=MiB), acct)
    assert late.charge.allowance_units == 0 and late.charge.cost == eur("0.01")
    assert acct.allowances["data"][0].period == "2026-11"
    # 2026-12-01 00:00:00 Berlin = 2026-11-30 23:00:00 UTC: December, a fresh allowance
    dec = one(req("d1", "event", service="data", destination=None,
                  ts="2026-11-30T23:00:00Z", used=MiB), acct)
    assert dec.charge.allowance_units == MiB and dec.charge.cost == 0
    bucket = acct.allowances["data"][0]
    assert (bucket.units, bucket.period) == (GiB - MiB, "2026-12")
    assert acct.balance == eur("0.99")
    # a late November report after the rollover does not reset the period back
    again = one(req("n3", "event", service="data", destination=None,
                    ts="2026-11-30T22:00:00Z", used=MiB), acct)
    assert again.charge.allowance_units == MiB
    assert acct.allowances["data"][0].period == "2026-12"


def test_allowance_is_per_account():
    a, b = account("1.00", aid="a"), account("1.00", aid="b")
    decide([req("1", "event", account="a", service="data", destination=None, used=GiB),
            req("2", "event", account="b", service="data", destination=None, used=MiB)],
           {"a": a, "b": b})
    assert a.allowances["data"][0].units == 0
    assert b.allowances["data"][0].units == GiB - MiB


# -- replays ----------------------------------------------------------------------------------

@pytest.mark.parametrize("first", [
    req("r1", "event", service="sms", destination=None, used=1),
    req("r1", "initial", session="s"),
    req("r1", "event", used=1000),  # 1.56 > 1.00: CREDIT_LIMIT_REACHED, replayed as such
    req("r1", "update", session="nope", used=30),  # SESSION_UNKNOWN, charged once
], ids=["event", "initial", "refused", "unknown-session"])
def test_same_id_twice_in_one_batch_is_a_replay(first):
    acct = account("1.00")
    outcomes, _ = decide([first, first], {"a": acct})
    o1, o2 = outcomes
    assert not o1.replay and o2.replay
    assert o2.decision == o1.decision
    assert o2.charge == o1.charge and o2.ledger == []  # the first outputs, re-emitted
    # state is as after the first alone
    alone = account("1.00")
    decide([first], {"a": alone})
    assert acct == alone


def test_replay_of_a_different_request_with_the_same_id_changes_nothing():
    acct = account("1.00")
    outcomes, _ = decide([req("r1", "event", service="sms", destination=None, used=1),
                          req("r1", "event", service="sms", destination=None, used=5)],
                         {"a": acct})
    assert outcomes[1].replay and outcomes[1].decision == outcomes[0].decision
    assert acct.balance == eur("0.91")


def test_id_in_previous_is_a_replay():
    acct = account("1.00")
    first = one(req("s:0", "initial"), acct)
    second = one(req("s:1", "update", used=30), acct)
    before = snapshot(acct)
    stored = {"decision": {"result": "SUCCESS", "x": 1}, "charge": None}  # as the store read it
    outcomes, changes = decide([req("s:0", "initial"), req("s:1", "update", used=30)],
                               {"a": acct}, previous={
                                   ("a", "s:0"): first.stored(),
                                   ("a", "s:1"): Stored(second.decision, None, stored)})
    assert [o.replay for o in outcomes] == [True, True]
    assert outcomes[0].decision == first.decision
    assert outcomes[0].record() == first.record()
    assert outcomes[1].decision == second.decision
    assert outcomes[1].record() == stored  # emitted as it was stored
    assert all(o.charge is None and o.ledger == [] for o in outcomes)
    assert acct == before
    assert not any(c.changed for c in changes.values())


def test_replay_is_checked_before_the_account_exists():
    first = Decision("z", "event", "ghost", "voice", None, None, Result.SUCCESS, balance=0)
    stored = {"decision": {"result": "SUCCESS"}, "charge": None}
    outcomes, _ = decide([req("z", "event", account="ghost", used=1)], {"ghost": None},
                         previous={("ghost", "z"): Stored(first, None, stored)})
    assert outcomes[0].replay and outcomes[0].decision == first
    assert outcomes[0].record() == stored


def test_an_id_reused_for_another_account_is_another_request():
    a, b = account("1.00"), account("1.00", aid="b")
    outcomes, _ = decide([req("same", "event", service="sms", used=1),
                          req("same", "event", account="b", service="sms", used=1)],
                         {"a": a, "b": b})
    assert [o.replay for o in outcomes] == [False, False]
    assert [o.decision.account for o in outcomes] == ["a", "b"]
    assert a.balance == b.balance < 1_000_000
    # a previous record of the id on one account is a replay there only
    again, _ = decide([req("same", "event", account="b", service="sms", used=1)], {"b": b},
                      previous={("a", "same"): outcomes[0].stored()})
    assert not again[0].replay and b.balance < a.balance


# -- re-initial -------------------------------------------------------------------------------

def test_initial_for_an_open_session_releases_the_old_one_first():
    acct = account("0.60")
    _open_session(acct)  # holds 0.51 of 0.60
    one(req("s:1", "update", used=30), acct)  # 0.15 paid; 0.405 held for the next 300 s
    assert acct.balance == eur("0.45") and acct.reserved == eur("0.405")
    # restart with the same id: without releasing first only 0.045 would be available
    out = one(req("s:0b", "initial", requested=200), acct)
    # 0.15 + 140 · 0.0015 = 0.36 ≤ 0.45
    assert (out.decision.result, out.decision.granted, out.decision.final) == (
        "SUCCESS", 200, False)
    s = acct.sessions["s"]
    assert (s.chargeable, s.used, s.granted) == (0, 0, 200)  # a fresh session
    assert s.money_reserved == eur("0.36") == acct.reserved
    assert acct.balance == eur("0.45")
    check_held(acct)


def test_reinitial_refused_still_releases_the_old_session():
    acct = account("0.60")
    _open_session(acct)
    acct.balance = eur("0.10")  # e.g. an adjustment; 0.10 cannot fund 1 s
    out = one(req("s:0b", "initial"), acct)
    assert out.decision.result == "CREDIT_LIMIT_REACHED"
    assert acct.sessions == {} and acct.reserved == 0


# -- release_silent ---------------------------------------------------------------------------

def test_release_silent_releases_only_stale_sessions():
    acct = account("10.00")
    _open_session(acct, "old")  # last seen NOW, validity 600 s → deadline NOW + 1_200_000
    one(req("d:0", "initial", service="data", destination=None, session="data-old"), acct)
    one(req("new:0", "initial", session="new", requested=60), acct, now=NOW + 1000)
    assert acct.reserved == eur("0.51") + 0 + eur("0.15")
    assert acct.allowances["data"][0].reserved == 10 * MiB

    change, ledger = release_silent(acct, NOW + 1_199_999)
    assert ledger == [] and not change.changed and set(acct.sessions) == {"old", "data-old",
                                                                            "new"}

    change, ledger = release_silent(acct, NOW + 1_200_000)
    assert change.changed and change.sessions_removed == {"old", "data-old"}
    assert sorted(ledger, key=lambda e: e["id"]) == [
        {"id": "release:data-old", "delta": 0, "balance": eur("10.00"), "reason": "release",
         "catalog_version": VERSION, "released": 0},
        {"id": "release:old", "delta": 0, "balance": eur("10.00"), "reason": "release",
         "catalog_version": VERSION, "released": eur("0.51")},
    ]
    assert set(acct.sessions) == {"new"}
    assert acct.reserved == eur("0.15") and acct.balance == eur("10.00")
    assert acct.allowances["data"][0].reserved == 0
    check_held(acct)
    # a late report on a released session is SESSION_UNKNOWN, charged like an event
    late = one(req("old:1", "update", session="old", used=30), acct, now=NOW + 1_300_000)
    assert late.decision.result == "SESSION_UNKNOWN"
    assert late.charge.cost == eur("0.15")


def test_release_silent_uses_the_last_step_time():
    acct = account("10.00")
    _open_session(acct)
    one(req("s:1", "update", used=10), acct, now=NOW + 1_000_000)
    _, ledger = release_silent(acct, NOW + 1_200_000)
    assert ledger == [] and "s" in acct.sessions
    _, ledger = release_silent(acct, NOW + 2_200_000)
    assert [e["id"] for e in ledger] == ["release:s"] and acct.reserved == 0


# -- format_balance ---------------------------------------------------------------------------

@pytest.mark.parametrize("micros, text", [
    (0, "0.00"), (10_000_000, "10.00"), (9_850_000, "9.85"), (123_456, "0.123456"),
    (-560_000, "-0.56"), (12_345_600, "12.3456"), (1, "0.000001"), (-1, "-0.000001"),
])
def test_format_balance(micros, text):
    assert format_balance(micros) == text


# -- property: random interleavings keep the books ---------------------------------------------

ACCOUNT_IDS = ("p0", "p1", "p2")
TS_CHOICES = (TUE_10, SAT_10, "2026-11-24T21:30:00+01:00")
DEST_CHOICES = (MOBILE, LANDLINE, None, "4915000")
#: Session slots per account: 0 and 1 are voice sessions (no allowance: every step's
#: money is rating(U_after) − rating(U_before) and a session's total is the one-shot rating
#: of its used units), 2 a data session (its money rates only the units beyond the
#: allowance, so its total is the rating of its chargeable units).
SLOT_SERVICE = ("voice", "voice", "data")


@st.composite
def operations(draw, n_accounts: int):
    acct = draw(st.integers(0, n_accounts - 1))
    kind = draw(st.sampled_from(["initial", "initial", "update", "update", "update",
                                 "terminate", "event", "topup", "flush"]))
    if kind == "topup":
        return (kind, acct, draw(st.integers(1, 2_000_000)))
    if kind == "flush":
        return (kind,)
    if kind == "event":
        service = draw(st.sampled_from(["voice", "sms", "data"]))
    else:
        slot = draw(st.integers(0, 2))
        service = SLOT_SERVICE[slot]
    if service == "data":
        used = draw(st.one_of(st.integers(0, 4 * MiB), st.integers(0, 3 * GiB // 4)))
        requested = draw(st.one_of(st.just(0), st.integers(1, 64 * MiB), st.just(GiB)))
    else:
        used = draw(st.one_of(st.integers(0, 120), st.integers(0, 4000),
                              st.sampled_from([0, 1, 59, 60, 61, 3294])))
        requested = draw(st.one_of(st.just(0), st.integers(1, 700)))
    ts = draw(st.sampled_from(TS_CHOICES))
    dest = draw(st.sampled_from(DEST_CHOICES))
    if kind == "event":
        return (kind, acct, service, used, ts, dest)
    return (kind, acct, slot, used, requested, ts, dest)


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 3))
    balances = draw(st.lists(st.one_of(st.integers(0, 3_000_000), st.integers(0, 30_000_000),
                                       st.sampled_from([0, 150_000, 510_000, 1])),
                             min_size=n, max_size=n))
    negative = draw(st.lists(st.integers(0, 3).map(lambda k: k == 0), min_size=n, max_size=n))
    ops = draw(st.lists(operations(n), min_size=20, max_size=60))
    return balances, negative, ops


def _data_units(acct: Account) -> int:
    buckets = acct.allowances.get("data")
    return buckets[0].units if buckets else GiB


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_random_interleavings_keep_the_books(scenario):
    balances, negative, ops = scenario
    accounts = {ACCOUNT_IDS[k]: Account(ACCOUNT_IDS[k], "PREPAID_S", b, allow_negative=neg)
                for k, (b, neg) in enumerate(zip(balances, negative, strict=True))}
    # open sessions: (account, sid) -> [tariff, rate, chargeable units, money taken or owed]
    model: dict[tuple[str, str], list] = {}
    seqs: dict[str, int] = {}
    batch: list = []
    counter = [0, NOW]  # request number, engine clock

    def make(op):
        counter[0] += 1
        rid = f"r{counter[0]}"
        kind, aid = op[0], ACCOUNT_IDS[op[1]]
        if kind == "event":
            _, _, service, used, ts, dest = op
            return req(rid, "event", account=aid, service=service, used=used, ts=ts,
                       destination=dest)
        _, _, slot, used, requested, ts, dest = op
        sid = f"{aid}-s{slot}"
        seqs[sid] = seq = 0 if kind == "initial" else seqs.get(sid, 0) + 1
        extra = {"used": used} if kind != "initial" else {}
        if kind != "terminate":
            extra["requested"] = requested
        return req(rid, kind, account=aid, service=SLOT_SERVICE[slot], session=sid, seq=seq,
                   ts=ts, destination=dest, **extra)

    def flush() -> None:
        if not batch:
            return
        before = {aid: a.balance for aid, a in accounts.items()}
        # every request's ts is in November 2026: one allowance period throughout
        free_before = {aid: _data_units(a) for aid, a in accounts.items()}
        taken_free = dict.fromkeys(accounts, 0)
        outcomes, _ = decide(list(batch), accounts, now=counter[1])
        counter[1] += 1000
        batch.clear()
        deltas = dict.fromkeys(accounts, 0)
        for out in outcomes:
            r, d, c = out.request, out.record()["decision"], out.record()["charge"]
            note(f"{r.id} {r.kind} {r.account} {r.service} {r.session} used={r.used} "
                 f"req={r.requested} -> {d['result']} g={d['granted']} "
                 f"charged={d['charged']} bal={d['balance']} "
                 f"allowance={c and c['allowance_units']} uncharged={c and c['uncharged']}")
            assert not out.replay
            event(f"{r.kind} {r.service} {d['result']}")
            if d["final"]:
                event("final grant")
            if c is not None and amount(c["uncharged"]):
                event("uncharged")
            taken = -sum(e["delta"] for e in out.ledger)
            assert taken >= 0
            deltas[r.account] -= taken
            assert amount(d["charged"]) == taken
            if c is not None:
                assert amount(c["cost"]) == taken and amount(c["uncharged"]) >= 0
                assert c["units"] == r.used and 0 <= c["allowance_units"] <= r.used
            if d["result"] != "SUCCESS" or r.kind in ("event", "terminate"):
                assert d["granted"] == 0
            owed = taken + (amount(c["uncharged"]) if c else 0)
            allowance = c["allowance_units"] if c else 0
            if r.service != "data":
                assert allowance == 0
            taken_free[r.account] += allowance
            key = (r.account, r.session)
            if r.kind == "initial":
                model.pop(key, None)  # a restarted id releases the old session
                if d["result"] == "SUCCESS":
                    assert d["granted"] > 0
                    assert d["final"] == (d["granted"] < (r.requested or (
                        300 if r.service == "voice" else 10 * MiB)))
                    tariff = reference.tariff_for(SAMPLE, "PREPAID_S", r.service)
                    rate = reference.select_rate(SAMPLE, tariff, r.ts_ms, r.destination)
                    model[key] = [tariff, rate, 0, 0]
                else:
                    assert d["result"] == "CREDIT_LIMIT_REACHED"
                    assert not accounts[r.account].allow_negative
            elif r.kind in ("update", "terminate"):
                if key not in model:
                    assert d["result"] == "SESSION_UNKNOWN"
                    if r.used == 0:
                        assert c is None
                    # rated like an event, from position 0 of its chargeable units
                    assert owed == ref_cost(r.service, r.used - allowance, r.ts_ms,
                                            r.destination)
                    continue
                entry = model[key]
                assert d["result"] in ("SUCCESS", "CREDIT_LIMIT_REACHED")
                if c is not None:  # rated with the rate selected at the initial
                    assert c["rate"] == entry[1].id
                chargeable = r.used - allowance
                if r.service == "voice":
                    assert allowance == 0
                # each step: rating(C_after) − rating(C_before), taken or owed
                assert owed == ref_step(entry[0], entry[1], entry[2], entry[2] + chargeable)
                entry[2] += chargeable
                entry[3] += owed
                if r.kind == "terminate":
                    assert d["result"] == "SUCCESS"
                    del model[key]
                    # the session's money is the one-shot rating of its chargeable units
                    assert entry[3] == ref_units(entry[0], entry[1], entry[2])[0]
                    event(f"{r.service} session total checked")
            else:  # event: all or nothing
                if d["result"] == "SUCCESS":
                    assert amount(c["uncharged"] if c else "0") == 0 or \
                        accounts[r.account].allow_negative
                    assert owed == ref_cost(r.service, r.used - allowance, r.ts_ms,
                                            r.destination)
                else:
                    assert d["result"] == "CREDIT_LIMIT_REACHED" and taken == 0 and c is None
        for aid, acct in accounts.items():
            assert acct.balance - before[aid] == deltas[aid], aid
            # the allowance units reported taken are the units the buckets lost
            assert free_before[aid] - _data_units(acct) == taken_free[aid], aid
            check_held(acct)
            assert set(acct.sessions) == {sid for (a, sid) in model if a == aid}

    for op in ops:
        if op[0] == "flush":
            flush()
        elif op[0] == "topup":
            flush()
            accounts[ACCOUNT_IDS[op[1]]].balance += op[2]
        else:
            batch.append(make(op))
    flush()
    # end every open session, which checks its total
    for aid, sid in list(model):
        batch.append(req(f"end-{sid}", "terminate", account=aid, session=sid, seq=10_000,
                         service=SLOT_SERVICE[int(sid[-1])]))
    flush()
    assert not model
    for acct in accounts.values():
        assert acct.sessions == {} and acct.reserved == 0
        for bucket in acct.allowances.get("data", []):
            assert bucket.reserved == 0


# --- allowance periods changed by a new catalog; a step naming another service -------------

_WEEKLY = load(SAMPLE_TEXT.replace("period: month}", "period: week}"))[2]
_MONTHLY_B = load(SAMPLE_TEXT.replace(f'version: "{VERSION}"', 'version: "2026-11-b"'))[2]


def _data_event(rid: str, ts: str, used: int) -> object:
    return req(rid, "event", service="data", destination=None, used=used, ts=ts)


def test_allowance_period_changed_to_a_later_period_refills():
    acct = account()
    decide([_data_event("e1", "2026-11-24T10:00:00+01:00", GiB)], {"a": acct},
           catalogs=_WEEKLY)
    assert acct.allowances["data"][0].units == 0  # the week's 1 GiB is used up
    # the new catalog gives it per month; 15 December is in a later month than the week of
    # 24 November began in ("2026-12" > "2026-W48" as text was False: no refill till 2027)
    out = one(_data_event("e2", "2026-12-15T10:00:00+01:00", MiB), acct, catalogs=_MONTHLY_B)
    assert out.record()["decision"]["charged"] == "0.0000" and out.charge.allowance_units == MiB
    assert acct.allowances["data"][0].units == GiB - MiB
    assert acct.allowances["data"][0].period == "2026-12"


def test_allowance_period_changed_within_the_same_period_keeps_what_is_left():
    acct = account()
    decide([_data_event("e1", "2026-11-24T10:00:00+01:00", GiB)], {"a": acct},
           catalogs=_WEEKLY)
    # still November, the month the used-up week began in: nothing new to give yet
    out = one(_data_event("e2", "2026-11-27T10:00:00+01:00", MiB), acct, catalogs=_MONTHLY_B)
    assert out.charge.allowance_units == 0 and out.decision.charged > 0
    assert acct.allowances["data"][0].period == "2026-11"  # relabelled: refills in December
    out = one(_data_event("e3", "2026-12-01T10:00:00+01:00", MiB), acct, catalogs=_MONTHLY_B)
    assert out.charge.allowance_units == MiB


def test_free_units_are_capped_where_the_kernels_int64_ends():
    # buckets kept from an older catalog can hold more than one catalog may give
    acct = account()
    acct.allowances["data"] = [Bucket(units=2**62, period="2026-11") for _ in range(4)]
    line = "      - {service: data, units: 1073741824, period: month}"
    four = load(SAMPLE_TEXT.replace(line, "\n".join([line] * 4)))[2]
    # 4 * 2**62 = 2**64 free units: beyond int64 (and uint64), grant_at raised a TypingError
    out = one(req("i", "initial", service="data", destination=None, requested=2**40), acct,
              catalogs=four)
    assert out.decision.result == "SUCCESS" and out.decision.granted == 2**40


def test_a_step_naming_another_service_is_charged_under_the_sessions():
    acct = account()
    outs, _ = decide([req("s:0", "initial", session="s", seq=0),
                      req("s:1", "update", service="sms", session="s", seq=1, used=30)],
                     {"a": acct})
    decision, charge = outs[1].decision, outs[1].record()["charge"]
    assert decision.service == "sms"  # the decision echoes the request
    assert charge["service"] == "voice"  # was "sms": voice seconds booked as SMS
    assert (charge["tariff"], charge["rate"]) == ("VOICE_STD", "mobile_peak")
    assert amount(charge["cost"]) == 150_000  # 30 s of voice at mobile_peak


def test_a_session_whose_catalog_version_is_gone_is_not_rated_at_another_versions_prices():
    # CONTRACT §4.2: a session is rated with the rate selected at its initial; with that
    # version unavailable the step answers RATING_FAILED (it was rated at v2's 0.15/min)
    v2 = (SAMPLE_TEXT.replace(f'version: "{VERSION}"', 'version: "v2"')
          .replace('price: "0.12"', 'price: "0.15"'))
    acct = account("10.00")
    acct.sessions["s"] = Session(id="s", service="voice", catalog_version=VERSION,
                                 tariff="VOICE_STD", rate_id="mobile", last_seen_ms=NOW)
    out = one(req("u", "terminate", ts=SAT_10, used=60), acct, catalogs=load(v2)[2])
    assert (out.decision.result, out.record()["decision"]["charged"], out.charge) == \
        ("RATING_FAILED", "0.00", None)
    assert acct.balance == eur("10.00")


def test_a_late_request_after_a_period_change_does_not_move_the_bucket_back():
    week = (SAMPLE_TEXT.replace(f'version: "{VERSION}"', 'version: "w"')
            .replace("units: 1073741824, period: month", "units: 1048576, period: week"))
    month = (SAMPLE_TEXT.replace(f'version: "{VERSION}"', 'version: "m"')
             .replace("units: 1073741824, period: month", "units: 1048576, period: month"))
    cats = FixedCatalogs(load(month)[1], older=(load(week)[1],))
    acct = account("10.00")
    acct.allowances = {"data": [Bucket(units=0, period="2026-W50")]}  # 7 Dec's week, used up
    one(_data_event("late", "2026-11-20T10:00:00+01:00", 0), acct, catalogs=cats)
    assert acct.allowances["data"][0].period == "2026-12"  # not November's label
    out = one(_data_event("e", "2026-12-15T10:00:00+01:00", MiB), acct, catalogs=cats)
    assert out.charge.allowance_units == 0  # was refilled: a second allowance in December
    d = out.record()["decision"]
    assert (d["charged"], d["balance"]) == ("0.0100", "9.99")


def test_refusals_show_charged_in_the_tariffs_decimals_where_a_tariff_applies():
    """``charged`` has the tariff's decimals (README), refusals included; where no tariff
    applies (no account, a service outside the plan) two."""
    poor = account("0.05")  # an SMS costs 0.09
    d = one(req("e1", "event", service="sms", destination=None, used=1), poor).record()["decision"]
    assert (d["result"], d["charged"]) == ("CREDIT_LIMIT_REACHED", "0.0000")  # SMS_STD: 4
    assert SAMPLE.tariffs["SMS_STD"].decimals == 4
    d = one(req("e2", "event", service="mms", destination=None, used=1), poor).record()["decision"]
    assert (d["result"], d["charged"]) == ("END_USER_SERVICE_DENIED", "0.00")
    d = one(req("e3", "event", service="sms", account="ghost", used=1), None).record()["decision"]
    assert (d["result"], d["charged"]) == ("USER_UNKNOWN", "0.00")
