"""``charging.columnar.decide_columnar`` against its oracle, ``charging.decide.decide_batch``.

The differential test draws account states (balances from 0 up, allowed to go negative or
not, open sessions holding money and allowance units, blocked accounts, accounts that do
not exist, buckets of an earlier month, sessions of a catalog version that is gone) and
batches over them (every kind, unknown sessions, restarted session ids, repeated ids,
replays, values past what the kernel takes), decides each batch both ways on deep copies
and asserts the same outcomes, changes and accounts — sessions in the same order.
"""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from bench.store import Workload
from charging.columnar import decide_columnar
from charging.decide import FixedCatalogs, decide_batch
from charging.records import Decision, Result, Stored
from charging.requests import Request
from charging.state import Account, Bucket, Session

from .decide_helpers import (
    LANDLINE,
    MOBILE,
    NOSMS_TEXT,
    NOW,
    SAT_10,
    TUE_10,
    GiB,
    MiB,
    load,
    ms,
)

_, CURRENT, _ = load(NOSMS_TEXT)
CATALOGS = FixedCatalogs(CURRENT)
VERSION = CURRENT.version
NAMES = ("p0", "p1", "p2", "p3", "ghost", "missing")  # ghost: None in the map; missing: absent
SIDS = ("s0", "s1", "s2", "s3")
#: Tuesday and Saturday of November (the buckets' month), and December (a refill)
TIMES = (ms(TUE_10), ms(SAT_10), ms("2026-11-24T21:30:00+01:00"),
         ms("2026-12-01T10:00:00+01:00"))
DESTINATIONS = (MOBILE, LANDLINE, None, "4915000")
#: the session's rate per service, with the tariff it belongs to
SESSION_RATES = {"voice": ("VOICE_STD", ("mobile_peak", "mobile", "other")),
                 "data": ("DATA_STD", ("data",)), "sms": ("SMS_STD", ("sms",))}
HUGE = (2**52, 2**53 - 1, 2**60)

small_money = st.one_of(st.sampled_from([0, 1, 90_000, 150_000, 510_000]),
                        st.integers(0, 3_000_000), st.integers(0, 30_000_000))


@st.composite
def sessions(draw, sid: str, bucket: Bucket | None) -> Session:
    service = draw(st.sampled_from(["voice", "voice", "data", "sms"]))
    tariff, rates = SESSION_RATES[service]
    version = VERSION if draw(st.integers(0, 9)) else "gone"
    chargeable = draw(st.one_of(st.integers(0, 4000), st.integers(0, 3 * GiB)))
    held: list[int] = []
    if service == "data" and bucket is not None:
        units = draw(st.integers(0, max(0, bucket.units - bucket.reserved)))
        bucket.reserved += units
        held = [units]
    return Session(id=sid, service=service, catalog_version=version, tariff=tariff,
                   rate_id=draw(st.sampled_from(rates)), chargeable=chargeable,
                   used=chargeable + draw(st.integers(0, 1000)),
                   granted=draw(st.integers(0, 700)), money_reserved=draw(small_money),
                   allowance_reserved=held, validity_s=600,
                   last_seen_ms=NOW - draw(st.integers(0, 10**6)),
                   seq=draw(st.integers(0, 20)))


@st.composite
def accounts(draw, name: str) -> Account:
    balance = draw(st.one_of(small_money, st.integers(-3_000_000, 0), st.sampled_from(HUGE)))
    acct = Account(id=name, plan=draw(st.sampled_from(["PREPAID_S", "PREPAID_S", "NOSMS"])),
                   balance=balance, allow_negative=draw(st.integers(0, 3)) == 0,
                   status="blocked" if draw(st.integers(0, 7)) == 0 else "active")
    if acct.plan == "PREPAID_S" and draw(st.integers(0, 5)):
        units = draw(st.one_of(st.integers(0, 4 * MiB), st.just(GiB), st.integers(0, GiB)))
        period = "2026-11" if draw(st.integers(0, 5)) else "2026-10"
        acct.allowances["data"] = [Bucket(units=units, period=period)]
    bucket = acct.allowances.get("data", [None])[0]
    for sid in draw(st.lists(st.sampled_from(SIDS), max_size=3, unique=True)):
        acct.sessions[sid] = draw(sessions(sid, bucket))
    if bucket is not None and draw(st.integers(0, 5)) == 0:
        bucket.units = draw(st.integers(0, bucket.units))  # a smaller allowance than held
    acct.reserved = sum(s.money_reserved for s in acct.sessions.values())
    if draw(st.integers(0, 19)) == 0:
        acct.reserved = draw(st.sampled_from(HUGE))
    return acct


