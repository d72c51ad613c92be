"""CONTRACT §4.2 through ``Charger.charge`` on a real Redis: one suite, run against a
standalone server and against a 3-master Redis Cluster (the ``store_client`` param).

Every test checks, besides the decision, what was persisted: the account hash, the ledger
(Σ deltas including the ``open`` entry == balance, exactly), the stored decision and the
session expiry index.
"""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster

from balances.accounts import parse_accounts
from balances.codec import decode_record
from balances.sweeper import sweep
from balances.topups import MAX_ID_RETENTION_S, Topup
from tests.conftest import T0_MS, Rig, req

BOTH = ["standalone", "cluster"]
#: tests that persist charges, on both kinds of Redis
charging_on = pytest.mark.parametrize(
    "store_client", BOTH, indirect=True)

ONE = "[{id: a, plan: PREPAID_S, balance: '10.00'}]"


def peak(u: int) -> int:
    """rating(u) of mobile_peak in micros: 0.05 + 0.10 (first minute) + 0.0015/s after."""
    if u == 0:
        return 0
    return min(150_000 + 1_500 * max(0, u - 60), 5_000_000)


@pytest.fixture(params=BOTH)
def store_client(request):
    if request.param == "cluster":
        return request.getfixturevalue("redis_cluster")
    return request.getfixturevalue("redis_client")


@pytest.fixture
def make(rig, store_client):
    """``make(accounts)``: a rig on the parametrised server (catalog fixed in memory on the
    cluster, where ``load_catalog_text`` does not work: see tests/catalog_cache)."""

    def build(accounts: str = ONE, **kw) -> Rig:
        kind = "fixed" if isinstance(store_client, RedisCluster) else "cache"
        return rig(client=store_client, accounts=accounts, catalogs=kind, **kw)

    return build


def check_books(r: Rig, account: str) -> None:
    """The persisted account agrees with itself: ledger, reservations, expiry index."""
    acct = r.store.view(account)
    assert acct is not None
    ledger = r.store.ledger(account)
    assert ledger[0]["id"] == "open" and ledger[0]["reason"] == "open"
    assert sum(e["delta"] for e in ledger) == acct.balance
    running = 0
    for e in ledger:  # each entry's balance is the running sum
        running += e["delta"]
        assert e["balance"] == running, e
    assert acct.reserved == sum(s.money_reserved for s in acct.sessions.values())
    for service, buckets in acct.allowances.items():
        for k, bucket in enumerate(buckets):
            held = sum(s.allowance_reserved[k] for s in acct.sessions.values()
                       if s.service == service and len(s.allowance_reserved) > k)
            assert bucket.reserved == held, (service, k)
    members = r.expiry_members(account)
    assert set(members) == {f"{account}\x1f{sid}" for sid in acct.sessions}
    for sid, s in acct.sessions.items():  # a lower bound: updates do not move it
        assert members[f"{account}\x1f{sid}"] <= s.deadline_ms
    if not acct.allow_negative:
        assert acct.balance >= 0 and acct.balance - acct.reserved >= 0


def stored(r: Rig, account: str, request_id: str) -> dict:
    blob = r.decision(account, request_id)
    assert blob is not None, f"no stored decision for {request_id}"
    return decode_record(blob)["decision"]


# -- administration: works on both -------------------------------------------------------

def test_upsert_creates_with_open_entry_and_updates_without_touching_balance(make):
    r = make("[{id: a, plan: PREPAID_S, balance: '10.50'}, "
             "{id: b, plan: VOICE_ONLY, balance: '0', allow_negative: true}]")
    a, b = r.store.view("a"), r.store.view("b")
    assert (a.plan, a.balance, a.status, a.allow_negative, a.reserved) == (
        "PREPAID_S", 10_500_000, "active", False, 0)
    assert (b.plan, b.balance, b.allow_negative) == ("VOICE_ONLY", 0, True)
    assert [(e["id"], e["delta"], e["reason"]) for e in r.store.ledger("a")] == [
        ("open", 10_500_000, "open")]
    created, updated = r.store.upsert_accounts(parse_accounts(
        "[{id: a, plan: DAILY_SMS, balance: '99.00', status: blocked}]", r.catalog))
    assert (created, updated) == (0, 1)
    a2 = r.store.view("a")
    assert (a2.plan, a2.status, a2.balance) == ("DAILY_SMS", "blocked", 10_500_000)
    assert a2.version > a.version
    assert len(r.store.ledger("a")) == 1
    assert r.store.view("nobody") is None


