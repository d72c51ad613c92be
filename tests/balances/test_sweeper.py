"""Sessions silent for 2 × validity are released by ``sweep`` (CONTRACT §4.2): reservation
and allowance units return, a ``release`` ledger entry records it; fresh sessions stay; a
sweep racing a charge loses neither change.
"""

from __future__ import annotations

import threading

from balances.sweeper import sweep
from tests.conftest import T0_MS, Rig, req

VALIDITY_MS = 600 * 1000
SILENT_MS = 2 * VALIDITY_MS


def books(r: Rig, name: str) -> None:
    acct = r.store.view(name)
    assert sum(e["delta"] for e in r.store.ledger(name)) == acct.balance
    assert acct.reserved == sum(s.money_reserved for s in acct.sessions.values())
    for service, buckets in acct.allowances.items():
        held = sum(s.allowance_reserved[0] for s in acct.sessions.values()
                   if s.service == service and s.allowance_reserved)
        assert buckets[0].reserved == held
    assert set(r.expiry_members(name)) == {f"{name}\x1f{s}" for s in acct.sessions}


def test_silent_sessions_are_released_and_fresh_ones_kept(rig):
    r = rig(accounts="[{id: a, plan: PREPAID_S, balance: '10.00'}]")
    r.charge(req(id="v:0", kind="initial", account="a", service="voice", session="v"),
             req(id="d:0", kind="initial", account="a", service="data", session="d"))
    r.clock.advance(VALIDITY_MS)
    r.one(req(id="f:0", kind="initial", account="a", service="voice", session="f"))
    before = r.store.view("a")
    held_v = before.sessions["v"].money_reserved
    assert held_v == 510_000 and before.allowances["data"][0].reserved == 10_485_760

    raw = r.raw("a")
    assert sweep(r.store, T0_MS + SILENT_MS - 1) == 0  # not silent long enough yet
    assert r.raw("a") == raw

    assert sweep(r.store, T0_MS + SILENT_MS) == 2
    after = r.store.view("a")
    assert set(after.sessions) == {"f"}
    assert after.balance == before.balance == 10_000_000
    assert after.reserved == after.sessions["f"].money_reserved == held_v
    assert after.allowances["data"][0].reserved == 0
    releases = [e for e in r.store.ledger("a") if e["reason"] == "release"]
    assert sorted((e["id"], e["delta"], int(e["released"])) for e in releases) == [
        ("release:d", 0, 0), ("release:v", 0, held_v)]
    assert all(e["catalog_version"] == r.catalog.version for e in releases)
    assert set(r.expiry_members("a")) == {"a\x1ff"}
    books(r, "a")
    assert sweep(r.store, T0_MS + SILENT_MS) == 0  # nothing twice

    # a late report of a released session is charged like an event, SESSION_UNKNOWN
    r.clock.advance(SILENT_MS)
    late = r.one(req(id="v:1", kind="update", account="a", service="voice", session="v",
                     used=61))
    assert late.decision.result == "SESSION_UNKNOWN"
    assert late.record()["decision"]["charged"] == "0.1515"
    books(r, "a")


def test_a_session_reporting_in_time_is_not_released(rig):
    r = rig(accounts="[{id: a, plan: PREPAID_S, balance: '10.00'}]")
    r.one(req(id="v:0", kind="initial", account="a", service="voice", session="v"))
    r.clock.advance(SILENT_MS - 1)
    r.one(req(id="v:1", kind="update", account="a", service="voice", session="v", used=10))
    # the update left the index at the opening's deadline; the sweep finds the session
    # alive and moves its entry to the real deadline
    assert r.expiry_members("a") == {"a\x1fv": float(T0_MS + SILENT_MS)}
    assert sweep(r.store, T0_MS + SILENT_MS + 1) == 0
    assert "v" in r.store.view("a").sessions
    assert r.expiry_members("a") == {"a\x1fv": float(T0_MS + 2 * SILENT_MS - 1)}
    assert sweep(r.store, T0_MS + 2 * SILENT_MS - 2) == 0
    assert sweep(r.store, T0_MS + 2 * SILENT_MS - 1) == 1
    books(r, "a")


def test_sweep_pages_past_live_sessions_to_the_silent_ones(rig):
    """A page full of sessions that reported since their index entry was written does not
    hide the silent ones behind it."""
    r = rig(accounts="[{id: a, plan: PREPAID_S, balance: '50.00'}, "
                     "{id: b, plan: PREPAID_S, balance: '50.00'}]")
    r.charge(*[req(id=f"l{i}:0", kind="initial", account="a", service="sms", session=f"l{i}")
               for i in range(5)])
    r.clock.advance(1)
    r.charge(req(id="q:0", kind="initial", account="b", service="sms", session="q"))
    r.clock.advance(SILENT_MS - 2)
    r.charge(*[req(id=f"l{i}:1", kind="update", account="a", service="sms", session=f"l{i}",
                   used=1) for i in range(5)])
    # index entries in score order: a's l0..l4 (alive: they reported just now), then b's q
    assert sweep(r.store, T0_MS + SILENT_MS + 1, limit=2, pages=1) == 0
    assert sweep(r.store, T0_MS + SILENT_MS + 1, limit=2) == 1
    assert set(r.store.view("a").sessions) == {f"l{i}" for i in range(5)}
    assert r.store.view("b").sessions == {}
    books(r, "a")
    books(r, "b")