@st.composite
def requests(draw, n: int) -> list[Request]:
    out = []
    for k in range(n):
        kind = draw(st.sampled_from(["initial", "update", "update", "terminate", "event"]))
        service = draw(st.sampled_from(["voice", "voice", "data", "sms", "mms"]))
        if service == "data":
            used = draw(st.one_of(st.integers(0, 4 * MiB), st.integers(0, 3 * GiB)))
            requested = draw(st.one_of(st.just(0), st.integers(1, 64 * MiB), st.just(GiB)))
        else:
            used = draw(st.one_of(st.integers(0, 120), st.integers(0, 4000),
                                  st.sampled_from([0, 1, 59, 60, 61, 3294])))
            requested = draw(st.one_of(st.just(0), st.integers(1, 700)))
        if draw(st.integers(0, 29)) == 0:
            used = draw(st.sampled_from((*HUGE, 2**40)))
        if draw(st.integers(0, 29)) == 0:
            requested = draw(st.sampled_from((*HUGE, 2**40)))
        rid = f"r{k}"
        if out and draw(st.integers(0, 14)) == 0:
            rid = draw(st.sampled_from(out)).id  # a repeated id (the same account or not)
        session = None if kind == "event" else draw(st.sampled_from(SIDS))
        seq = None if kind == "event" or draw(st.integers(0, 5)) == 0 else \
            draw(st.integers(0, 30))
        out.append(Request(id=rid, kind=kind, account=draw(st.sampled_from(NAMES)),
                           service=service, ts_ms=draw(st.sampled_from(TIMES)), used=used,
                           requested=requested, session=session, seq=seq,
                           destination=draw(st.sampled_from(DESTINATIONS))))
    return out


@st.composite
def batches(draw):
    state: dict[str, Account | None] = {name: draw(accounts(name)) for name in NAMES[:4]}
    state["ghost"] = None
    reqs = draw(requests(draw(st.integers(1, 40))))
    previous = {}
    for r in draw(st.lists(st.sampled_from(reqs), max_size=2)):
        first = Decision(r.id, r.kind, r.account, r.service, r.session, r.seq,
                         Result.SUCCESS, balance=0)
        previous[(r.account, r.id)] = Stored(first, None)
    return state, reqs, previous


def _sessions_in_order(state: dict) -> dict:
    return {name: None if a is None else list(a.sessions) for name, a in state.items()}


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batches())
def test_decide_columnar_is_decide_batch(batch):
    state, reqs, previous = batch
    for r in reqs:
        note(f"{r}")
    oracle_state, state = copy.deepcopy(state), copy.deepcopy(state)
    expected, expected_changes = decide_batch(reqs, oracle_state, CATALOGS, NOW, previous)
    stats: dict[str, int] = {}
    got, changes = decide_columnar(reqs, state, CATALOGS, NOW, previous, stats=stats)
    event(f"fast share {10 * stats['fast'] // len(reqs) * 10} %")
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == e
        assert g.record() == e.record()
    assert changes == expected_changes
    assert state == oracle_state
    assert _sessions_in_order(state) == _sessions_in_order(oracle_state)
    assert stats["fast"] + stats["slow"] == len(reqs)


def test_a_fresh_prepaid_batch_is_decided_by_the_kernel():
    """bench/store.py's mix (70 % update, 15 % initial, 10 % terminate, 5 % event) over
    accounts whose allowances are of this month: >= 95 % of requests take the kernel."""
    work = Workload(accounts=1000, seed=3)
    state: dict[str, Account | None] = {
        f"a{k}": Account(f"a{k}", "PREPAID_S", 50_000_000,
                         allowances={"data": [Bucket(units=GiB, period="2026-11")]})
        for k in range(1000)}
    stats: dict[str, int] = {}
    for _ in range(8):
        reqs = [work.next() for _ in range(512)]
        oracle = copy.deepcopy(state)
        expected, expected_changes = decide_batch(reqs, oracle, CATALOGS, NOW)
        got, changes = decide_columnar(reqs, state, CATALOGS, NOW, stats=stats)
        assert got == expected and changes == expected_changes and state == oracle
    assert stats["fast"] >= 0.95 * (stats["fast"] + stats["slow"]), stats
