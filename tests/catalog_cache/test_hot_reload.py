"""Catalog hot reload: a new version becomes active atomically, every batch is rated with one
version, sessions keep the version (and rate) they started under, versions are immutable.
"""

from __future__ import annotations

import threading
import time

import pytest

from balances.charger import Charger
from balances.store import BalanceStore
from catalog_cache.store import CatalogCache, CatalogKeys, load_catalog_text
from charging.errors import CatalogError, StoreError
from tests.conftest import CATALOG_A, CATALOG_B, Clock, req

RICH = "\n".join(f'{{"id": "r{i}", "plan": "PREPAID_S", "balance": "1000.00"}}'
                 for i in range(4))
SMS_PRICE = {"test-a": "0.0900", "test-b": "0.2000"}
#: a voice event of 61 s in the peak band: 0.05 + first minute + 1 s at 0.0015
VOICE_61 = {"test-a": "0.1515", "test-b": "0.3515"}


def sms(rid: str, account: str = "r0") -> dict:
    return req(id=rid, kind="event", account=account, service="sms", used=1)


def test_refresh_switches_to_the_new_version(rig):
    r = rig(accounts=RICH)  # catalog A loaded, cache re-checks only on refresh()
    first = r.one(sms("1"))
    assert (first.charge.catalog_version, first.record()["charge"]["cost"]) == ("test-a", "0.0900")
    load_catalog_text(r.client, CATALOG_B, prefix=r.prefix)
    stale = r.one(sms("2"))
    assert stale.charge.catalog_version == "test-a"  # not re-checked yet
    assert r.catalogs.refresh() == "test-b"
    after = r.one(sms("3"))
    assert (after.charge.catalog_version, after.record()["charge"]["cost"]) == ("test-b", "0.2000")
    assert r.store.ledger("r0")[-1]["catalog_version"] == "test-b"


def test_the_cache_rechecks_redis_after_its_interval(rig):
    r = rig(accounts=RICH, check_interval_s=0.05)
    assert r.one(sms("1")).charge.catalog_version == "test-a"
    load_catalog_text(r.client, CATALOG_B, prefix=r.prefix)
    time.sleep(0.1)
    assert r.one(sms("2")).charge.catalog_version == "test-b"


def test_reload_while_charging_never_mixes_versions_within_a_batch(rig):
    r = rig(accounts=RICH, check_interval_s=0.002)
    batches: list[tuple[float, float, list]] = []  # (start, end, outcomes)
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop():
        k = 0
        try:
            while not stop.is_set():
                k += 1
                batch = [sms(f"b{k}-{i}", f"r{i % 4}") for i in range(6)]
                batch += [req(id=f"v{k}-{i}", kind="event", account=f"r{i}", service="voice",
                              used=61) for i in range(4)]
                start = time.monotonic()
                outs = r.charge(*batch)
                batches.append((start, time.monotonic(), outs))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=loop)
    t.start()
    try:
        while len(batches) < 15 and t.is_alive():
            time.sleep(0.005)
        loaded_at = time.monotonic()
        load_catalog_text(r.client, CATALOG_B, prefix=r.prefix)
        r.catalogs.refresh()
        refreshed_at = time.monotonic()
        n = len(batches)
        while len(batches) < n + 15 and t.is_alive():
            time.sleep(0.005)
    finally:
        stop.set()
        t.join(timeout=30)
    assert not errors, errors
    seen = set()
    for start, end, outs in batches:
        versions = {o.charge.catalog_version for o in outs}
        assert len(versions) == 1, f"a batch mixed catalog versions: {versions}"
        (version,) = versions
        seen.add(version)
        for o in outs:
            expected = SMS_PRICE if o.request.service == "sms" else VOICE_61
            assert o.record()["charge"]["cost"] == expected[version]
        if end < loaded_at:
            assert version == "test-a"
        if start > refreshed_at:
            assert version == "test-b"
    assert seen == {"test-a", "test-b"}