@charging_on
def test_versions_come_from_the_server_clock_and_never_repeat(make):
    # every writer (accounts load, a top-up, a charge, a sweep's release) sets
    # max(old + 1, server time in µs): so an account rolled back to an old state (Redis
    # lost writes) and changed again never shows a version a cached state may hold
    r = make()
    node = (r.client.get_node_from_key(r.store.keys.account("a")).redis_connection
            if isinstance(r.client, RedisCluster) else r.client)
    sec, usec = node.time()
    versions = [r.store.view("a").version]
    r.store.topup("a", 1_000_000)
    versions.append(r.store.view("a").version)
    r.one(req(id="e1", kind="event", account="a", service="sms", used=1))
    versions.append(r.store.view("a").version)
    r.store.upsert_accounts(parse_accounts("[{id: a, plan: DAILY_SMS, balance: '1'}]",
                                           r.catalog))
    versions.append(r.store.view("a").version)
    assert versions == sorted(set(versions))  # strictly increasing
    assert sec * 10**6 + usec - 60 * 10**6 < versions[-1] < 2**53  # server µs, exact in Lua
    # as a restore would: the account back at the version of after the top-up
    r.client.hset(r.store.keys.account("a"), "ver", versions[1])
    r.store.topup("a", 1_000_000)
    assert r.store.view("a").version > versions[-1]
    check_books(r, "a")


@pytest.mark.parametrize("ver", [b"-1", str(2**53 - 1).encode(), b"1e3"])
def test_a_version_outside_the_exact_range_is_corrupt_not_guessed(make, ver):
    from charging.errors import CorruptAccountError

    r = make()
    r.client.hset(r.store.keys.account("a"), "ver", ver)
    with pytest.raises(CorruptAccountError):
        r.store.view("a")
    assert r.store.topup("a", 1_000_000) == Topup("corrupt")


@pytest.mark.parametrize("store_client", BOTH, indirect=True)
def test_topup_without_id_is_ledgered(make):
    r = make()
    assert r.store.topup("a", 2_500_000) == Topup("ok", 12_500_000)
    assert r.store.topup("a", -500_000) == Topup("ok", 12_000_000)
    assert r.store.topup("nobody", 1) == Topup("unknown")
    assert [(e["delta"], e["reason"]) for e in r.store.ledger("a")][1:] == [
        (2_500_000, "topup"), (-500_000, "topup")]
    check_books(r, "a")


def test_topup_with_id_applies_once(make):
    r = make()
    assert r.store.topup("a", 1_000_000, topup_id="t1") == Topup("ok", 11_000_000)
    assert r.store.topup("a", 1_000_000, topup_id="t1") == Topup("replay", 11_000_000,
                                                                 id_amount=1_000_000)
    # the same id with another amount is not that top-up again (it was a replay on 1d4aa33)
    assert r.store.topup("a", 7_000_000, topup_id="t1") == Topup("conflict", 11_000_000,
                                                                 id_amount=1_000_000)
    assert r.store.view("a").balance == 11_000_000
    assert len(r.store.ledger("a")) == 2
    check_books(r, "a")
    # the id is remembered as long as the ledger keeps entries (90 days by default), not
    # the 7 days of request ids: a payment id may come again long after
    ttl = r.client.ttl(r.store.keys.topup("a", "t1"))
    assert r.store.ledger_retention_s - 60 < ttl <= r.store.ledger_retention_s
    assert r.store.ledger_retention_s > r.store.retention_s