def test_sweep_limit_releases_in_parts(rig):
    r = rig(accounts="[{id: a, plan: PREPAID_S, balance: '10.00'}, "
                     "{id: b, plan: PREPAID_S, balance: '10.00'}]")
    r.charge(*[req(id=f"{a}{i}:0", kind="initial", account=a, service="sms",
                   session=f"{a}{i}") for a in "ab" for i in range(3)])
    # ``limit`` bounds the sessions looked up; their accounts' silent sessions all go
    first = sweep(r.store, T0_MS + SILENT_MS, limit=2, pages=1)
    assert 2 <= first <= 6
    assert first + sweep(r.store, T0_MS + SILENT_MS, limit=10) == 6
    for a in "ab":
        assert r.store.view(a).sessions == {} and r.store.view(a).reserved == 0
        books(r, a)


def test_a_warm_charger_sees_what_the_sweep_released(rig):
    r = rig(accounts="[{id: a, plan: PREPAID_S, balance: '1.10'}]")
    r.charge(req(id="v:0", kind="initial", account="a", service="voice", session="v"),
             req(id="w:0", kind="initial", account="a", service="voice", session="w"))
    assert r.store.view("a").reserved == 2 * 510_000  # 0.08 left: not enough for 2 SMS
    r.clock.advance(SILENT_MS)
    assert sweep(r.store, r.clock.now_ms) == 2
    # the charger still caches both sessions; its write conflicts and it decides again
    outs = r.charge(
        req(id="e1", kind="event", account="a", service="sms", used=2),
        req(id="v:1", kind="update", account="a", service="voice", session="v", used=30))
    assert outs[0].decision.result == "SUCCESS"  # the released money is available again
    assert outs[1].decision.result == "SESSION_UNKNOWN"
    acct = r.store.view("a")
    assert acct.sessions == {} and acct.reserved == 0
    assert outs[1].record()["decision"]["charged"] == "0.1500"
    assert acct.balance == 1_100_000 - 180_000 - 150_000
    assert [e["reason"] for e in r.store.ledger("a")] == [
        "open", "release", "release", "event", "unknown_session"]
    books(r, "a")


def test_sweeps_racing_charges_lose_nothing(rig):
    names = ["a", "b", "c"]
    r = rig(accounts="\n".join(f'{{"id": "{n}", "plan": "PREPAID_S", "balance": "30.00"}}'
                               for n in names))
    old = [f"{n}-old{i}" for n in names for i in range(6)]
    r.charge(*[req(id=f"{s}:0", kind="initial", account=s.split("-")[0], service="voice",
                   session=s) for s in old])
    r.clock.advance(SILENT_MS + 1000)  # every "old" session is silent now; new ones are not
    now = r.clock.now_ms
    outcomes = []
    done = threading.Event()
    errors: list[BaseException] = []
    released = [0]

    def charging():
        try:
            for k in range(30):
                batch = [req(id=f"e{k}{n}", kind="event", account=n, service="sms", used=1)
                         for n in names]
                batch.append(req(id=f"new{k}:0", kind="initial", account=names[k % 3],
                                 service="voice", session=f"new{k}"))
                outcomes.extend(r.charge(*batch))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    def sweeping():
        try:
            while not done.is_set():
                released[0] += sweep(r.store, now)
            released[0] += sweep(r.store, now)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=charging), threading.Thread(target=sweeping)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert released[0] == len(old)
    for n in names:
        acct = r.store.view(n)
        ledger = r.store.ledger(n)
        rel = sorted(e["id"] for e in ledger if e["reason"] == "release")
        assert rel == sorted(f"release:{s}" for s in old if s.startswith(f"{n}-"))
        assert set(acct.sessions) == {o.request.session for o in outcomes
                                      if o.request.account == n and o.request.kind == "initial"
                                      and o.decision.result == "SUCCESS"}
        taken = sum(o.decision.charged for o in outcomes if o.request.account == n)
        assert acct.balance == r.initial[n] - taken
        books(r, n)


def test_request_ids_cannot_break_the_sweeper(rig):
    r = rig(accounts="[{id: a, plan: PREPAID_S, balance: '10.00'}]")
    r.one(req(id="v:0", kind="initial", account="a", service="voice", session="v"))
    r.one(req(id="odd}:expiry", kind="event", account="a", service="sms", used=1))
    assert sweep(r.store, T0_MS + SILENT_MS) == 1


def test_one_unreadable_account_does_not_hold_the_others_reservations(rig, caplog):
    r = rig(accounts="[{id: a, plan: PREPAID_S, balance: '10.00'}, "
                     "{id: b, plan: PREPAID_S, balance: '10.00'}]")
    r.charge(req(id="a0", kind="initial", account="a", service="voice", session="va"),
             req(id="b0", kind="initial", account="b", service="voice", session="vb"))
    r.client.hset(r.store.keys.account("a"), "s:va", b"\xc1 not msgpack")
    assert sweep(r.store, T0_MS + SILENT_MS) == 1  # b's; a is skipped and logged
    b = r.store.view("b")
    assert "vb" not in b.sessions and b.reserved == 0
    assert "sweep skips it" in caplog.text and "'a'" in caplog.text