def test_sessions_keep_the_version_and_rate_they_started_under(rig):
    r = rig(accounts=RICH)
    r.charge(req(id="old:0", kind="initial", account="r0", service="voice", session="old"),
             req(id="o3:0", kind="initial", account="r3", service="voice", session="o3"))
    load_catalog_text(r.client, CATALOG_B, prefix=r.prefix)
    r.catalogs.refresh()
    r.one(req(id="new:0", kind="initial", account="r0", service="voice", session="new"))
    acct = r.store.view("r0")
    assert acct.sessions["old"].catalog_version == "test-a"
    assert acct.sessions["new"].catalog_version == "test-b"
    old = r.one(req(id="old:1", kind="update", account="r0", service="voice", session="old",
                    used=61))
    new = r.one(req(id="new:1", kind="update", account="r0", service="voice", session="new",
                    used=61))
    assert (old.charge.catalog_version, old.record()["charge"]["cost"]) == ("test-a", "0.1515")
    assert (new.charge.catalog_version, new.record()["charge"]["cost"]) == ("test-b", "0.3515")
    # the next grant of the old session is reserved at A's price too (300 s at 0.0015)
    assert r.store.view("r0").sessions["old"].money_reserved == 450_000
    t = r.one(req(id="old:2", kind="terminate", account="r0", service="voice", session="old",
                  used=300))
    assert (t.charge.catalog_version, t.record()["charge"]["cost"]) == ("test-a", "0.4500")
    # a restarted engine (empty cache, B active) reads version A back from Redis for it
    fresh = Charger(BalanceStore(r.client, prefix=r.prefix),
                    CatalogCache(r.client, prefix=r.prefix), Clock())
    (o3,) = r.charge(req(id="o3:1", kind="update", account="r3", service="voice",
                         session="o3", used=61), charger=fresh)
    assert (o3.charge.catalog_version, o3.record()["charge"]["cost"]) == ("test-a", "0.1515")


def test_a_version_never_changes_content(rig):
    r = rig(accounts=RICH)
    client, p = r.client, r.prefix
    versions_key = f"{p}:{{catalog}}:versions"
    stored_a = client.hget(versions_key, "test-a")
    cheaper = CATALOG_A.replace('price: "0.09", per: 1,', 'price: "0.01", per: 1,')
    assert cheaper != CATALOG_A
    with pytest.raises(CatalogError) as info:
        load_catalog_text(client, cheaper, prefix=p)
    assert [pr.path for pr in info.value.problems] == ["version"]
    assert "different content" in info.value.problems[0].reason
    assert client.hget(versions_key, "test-a") == stored_a
    assert r.catalogs.refresh() == "test-a"
    # the same content again is fine; so is going back to an older version
    load_catalog_text(client, CATALOG_B, prefix=p)
    assert r.catalogs.refresh() == "test-b"
    load_catalog_text(client, CATALOG_A, prefix=p)
    assert r.catalogs.refresh() == "test-a"
    assert r.one(sms("x")).record()["charge"]["cost"] == "0.0900"


def test_get_returns_older_versions(rig):
    r = rig(accounts=RICH)
    load_catalog_text(r.client, CATALOG_B, prefix=r.prefix)
    cache = CatalogCache(r.client, prefix=r.prefix)
    assert cache.current.version == "test-b"
    older = cache.get("test-a")
    assert older is not None and older.version == "test-a"
    assert older.catalog.tariffs["SMS_STD"].rates[0].steps[0].price != \
        cache.current.catalog.tariffs["SMS_STD"].rates[0].steps[0].price
    assert cache.get("test-b") is cache.current
    assert cache.get("no-such-version") is None


def test_no_catalog_loaded_is_a_clear_error(redis_client, prefix):
    cache = CatalogCache(redis_client, prefix=prefix)
    assert cache.refresh() is None
    with pytest.raises(StoreError, match="no catalog is loaded"):
        _ = cache.current


class RoundClock:
    """Engine clock for the Charger that, from its second call in an armed ``charge``,
    moves the catalog cache's monotonic clock past its check interval: time passing
    between the first round of a batch and its retry."""

    def __init__(self):
        self.mono = 0.0
        self.calls = 0
        self.armed = False

    def engine(self) -> int:
        self.calls += 1
        if self.armed and self.calls >= 2:
            self.mono += 10.0
        return 1795856400000

    def monotonic(self) -> float:
        return self.mono


def test_a_retried_batch_is_still_rated_with_one_version(rig):
    r = rig(accounts=RICH)
    rc = RoundClock()
    cache = CatalogCache(r.client, prefix=r.prefix, check_interval_s=1.0, clock=rc.monotonic)
    charger = Charger(r.store, cache, rc.engine)
    r.charge(sms("w1", "r1"), sms("w2", "r2"), charger=charger)  # both accounts cached
    assert r.store.topup("r2", 1_000_000).status == "ok"  # another writer: r2's cache is stale
    load_catalog_text(r.client, CATALOG_B, prefix=r.prefix)
    rc.armed, rc.calls = True, 0
    outs = r.charge(sms("m1", "r1"), sms("m2", "r2"), charger=charger)
    assert rc.calls == 2  # r2 conflicted: a second round ran
    versions = [o.charge.catalog_version for o in outs]
    assert len(set(versions)) == 1, versions