def test_topup_ids_can_be_kept_for_ever_or_for_a_given_time(make):
    r = make()
    assert r.store.topup("a", 1_000_000, topup_id="t1", id_retention_s=0) == \
        Topup("ok", 11_000_000)
    assert r.client.ttl(r.store.keys.topup("a", "t1")) == -1  # no expiry
    assert r.store.topup("a", 1_000_000, topup_id="t1").status == "replay"
    assert r.store.topup("a", 1_000_000, topup_id="t2", id_retention_s=100) == Topup(
        "ok", 12_000_000)
    assert 90 < r.client.ttl(r.store.keys.topup("a", "t2")) <= 100
    r.store.ledger_retention_s = 0  # the default follows the ledger's: for ever here
    assert r.store.topup("a", 1_000_000, topup_id="t3") == Topup("ok", 13_000_000)
    assert r.client.ttl(r.store.keys.topup("a", "t3")) == -1


@pytest.mark.parametrize("ver", [b"+5", b"007", b"9223372036854775807"])
def test_a_topup_writes_all_or_nothing_on_a_version_it_cannot_use(make, ver):
    # read by the engine (int()), refused by HINCRBY: the balance was written first, then
    # the script failed, leaving a credit with no ledger entry and no remembered id (review 7);
    # the script now checks the version first (digits, below 2**53 - 1) and writes nothing
    r = make()
    key = r.store.keys.account("a")
    r.client.hset(key, "ver", ver)
    before, ledger = r.client.hgetall(key), r.store.ledger("a")
    assert r.store.topup("a", 1_000_000, topup_id="pay-1") == Topup("corrupt")
    assert r.client.hgetall(key) == before and r.store.ledger("a") == ledger


def test_a_topup_refuses_a_ledger_key_of_another_type_before_writing(make):
    r = make()
    key, ledger_key = r.store.keys.account("a"), r.store.keys.ledger("a")
    r.client.delete(ledger_key)
    r.client.set(ledger_key, b"not a stream")
    before = r.client.hgetall(key)
    assert r.store.topup("a", 1_000_000) == Topup("corrupt")
    assert r.client.hgetall(key) == before


@pytest.mark.parametrize("retention", [10**16, -1, 0.5, MAX_ID_RETENTION_S + 1])
def test_a_topup_id_retention_out_of_range_is_refused_before_anything(make, retention):
    # SET EX refused 10**16 only after the balance, version and ledger were written: every
    # retry of the same payment id credited again (review 7)
    r = make()
    with pytest.raises(ValueError, match="retention"):
        r.store.topup("a", 1_000_000, topup_id="pay-1", id_retention_s=retention)
    assert r.store.view("a").balance == 10_000_000 and len(r.store.ledger("a")) == 1
    assert r.store.topup("a", 1_000_000, topup_id="pay-1",
                         id_retention_s=MAX_ID_RETENTION_S) == Topup("ok", 11_000_000)


@charging_on
def test_topup_debit_may_not_take_reserved_or_pass_zero(make):
    # each refusal is told apart, with the amounts (both were "limit" on 1d4aa33)
    r = make()
    assert r.store.topup("a", -10_000_001, topup_id="d1") == Topup("negative", 10_000_000, 0)
    r.one(req(id="s1:0", kind="initial", account="a", service="voice", session="s1"))
    assert r.store.topup("a", -9_500_000, topup_id="d1") == Topup("reserved", 10_000_000,
                                                                  peak(300))
    assert r.store.view("a").balance == 10_000_000
    assert len(r.store.ledger("a")) == 1
    assert r.store.topup("a", -(10_000_000 - peak(300)), topup_id="d1") == Topup("ok", peak(300))
    check_books(r, "a")


def test_topup_beyond_the_exact_range_is_refused_untouched(make):
    # 2**53 + 1 micros: the script's Lua numbers would round it by a micro, so an account
    # allowed to go negative would be credited less than its ledger entry says
    r = make("[{id: n, plan: VOICE_ONLY, balance: '-1.00', allow_negative: true}]")
    assert r.store.topup("n", 2**53 + 1) == Topup("limit")
    assert r.store.topup("n", -(2**53 + 1), topup_id="x") == Topup("limit")
    assert r.store.view("n").balance == -1_000_000
    assert len(r.store.ledger("n")) == 1
    assert r.store.topup("n", 2**53 - 1) == Topup("ok", 2**53 - 1 - 1_000_000)  # the edge
    check_books(r, "n")


# -- charging ------------------------------------------------------------------------------

@charging_on
def test_initial_reserves_the_grant_and_indexes_the_session(make):
    r = make()
    out = r.one(req(id="s1:0", kind="initial", account="a", service="voice", session="s1"))
    assert out.record()["decision"] == {
        "id": "s1:0", "kind": "initial", "account": "a", "service": "voice", "session": "s1",
        "seq": 0, "result": "SUCCESS", "granted": 300, "validity_s": 600, "final": False,
        "balance": "10.00", "charged": "0.0000"}
    assert out.charge is None and out.ledger == []
    acct = r.store.view("a")
    s = acct.sessions["s1"]
    assert (s.rate_id, s.catalog_version, s.granted, s.money_reserved, s.chargeable) == (
        "mobile_peak", r.catalog.version, 300, peak(300), 0)
    assert acct.reserved == peak(300) == 510_000 and acct.balance == 10_000_000
    assert r.expiry_members("a") == {"a\x1fs1": float(T0_MS + 2 * 600 * 1000)}
    assert stored(r, "a", "s1:0") == out.record()["decision"]
    check_books(r, "a")


@charging_on
def test_session_interim_charges_sum_to_one_rating(make):
    r = make()
    r.one(req(id="s:0", kind="initial", account="a", service="voice", session="s"))
    r.clock.advance(30_000)
    u1 = r.one(req(id="s:1", kind="update", account="a", service="voice", session="s", seq=1,
                   used=61))
    # the index keeps the deadline of the opening, a lower bound (the sweeper re-scores)
    assert r.expiry_members("a") == {"a\x1fs": float(T0_MS + 1_200_000)}
    assert r.store.view("a").sessions["s"].deadline_ms == T0_MS + 30_000 + 1_200_000
    u2 = r.one(req(id="s:2", kind="update", account="a", service="voice", session="s", seq=2,
                   used=59, requested=120))
    t = r.one(req(id="s:3", kind="terminate", account="a", service="voice", session="s",
                  seq=3, used=30))
    assert [o.record()["decision"]["charged"] for o in (u1, u2, t)] == [
        "0.1515", "0.0885", "0.0450"]
    assert sum(o.charge.cost for o in (u1, u2, t)) == peak(150)
    assert (u2.decision.granted, u2.decision.final) == (120, False)
    assert (t.decision.result, t.decision.granted, t.decision.validity_s) == (
        "SUCCESS", 0, 0)
    assert t.record()["decision"]["balance"] == "9.715"
    assert {o.charge.catalog_version for o in (u1, u2, t)} == {r.catalog.version}
    assert [o.charge.rate for o in (u1, u2, t)] == ["mobile_peak"] * 3
    acct = r.store.view("a")
    assert acct.sessions == {} and acct.reserved == 0 and acct.balance == 10_000_000 - 285_000
    assert r.expiry_members("a") == {}
    assert [(e["id"], e["delta"], e["reason"]) for e in r.store.ledger("a")[1:]] == [
        ("s:1", -151_500, "update"), ("s:2", -88_500, "update"), ("s:3", -45_000, "terminate")]
    check_books(r, "a")


@charging_on
def test_the_sweep_moves_a_reporting_session_to_its_deadline_and_releases_it_then(make):
    r = make()
    r.one(req(id="s:0", kind="initial", account="a", service="voice", session="s"))
    r.clock.advance(900_000)
    r.one(req(id="s:1", kind="update", account="a", service="voice", session="s", seq=1,
              used=60))
    check_books(r, "a")
    assert sweep(r.store, T0_MS + 1_200_000) == 0  # the opening's deadline: still alive
    assert r.expiry_members("a") == {"a\x1fs": float(T0_MS + 900_000 + 1_200_000)}
    assert sweep(r.store, T0_MS + 2_100_000) == 1
    assert r.store.view("a").sessions == {} and r.expiry_members("a") == {}
    check_books(r, "a")