def test_catalog_load_on_a_cluster(redis_cluster, prefix):
    load_catalog_text(redis_cluster, CATALOG_A, prefix=prefix)
    cache = CatalogCache(redis_cluster, prefix=prefix)
    assert cache.current.version == "test-a"


#: version C: DAILY_SMS gains a second data allowance (500 a day) beside the 1000 one-off
CATALOG_C = CATALOG_A.replace('version: "test-a"', 'version: "test-c"').replace(
    "      - {service: data, units: 1000, period: none}\n",
    "      - {service: data, units: 1000, period: none}\n"
    "      - {service: data, units: 500, period: day}\n")


def test_a_catalog_adding_an_allowance_keeps_existing_allowance_state(rig):
    assert CATALOG_C != CATALOG_A
    r = rig(accounts="[{id: a, plan: DAILY_SMS, balance: '1.00'}]")
    r.one(req(id="use", kind="event", account="a", service="data", used=300))
    r.one(req(id="d:0", kind="initial", account="a", service="data", session="d",
              requested=400))
    before = r.store.view("a").allowances["data"]
    assert [(b.units, b.reserved) for b in before] == [(700, 400)]
    load_catalog_text(r.client, CATALOG_C, prefix=r.prefix)
    r.catalogs.refresh()
    r.one(req(id="x", kind="event", account="a", service="data", used=10))
    r.one(req(id="d:1", kind="terminate", account="a", service="data", session="d",
              used=0))
    buckets = r.store.view("a").allowances["data"]
    assert all(b.reserved == 0 for b in buckets), buckets
    assert sum(b.free for b in buckets) <= 700 + 500 - 10, buckets


def test_a_stored_version_this_release_refuses_is_not_used_for_its_sessions(rig, caplog):
    """Versions are validated when loaded; a later, stricter release may refuse one already
    stored (here: a key given twice, accepted before). Its sessions answer RATING_FAILED —
    never another version's prices — and nothing is charged; the engine does not crash."""
    r = rig(accounts=RICH)
    r.one(req(id="old:0", kind="initial", account="r0", service="voice", session="old"))
    balance = r.store.view("r0").balance
    load_catalog_text(r.client, CATALOG_B, prefix=r.prefix)
    keys = CatalogKeys(r.prefix)  # the stored text of test-a, as an older release kept it
    r.client.hset(keys.versions, "test-a",
                  CATALOG_A.replace("currency: EUR\n", "currency: EUR\ncurrency: EUR\n"))
    fresh = Charger(BalanceStore(r.client, prefix=r.prefix),
                    CatalogCache(r.client, prefix=r.prefix), Clock())
    (out,) = r.charge(req(id="old:1", kind="terminate", account="r0", service="voice",
                          session="old", used=61), charger=fresh)
    assert (out.decision.result, out.record()["decision"]["charged"], out.charge) == \
        ("RATING_FAILED", "0.00", None)
    assert r.store.view("r0").balance == balance
    assert "does not validate any more" in caplog.text


def test_an_active_version_this_release_refuses_waits_like_an_outage(redis_client, prefix):
    load_catalog_text(redis_client, CATALOG_A, prefix=prefix)
    keys = CatalogKeys(prefix)
    redis_client.hset(keys.versions, "test-a",
                      CATALOG_A.replace("currency: EUR\n", "currency: EUR\ncurrency: EUR\n"))
    cache = CatalogCache(redis_client, prefix=prefix)
    with pytest.raises(StoreError, match="(?s)does not validate any more.*new version"):
        _ = cache.current


def test_a_stored_version_with_keys_once_passed_over_still_rates_as_it_did(rig, caplog):
    """Unknown keys were warnings when 1d4aa33 loaded a catalog; they are errors now in
    ``catalog load``. A version stored back then must not stop the engine on upgrade: it
    rates as it did (here ``maxcost``: no cap), and the log says what to correct."""
    r = rig(accounts=RICH)
    keys = CatalogKeys(r.prefix)
    r.client.hset(keys.versions, "test-a", CATALOG_A.replace("max_cost:", "maxcost:"))
    fresh = Charger(BalanceStore(r.client, prefix=r.prefix),
                    CatalogCache(r.client, prefix=r.prefix), Clock())
    (out,) = r.charge(req(id="long", kind="event", account="r0", service="voice",
                          used=100_000), charger=fresh)
    assert out.decision.result == "SUCCESS"
    assert out.record()["charge"]["cost"] == "150.0600"  # CONTRACT §4.1's example, without the cap
    assert "unknown key 'maxcost' — did you mean 'max_cost'?" in caplog.text
    with pytest.raises(CatalogError, match="maxcost"):
        load_catalog_text(r.client, CATALOG_A.replace("max_cost:", "maxcost:"), prefix=r.prefix)