@charging_on
def test_partial_grant_is_final_and_a_second_session_gets_credit_limit(make):
    r = make("[{id: a, plan: PREPAID_S, balance: '0.30'}]")
    out = r.one(req(id="s1:0", kind="initial", account="a", service="voice", session="s1",
                    requested=600))
    # rating(g) <= 0.30  <=>  0.15 + 0.0015 (g - 60) <= 0.30  <=>  g <= 160
    assert (out.decision.result, out.decision.granted, out.decision.final) == (
        "SUCCESS", 160, True)
    assert r.store.view("a").reserved == 300_000
    refused = r.one(req(id="s2:0", kind="initial", account="a", service="voice",
                        session="s2"))
    assert (refused.decision.result, refused.decision.granted,
            refused.decision.final) == ("CREDIT_LIMIT_REACHED", 0, True)
    acct = r.store.view("a")
    assert set(acct.sessions) == {"s1"} and acct.reserved == 300_000
    assert set(r.expiry_members("a")) == {"a\x1fs1"}
    # an event must not take the money reserved for s1
    ev = r.one(req(id="e1", kind="event", account="a", service="sms", used=1))
    assert ev.decision.result == "CREDIT_LIMIT_REACHED" and ev.charge is None
    assert stored(r, "a", "s2:0") == refused.record()["decision"]
    check_books(r, "a")


@charging_on
def test_event_beyond_the_balance_takes_nothing(make):
    r = make("[{id: a, plan: PREPAID_S, balance: '0.10'}]")
    out = r.one(req(id="e1", kind="event", account="a", service="sms", used=2))
    assert out.decision.result == "CREDIT_LIMIT_REACHED"
    assert out.decision.granted == 0 and out.decision.charged == 0
    assert out.charge is None and r.store.view("a").balance == 100_000
    assert len(r.store.ledger("a")) == 1
    ok = r.one(req(id="e2", kind="event", account="a", service="sms", used=1))
    okd, okc = ok.record()["decision"], ok.record()["charge"]
    assert (ok.decision.result, okd["charged"], okd["balance"]) == (
        "SUCCESS", "0.0900", "0.01")
    assert (okc["cost"], okc["uncharged"], ok.charge.rated_units) == (
        "0.0900", "0", 1)
    check_books(r, "a")


@charging_on
def test_unknown_account_changes_nothing(make):
    r = make()
    outs = r.charge(req(id="u1", kind="event", account="ghost", service="sms", used=1),
                    req(id="u2", kind="initial", account="ghost", service="voice",
                        session="g"))
    for out in outs:
        assert out.decision.result == "USER_UNKNOWN"
        assert out.decision.granted == 0 and out.record()["decision"]["balance"] is None
        assert out.charge is None and out.ledger == []
        assert stored(r, "ghost", out.request.id) == out.record()["decision"]
    assert not r.client.exists(r.store.keys.account("ghost"))
    assert not r.client.exists(r.store.keys.ledger("ghost"))
    assert r.expiry_members("ghost") == {}


@charging_on
def test_blocked_account_and_service_outside_the_plan_are_denied(make):
    r = make("[{id: b, plan: PREPAID_S, balance: '5.00', status: blocked}, "
             "{id: v, plan: VOICE_ONLY, balance: '5.00'}]")
    def state(a: str) -> dict:  # all but the version and the requests' records
        return {k: v for k, v in r.raw(a).items() if k != b"ver" and not k.startswith(b"i:")}

    before = {a: state(a) for a in ("b", "v")}
    outs = r.charge(
        req(id="b1", kind="event", account="b", service="sms", used=1),
        req(id="b2", kind="initial", account="b", service="voice", session="bs"),
        req(id="v1", kind="event", account="v", service="sms", used=1),
        req(id="v2", kind="initial", account="v", service="data", session="vs"))
    assert [o.decision.result for o in outs] == ["END_USER_SERVICE_DENIED"] * 4
    assert all(o.decision.granted == 0 and o.charge is None for o in outs)
    assert {a: state(a) for a in ("b", "v")} == before
    assert all(r.store.record(o.request.account, o.request.id) for o in outs)  # answered again
    assert r.expiry_members("b") == {} and r.expiry_members("v") == {}
    # unblocking is seen by the same (warm) Charger: its cached state is re-read
    r.add_accounts("[{id: b, plan: PREPAID_S, balance: '5.00', status: active}]")
    ok = r.one(req(id="b3", kind="event", account="b", service="sms", used=1))
    assert ok.decision.result == "SUCCESS" and ok.record()["decision"]["balance"] == "4.91"
    # and blocking again stops the warm Charger too
    r.add_accounts("[{id: b, plan: PREPAID_S, balance: '5.00', status: blocked}]")
    no = r.one(req(id="b4", kind="event", account="b", service="sms", used=1))
    assert no.decision.result == "END_USER_SERVICE_DENIED"
    assert r.store.view("b").balance == 4_910_000
    check_books(r, "b")


@charging_on
def test_allowance_first_then_money_and_daily_rollover_in_the_catalog_zone(make):
    r = make("[{id: a, plan: DAILY_SMS, balance: '1.00'}]")
    day1 = [r.one(req(id=f"d1-{i}", kind="event", account="a", service="sms", used=1))
            for i in range(3)]
    assert [(o.charge.allowance_units, o.record()["charge"]["cost"]) for o in day1] == [
        (1, "0.0000"), (1, "0.0000"), (0, "0.0900")]
    assert [o.ledger != [] for o in day1] == [False, False, True]
    # 23:30 UTC on the 24th is already the 25th in Europe/Berlin: a new day, a new allowance
    mixed = r.one(req(id="d2", kind="event", account="a", service="sms", used=3,
                      ts="2026-11-24T23:30:00Z"))
    assert (mixed.charge.units, mixed.charge.allowance_units, mixed.record()["charge"]["cost"],
            mixed.charge.rated_units) == (3, 2, "0.0900", 1)
    # a late report from the 24th does not bring the old period back
    late = r.one(req(id="d1-late", kind="event", account="a", service="sms", used=1))
    assert late.charge.allowance_units == 0 and late.record()["charge"]["cost"] == "0.0900"
    acct = r.store.view("a")
    assert acct.balance == 1_000_000 - 3 * 90_000
    (bucket,) = acct.allowances["sms"]
    assert (bucket.units, bucket.period) == (0, "2026-11-25")
    check_books(r, "a")


@charging_on
def test_session_reserves_allowance_before_money(make):
    r = make("[{id: a, plan: DAILY_SMS, balance: '1.00'}]")
    out = r.one(req(id="d:0", kind="initial", account="a", service="data", session="d",
                    requested=5000))
    assert (out.decision.granted, out.decision.final) == (5000, False)
    acct = r.store.view("a")
    data_bucket = acct.allowances["data"][0]
    # 1000 free units held, the other 4000 (-> 4096 rated) cost 0.0000390625 -> 0.0001 up
    assert (data_bucket.units, data_bucket.reserved) == (1000, 1000)
    assert acct.sessions["d"].money_reserved == 100 == acct.reserved
    other = r.one(req(id="x:0", kind="initial", account="a", service="data", session="x",
                      requested=10))
    assert other.decision.granted == 10  # no free units left for it: money only
    assert r.store.view("a").sessions["x"].allowance_reserved == [0]
    t = r.one(req(id="d:1", kind="terminate", account="a", service="data", session="d",
                  used=3000))
    assert (t.charge.allowance_units, t.charge.rated_units, t.record()["charge"]["cost"]) == (
        1000, 2048, "0.0001")
    acct = r.store.view("a")
    assert (acct.allowances["data"][0].units, acct.allowances["data"][0].reserved) == (0, 0)
    check_books(r, "a")


@charging_on
def test_overuse_is_charged_as_far_as_possible_and_the_rest_reported_uncharged(make):
    r = make("[{id: a, plan: PREPAID_S, balance: '1.00'}]")
    r.one(req(id="s:0", kind="initial", account="a", service="voice", session="s",
              requested=60))
    t = r.one(req(id="s:1", kind="terminate", account="a", service="voice", session="s",
                  used=1000))
    # rating(1000) = 0.15 + 940 * 0.0015 = 1.56, of which only 1.00 can be taken
    assert t.decision.result == "SUCCESS"
    assert t.decision.charged == 1_000_000 and t.record()["decision"]["balance"] == "0.00"
    assert (t.record()["charge"]["cost"], t.record()["charge"]["uncharged"], t.charge.units) == (
        "1.0000", "0.5600", 1000)
    assert r.store.view("a").balance == 0
    check_books(r, "a")


@charging_on
def test_update_over_the_grant_commits_then_regrants_what_is_left(make):
    r = make("[{id: a, plan: PREPAID_S, balance: '0.50'}]")
    r.one(req(id="s:0", kind="initial", account="a", service="voice", session="s",
              requested=60))
    u = r.one(req(id="s:1", kind="update", account="a", service="voice", session="s",
                  used=200, requested=300))
    # rating(200) = 0.36; 0.14 left funds 93 more seconds (0.1395)
    assert (u.record()["decision"]["charged"], u.decision.granted, u.decision.final) == (
        "0.3600", 93, True)
    assert r.store.view("a").reserved == 139_500
    u2 = r.one(req(id="s:2", kind="update", account="a", service="voice", session="s",
                   used=93 + 50))
    assert u2.charge.cost == 140_000 and u2.record()["charge"]["uncharged"] == "0.0745"
    assert (u2.decision.result, u2.decision.granted) == ("CREDIT_LIMIT_REACHED", 0)
    acct = r.store.view("a")
    assert acct.balance == 0 and acct.reserved == 0 and "s" in acct.sessions
    check_books(r, "a")


@charging_on
def test_unknown_session_is_charged_like_an_event_and_answers_session_unknown(make):
    r = make("[{id: a, plan: PREPAID_S, balance: '0.20'}]")
    r.one(req(id="e:0", kind="initial", account="a", service="sms", session="e"))
    r.one(req(id="e:1", kind="terminate", account="a", service="sms", session="e", used=1))
    assert r.store.view("a").balance == 110_000
    u = r.one(req(id="n:1", kind="update", account="a", service="voice", session="never",
                  used=61))
    # rated with the rate this request selects (mobile_peak): 0.1515, of which 0.11 is there
    assert (u.decision.result, u.decision.granted, u.record()["decision"]["charged"]) == (
        "SESSION_UNKNOWN", 0, "0.1100")
    assert (u.charge.rate, u.record()["charge"]["cost"], u.record()["charge"]["uncharged"]) == (
        "mobile_peak", "0.1100", "0.0415")
    assert u.ledger[0]["reason"] == "unknown_session"
    assert r.store.view("a").sessions == {} and r.expiry_members("a") == {}
    # an ended session is unknown too; nothing left to take: all of it reported uncharged
    again = r.one(req(id="e:2", kind="terminate", account="a", service="sms", session="e",
                      seq=2, used=1))
    assert (again.decision.result, again.record()["decision"]["charged"]) == ("SESSION_UNKNOWN",
                                                                     "0.0000")
    again_c = again.record()["charge"]
    assert again_c["cost"] == "0.0000" and again_c["uncharged"] == "0.0900"
    assert again.ledger == []
    assert r.store.view("a").balance == 0
    check_books(r, "a")


@charging_on
def test_mixed_batch_books_balance_and_decisions(make):
    r = make("[{id: a, plan: PREPAID_S, balance: '3.00'}, {id: b, plan: DAILY_SMS, "
             "balance: '0.05'}, {id: c, plan: VOICE_ONLY, balance: '0', allow_negative: true}]")
    batch = [
        req(id="1", kind="initial", account="a", service="voice", session="va"),
        req(id="2", kind="event", account="b", service="sms", used=3),
        req(id="3", kind="event", account="a", service="data", used=5000),
        req(id="4", kind="update", account="a", service="voice", session="va", used=75),
        req(id="5", kind="initial", account="c", service="voice", session="vc",
            requested=120),
        req(id="6", kind="event", account="b", service="sms", used=2),
        req(id="7", kind="terminate", account="c", service="voice", session="vc", used=500),
        req(id="8", kind="event", account="zz", service="sms", used=1),
        req(id="9", kind="initial", account="a", service="data", session="da"),
    ]
    outs = r.charge(*batch)
    assert [o.request.id for o in outs] == [b["id"] for b in batch]
    assert [o.decision.result for o in outs] == [
        "SUCCESS", "CREDIT_LIMIT_REACHED", "SUCCESS", "SUCCESS", "SUCCESS", "SUCCESS",
        "SUCCESS", "USER_UNKNOWN", "SUCCESS"]
    # c may go negative: its overuse is charged in full, nothing uncharged
    assert outs[6].record()["charge"]["uncharged"] == "0" and outs[6].charge.cost == peak(500)
    assert r.store.view("c").balance == -peak(500)
    for out in outs:
        assert stored(r, out.request.account, out.request.id) == out.record()["decision"]
    for acct in ("a", "b", "c"):
        taken = sum(o.decision.charged for o in outs if o.request.account == acct)
        assert r.store.view(acct).balance == r.initial[acct] - taken
        check_books(r, acct)
    assert set(r.expiry_members("a")) == {"a\x1fva", "a\x1fda"}


@charging_on
def test_load_returns_states_and_stored_decisions(make):
    r = make()
    out = r.one(req(id="e1", kind="event", account="a", service="sms", used=1))
    states, decided = r.store.load(["a", "ghost"], {"a": ["e1", "never"]})
    assert states["ghost"] is None and states["a"].balance == 9_910_000
    assert decided == {("a", "e1"): out.stored()}
    assert decided[("a", "e1")].wire == out.record()  # the record as stored, to replay as is



def test_session_step_with_another_service_returns_the_allowance_units(rig):
    r = rig(accounts=ONE)
    r.one(req(id="d:0", kind="initial", account="a", service="data", session="d",
              requested=1000))
    assert r.store.view("a").allowances["data"][0].reserved == 1000
    r.one(req(id="d:1", kind="terminate", account="a", service="sms", session="d", used=0))
    acct = r.store.view("a")
    assert acct.sessions == {}
    assert acct.allowances["data"][0].reserved == 0


@pytest.mark.parametrize("field", ["bal", "ver", "plan"])
def test_an_account_missing_a_field_is_corrupt_not_guessed(make, field):
    # a missing bal was read as 0 and written back; a missing ver as 0, which conflicted with
    # every write (the engine then retried it as an outage, for ever)
    from charging.errors import CorruptAccountError

    r = make()
    r.client.hdel(r.store.keys.account("a"), field)
    with pytest.raises(CorruptAccountError, match=f"'{field}' is missing"):
        r.store.view("a")
    # a top-up refuses it too, and writes nothing (it once credited an account missing its
    # plan, and with no ver wrote the balance, then failed before the ledger entry)
    key = r.store.keys.account("a")
    before, ledger = r.client.hgetall(key), r.store.ledger("a")
    assert r.store.topup("a", 1_000_000) == Topup("corrupt")
    assert r.client.hgetall(key) == before and r.store.ledger("a") == ledger


@pytest.mark.parametrize(("field", "value"), [("bal", b"12x"), ("ver", b"x"), ("res", b"1.5"),
                                              ("bal", b"")])
def test_a_topup_refuses_an_unreadable_field_and_writes_nothing(make, field, value):
    r = make()
    key = r.store.keys.account("a")
    r.client.hset(key, field, value)
    before, ledger = r.client.hgetall(key), r.store.ledger("a")
    assert r.store.topup("a", 1_000_000, topup_id="t1") == Topup("corrupt")
    assert r.client.hgetall(key) == before and r.store.ledger("a") == ledger
    assert not r.client.exists(r.store.keys.topup("a", "t1"))
