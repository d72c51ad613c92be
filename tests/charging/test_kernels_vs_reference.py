"""The numba kernels against the exact Fraction reference (CONTRACT §4.1, §4.2).

(a) one-off rating: ``rating.rate_requests`` == ``reference.rate_usage`` for every request
    (cost to the exact micro, rated units, tariff, rate id, error code); and, selection
    aside, ``kernels.rate_units`` == ``reference.rate_units`` for many usages of every rate;
(b) session steps: ``kernels.step_batch`` == ``reference.step_cost`` per step, and the steps
    sum to the kernel's and the reference's rating of the total;
(c) grants: ``kernels.max_grant`` (and ``grant_batch``, ``grant_at``) == ``reference.max_grant``,
    and the grant is maximal when checked directly with the reference rating;
(d) the kernels' local time (offset table) == zoneinfo's, and the compiled band intervals ==
    ``reference.band_holds``: the two halves of band selection.

Plus targeted cases (the contract's worked examples, the cap, 2**40 units at a huge price,
zero price, rounding ties) with literal expected values, so kernel and reference are not
only compared with each other.

Every catalog is generated, validated and compiled once per example; numba compiles the
kernels once per process (or loads them from its cache). Failing examples print the catalog
YAML (``note``) so they can be replayed with ``chargeflow rate``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from charging import kernels, reference
from charging.catalog import Catalog, Rate, Tariff, parse_catalog
from charging.compiler import CompiledCatalog, compile_catalog
from charging.errors import RatingError
from charging.exact import rate_ints
from charging.money import MAX_COST_UNITS, format_fraction
from charging.rating import rate_requests
from charging.requests import Request
from tests.charging.strategies import (
    TIMEZONES,
    CatalogCase,
    catalog_rates,
    rate_usages,
    rejection_rate,
    requests_for,
    timestamps,
    usages,
    valid_catalogs,
)

MICROS = 1_000_000
MAX_USED = 2**40

#: Examples per property test; raise it for a long bug hunt, e.g.
#: CHARGEFLOW_PROPERTY_EXAMPLES=5000 pytest tests/charging/test_kernels_vs_reference.py
EXAMPLES = int(os.environ.get("CHARGEFLOW_PROPERTY_EXAMPLES", "120"))

PROPERTY = settings(
    deadline=None,
    max_examples=EXAMPLES,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def micros(x: Fraction) -> Fraction:
    return x * MICROS


def ref_rating(tariff: Tariff, rate: Rate, used: int) -> tuple[Fraction, int] | None:
    """Reference (cost, rated_units) of ``used`` units, None when rating fails."""
    try:
        return reference.rate_units(tariff, rate, used)
    except RatingError as exc:
        assert exc.code == reference.RATING_FAILED
        return None


def kernel_rate(compiled: CompiledCatalog, tariff: Tariff, rate: Rate) -> int:
    r = compiled.rate_index(tariff.name, rate.id)
    assert compiled.rate_ids[r] == rate.id
    return r


# -- (a) one-off rating ----------------------------------------------------------------------

@st.composite
def rating_cases(draw) -> tuple[CatalogCase, list[Request]]:
    case = draw(valid_catalogs())
    return case, draw(requests_for(case.catalog))


@PROPERTY
@given(rating_cases())
def test_rate_requests_equals_reference(case: tuple[CatalogCase, list[Request]]) -> None:
    cat_case, requests = case
    catalog = cat_case.catalog
    note(cat_case.text)
    compiled = compile_catalog(catalog)
    got = rate_requests(compiled, requests)
    assert len(got) == len(requests)
    for req, out in zip(requests, got, strict=True):
        note(f"request: {req}\nkernel: {out}")
        assert out.id == req.id
        tname = catalog.plans[req.plan].tariffs.get(req.service)
        if tname is None:
            with pytest.raises(RatingError) as exc:
                reference.rate_usage(catalog, req.plan, req.service, req.ts_ms,
                                     req.destination, req.used)
            assert exc.value.code == reference.SERVICE_DENIED
            assert out.error == "END_USER_SERVICE_DENIED"
            continue
        tariff = catalog.tariffs[tname]
        assert out.tariff == tname
        try:
            rate = reference.select_rate(catalog, tariff, req.ts_ms, req.destination)
        except RatingError as exc:
            assert exc.code == reference.RATING_FAILED
            assert out.error == "RATING_FAILED", "reference finds no rate, the kernel does"
            assert out.rate is None
            continue
        assert out.rate == rate.id, "kernel selected a different rate"
        try:
            expected = reference.rate_usage(catalog, req.plan, req.service, req.ts_ms,
                                            req.destination, req.used)
        except RatingError as exc:
            assert exc.code == reference.RATING_FAILED
            assert out.error == "RATING_FAILED", "reference exceeds 9e12, the kernel rated it"
            continue
        assert out.error is None, f"kernel failed ({out.detail}), reference rated {expected}"
        assert expected.rate == rate.id and expected.tariff == tname
        assert Fraction(out.cost_micros) == micros(expected.cost)
        assert out.rated_units == expected.rated_units
        assert out.decimals == tariff.decimals
        assert out.as_json()["cost"] == format_fraction(expected.cost, tariff.decimals)


@st.composite
def rate_sweeps(draw) -> tuple[CatalogCase, list[tuple[Tariff, Rate, list[int]]]]:
    case = draw(valid_catalogs())
    sweeps = []
    for tariff in case.catalog.tariffs.values():
        for rate in tariff.rates:
            sweeps.append((tariff, rate, draw(st.lists(rate_usages(tariff, rate),
                                                       min_size=1, max_size=12))))
    return case, sweeps


@PROPERTY
@given(rate_sweeps())
def test_rate_units_of_every_rate_equals_reference(case) -> None:
    """Step 3-6 alone, for every rate of the catalog (selection aside): many usages per rate,
    aimed at its step bounds, the fast/slow path boundary, the cap and the 9e12 limit."""
    cat_case, sweeps = case
    note(cat_case.text)
    compiled = compile_catalog(cat_case.catalog)
    for tariff, rate, used in sweeps:
        r = kernel_rate(compiled, tariff, rate)
        for u in used:
            note(f"tariff {tariff.name} rate {rate.id} used {u}")
            status, cost, rated = kernels.rate_units(compiled.tables, r, u)
            # the engine's per-request entry point (charging.decide) must agree
            assert kernels.units_at(compiled.tables.rate, compiled.tables.step, r, u) == (
                status, cost, rated)
            expected = ref_rating(tariff, rate, u)
            if expected is None:
                assert status == kernels.OVER_LIMIT
            else:
                assert status == kernels.OK
                assert (Fraction(int(cost)), int(rated)) == (micros(expected[0]), expected[1])


# -- (b) session steps -----------------------------------------------------------------------

@st.composite
def session_cases(draw) -> tuple[CatalogCase, Tariff, Rate, list[int]]:
    case = draw(valid_catalogs())
    tariff, rate = draw(catalog_rates(case.catalog))
    total = draw(rate_usages(tariff, rate))
    cuts = draw(st.lists(st.one_of(st.integers(0, total), rate_usages(tariff, rate)
                                   .map(lambda u: min(u, total))), max_size=7))
    points = [0, *sorted(cuts), total]
    return case, tariff, rate, points


@PROPERTY
@given(session_cases())
def test_session_steps_sum_to_rating_of_total(case) -> None:
    cat_case, tariff, rate, points = case
    note(cat_case.text)
    note(f"tariff {tariff.name} rate {rate.id} points {points}")
    compiled = compile_catalog(cat_case.catalog)
    T = compiled.tables
    r = kernel_rate(compiled, tariff, rate)
    n = len(points) - 1
    before = np.array(points[:-1], dtype=np.int64)
    after = np.array(points[1:], dtype=np.int64)
    status, cost, rated = kernels.step_batch(T, np.full(n, r, dtype=np.int64), before, after)
    refs = [ref_rating(tariff, rate, u) for u in points]
    for i in range(n):
        lo, hi = refs[i], refs[i + 1]
        if lo is None or hi is None:
            assert status[i] == kernels.OVER_LIMIT, f"step {i}: reference fails, kernel rated"
            with pytest.raises(RatingError):
                reference.step_cost(tariff, rate, points[i], points[i + 1])
            continue
        assert status[i] == kernels.OK, f"step {i}: kernel failed, reference rated"
        step = reference.step_cost(tariff, rate, points[i], points[i + 1])
        assert step == hi[0] - lo[0]
        assert Fraction(int(cost[i])) == micros(step), f"step {i}"
        assert int(rated[i]) == hi[1] - lo[1]
        assert cost[i] >= 0, "rating is non-decreasing in usage"
    s, total_cost, total_rated = kernels.rate_units(T, r, points[-1])
    if refs[-1] is None:
        assert s == kernels.OVER_LIMIT
        return
    assert s == kernels.OK
    assert all(x is not None for x in refs), "a rating below a ratable total failed"
    assert Fraction(int(total_cost)) == micros(refs[-1][0])
    assert int(total_rated) == refs[-1][1]
    assert int(cost.sum()) == int(total_cost), "session steps do not sum to the total"
    assert int(rated.sum()) == int(total_rated)


# -- (c) grants ------------------------------------------------------------------------------

def ref_grant_money(tariff: Tariff, rate: Rate, c: int, a: int, g: int) -> Fraction | None:
    try:
        return reference.grant_money(tariff, rate, c, a, g)
    except RatingError:
        return None


@st.composite
def grant_cases(draw):
    case = draw(valid_catalogs())
    tariff, rate = draw(catalog_rates(case.catalog))
    chargeable = draw(st.one_of(st.just(0), rate_usages(tariff, rate)))
    allowance = draw(st.one_of(st.just(0), st.just(0), st.integers(0, 10**6),
                               st.integers(0, MAX_USED)))
    requested = draw(st.one_of(st.just(0), st.integers(1, 1000), usages(),
                               rate_usages(tariff, rate)))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return case, tariff, rate, chargeable, allowance, requested, -1  # unlimited
    if kind == 1:
        return case, tariff, rate, chargeable, allowance, requested, draw(st.integers(0, 10**7))
    if kind == 2:
        return case, tariff, rate, chargeable, allowance, requested, draw(st.integers(0, 2**62))
    # Where the search must be exact: money just at, below or above the money of some grant
    # g0, and ``requested`` at, just below or just above the largest grant that money buys.
    g0 = draw(st.one_of(st.integers(1, 1000), rate_usages(tariff, rate)))
    money = ref_grant_money(tariff, rate, chargeable, allowance, g0)
    available = max(0, (0 if money is None else int(micros(money))) + draw(st.integers(-2, 2)))
    best, _ = reference.max_grant(tariff, rate, chargeable, allowance, MAX_USED,
                                  Fraction(available, MICROS))
    requested = min(MAX_USED, max(0, best + draw(st.sampled_from((1, 0, 1, -1, 2)))))
    return case, tariff, rate, chargeable, allowance, requested, available


def check_grant(compiled: CompiledCatalog, tariff: Tariff, rate: Rate, c: int, a: int,
                requested: int, available: int) -> tuple[int, int]:
    """Kernel grant == reference grant, and it is maximal by the reference rating."""
    r = kernel_rate(compiled, tariff, rate)
    T = compiled.tables
    g, money = (int(x) for x in kernels.max_grant(T, r, c, a, requested, available))
    limit = None if available < 0 else Fraction(available, MICROS)
    rg, rmoney = reference.max_grant(tariff, rate, c, a, requested, limit)
    assert (g, Fraction(money)) == (rg, micros(rmoney)), "kernel and reference grants differ"
    bg, bm = kernels.grant_batch(T, *(np.array([x], dtype=np.int64)
                                      for x in (r, c, a, requested, available)))
    assert (int(bg[0]), int(bm[0])) == (g, money)
    assert tuple(int(x) for x in kernels.grant_at(T.rate, T.step, r, c, a, requested,
                                                  available)) == (g, money)
    # maximality, from the reference rating alone
    assert 0 <= g <= requested
    m = ref_grant_money(tariff, rate, c, a, g)
    if g > 0:
        assert m is not None and (limit is None or m <= limit), "the grant does not fit"
        assert Fraction(money) == micros(m)
    else:
        assert money == 0
    if g < requested:
        m1 = ref_grant_money(tariff, rate, c, a, g + 1)
        assert m1 is None or (limit is not None and m1 > limit), "g + 1 would fit too"
    return g, money


@PROPERTY
@given(grant_cases())
def test_max_grant_equals_reference_and_is_maximal(case) -> None:
    cat_case, tariff, rate, c, a, requested, available = case
    note(cat_case.text)
    note(f"tariff {tariff.name} rate {rate.id} C={c} A={a} r={requested} avail={available}")
    check_grant(compile_catalog(cat_case.catalog), tariff, rate, c, a, requested, available)


# -- local time ------------------------------------------------------------------------------

_ZONES: dict[str, tuple[Catalog, CompiledCatalog]] = {}


def _zone(tz: str) -> tuple[Catalog, CompiledCatalog]:
    if tz not in _ZONES:
        catalog = parse_catalog(f"""
version: z
currency: EUR
timezone: {tz}
services: {{voice: {{}}}}
tariffs: {{T: {{service: voice, rates: [{{id: r, steps: [{{from: 0, price: "1"}}]}}]}}}}
plans: {{P: {{tariffs: {{voice: T}}}}}}
""")
        _ZONES[tz] = (catalog, compile_catalog(catalog))
    return _ZONES[tz]


@st.composite
def zone_times(draw) -> tuple[str, list[int]]:
    tz = draw(st.sampled_from(TIMEZONES))
    return tz, draw(st.lists(timestamps(_zone(tz)[0]), min_size=1, max_size=30))


@PROPERTY
@given(zone_times())
def test_kernel_local_time_equals_zoneinfo(case) -> None:
    """The kernels' offset table gives the local weekday and clock the reference reads from
    zoneinfo (what band selection rests on), also at the very second of a DST change."""
    tz, stamps = case
    _, compiled = _zone(tz)
    zone = ZoneInfo(tz)
    for ts in stamps:
        local = datetime.fromtimestamp(ts // 1000, tz=zone)
        want = local.weekday() * 86400 + local.hour * 3600 + local.minute * 60 + local.second
        assert int(kernels.week_second(compiled.tables, ts)) == want, (tz, ts, local)


@PROPERTY
@given(valid_catalogs(), st.lists(st.integers(0, 7 * 86400 - 1), max_size=20))
def test_compiled_band_intervals_hold_when_reference_band_holds(case: CatalogCase,
                                                                 extra: list[int]) -> None:
    """The compiled week intervals the kernels test a band with (``Tables.band``/``iv``)
    hold exactly when ``reference.band_holds`` does: at every edge of every day of the week,
    a second either side (overnight bands, Sunday into Monday, 24:00 ends), and elsewhere."""
    note(case.text)
    T = compile_catalog(case.catalog).tables
    monday = datetime(2024, 1, 1)  # a Monday: local wall-clock time, no zone needed
    assert monday.weekday() == 0
    for b, band in enumerate(case.catalog.bands.values()):
        ivs = [(int(lo), int(hi)) for lo, hi in T.iv[T.band[b, 0]:T.band[b, 1]]]
        seconds = {(day * 86400 + edge + off) % (7 * 86400) for day in range(7)
                   for edge in (band.start_s, band.end_s) for off in (-1, 0, 1)}
        for week_s in sorted(seconds | set(extra)):
            local = monday + timedelta(seconds=week_s)
            kernel = any(lo <= week_s < hi for lo, hi in ivs)
            assert kernel == reference.band_holds(band, local), (band, local, ivs)


# -- the generator itself --------------------------------------------------------------------

def test_most_generated_catalogs_validate() -> None:
    assert rejection_rate(60) <= 0.25


# -- targeted cases --------------------------------------------------------------------------

SAMPLE = parse_catalog("""
version: "2026-11-a"
currency: EUR
timezone: Europe/Berlin
services: {voice: {unit: second}, data: {unit: byte}, sms: {unit: event}}
destinations: {DE_MOBILE: ["4915", "4916", "4917"], DE: ["49"]}
bands: {peak: {days: [mon, tue, wed, thu, fri], from: "08:00", to: "20:00"}}
tariffs:
  VOICE_STD:
    service: voice
    quota: 300
    rounding: {decimals: 4, mode: up}
    max_cost: "5.00"
    rates:
      - id: mobile_peak
        destination: DE_MOBILE
        band: peak
        connect_fee: "0.05"
        steps:
          - {from: 0,  price: "0.10", per: 60, increment: 60}
          - {from: 60, price: "0.09", per: 60, increment: 1}
      - id: mobile
        destination: DE_MOBILE
        steps: [{from: 0, price: "0.12", per: 60, increment: 1}]
      - id: other
        steps: [{from: 0, price: "0.20", per: 60, increment: 60}]
  DATA_STD:
    service: data
    rates: [{id: data, steps: [{from: 0, price: "0.01", per: 1048576, increment: 1024}]}]
plans:
  PREPAID_S: {tariffs: {voice: VOICE_STD, data: DATA_STD}}
""")


def _berlin_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()) * 1000


def _rate_both(catalog: Catalog, service: str, ts_ms: int, destination: str | None,
               used: int, plan: str | None = None):
    """(kernel Rated, reference RatedUsage or the RatingError code) of one request."""
    plan = plan or catalog.first_plan()
    req = Request("x", "event", "acct", service, ts_ms, used=used, destination=destination,
                  plan=plan)
    out = rate_requests(compile_catalog(catalog), [req])[0]
    try:
        ref = reference.rate_usage(catalog, plan, service, ts_ms, destination, used)
    except RatingError as exc:
        return out, exc.code
    return out, ref


@pytest.mark.parametrize(("service", "dest", "ts", "used", "cost", "rate"), [
    ("voice", "4917612345", _berlin_ms(2026, 11, 24, 10), 30, "0.1500", "mobile_peak"),
    ("voice", "4917612345", _berlin_ms(2026, 11, 24, 10), 61, "0.1515", "mobile_peak"),
    ("voice", "4917612345", _berlin_ms(2026, 11, 24, 10), 0, "0.0000", "mobile_peak"),
    ("voice", "4917612345", _berlin_ms(2026, 11, 28, 10), 61, "0.1220", "mobile"),
    ("voice", "4930123", _berlin_ms(2026, 11, 24, 10), 1, "0.2000", "other"),
    ("data", None, _berlin_ms(2026, 11, 24, 10), 1500, "0.0001", "data"),
    ("voice", "4917612345", _berlin_ms(2026, 11, 24, 10), 100000, "5.0000", "mobile_peak"),
    # the peak band ends at 20:00:00 local: one second earlier is peak, 20:00 is not
    ("voice", "4917612345", _berlin_ms(2026, 11, 24, 19, 59, 59), 61, "0.1515", "mobile_peak"),
    ("voice", "4917612345", _berlin_ms(2026, 11, 24, 20), 61, "0.1220", "mobile"),
])
def test_contract_worked_examples(service, dest, ts, used, cost, rate) -> None:
    out, ref = _rate_both(SAMPLE, service, ts, dest, used)
    assert out.as_json()["cost"] == cost and out.rate == rate
    assert format_fraction(ref.cost, 4) == cost and ref.rate == rate


def _one_rate(price: str, *, per: int = 1, increment: int = 1, decimals: int = 4,
              mode: str = "up", max_cost: str | None = None, fee: str = "0") -> Catalog:
    cap = f"\n    max_cost: \"{max_cost}\"" if max_cost is not None else ""
    return parse_catalog(f"""
version: t
currency: EUR
services: {{voice: {{unit: second}}}}
tariffs:
  T:
    service: voice
    rounding: {{decimals: {decimals}, mode: {mode}}}{cap}
    rates:
      - id: r
        connect_fee: "{fee}"
        steps: [{{from: 0, price: "{price}", per: {per}, increment: {increment}}}]
plans: {{P: {{tariffs: {{voice: T}}}}}}
""")


def _only(catalog: Catalog) -> tuple[CompiledCatalog, Tariff, Rate, int]:
    compiled = compile_catalog(catalog)
    tariff = catalog.tariffs["T"]
    rate = tariff.rates[0]
    return compiled, tariff, rate, compiled.rate_index("T", "r")


def test_cap_bounds_cost_and_grant() -> None:
    compiled, tariff, rate, r = _only(_one_rate("0.09", per=60, fee="0.05", max_cost="5.00"))
    # raw 0.05 + 100000 · 0.09 / 60 = 150.05 → capped at 5
    for u in (100000, MAX_USED):
        assert kernels.rate_units(compiled.tables, r, u)[:2] == (kernels.OK, 5 * MICROS)
        assert reference.rate_units(tariff, rate, u)[0] == 5
    # the cap is reached at 0.05 + u · 0.0015 = 5, u = 3300: every larger grant costs 5.00
    assert check_grant(compiled, tariff, rate, 0, 0, MAX_USED, 5 * MICROS) == (MAX_USED,
                                                                             5 * MICROS)
    assert check_grant(compiled, tariff, rate, 0, 0, MAX_USED, 5 * MICROS - 1) == (
        3299, 4_998_500)
    assert check_grant(compiled, tariff, rate, 3300, 0, MAX_USED, 0) == (MAX_USED, 0)


def test_cap_exceeded_by_the_smallest_fraction() -> None:
    # 1 micro per unit, D = 1: 101 units exceed the 100-micro cap by exactly 1/D micro,
    # which rounded up would be a whole 0.0001 more
    compiled, tariff, rate, r = _only(_one_rate("0.000001", max_cost="0.0001"))
    assert rate_ints(tariff, rate).D == 1
    for u in (99, 100, 101, 102, MAX_USED):  # 99 micros round up to 0.0001 too
        want = 100
        assert kernels.rate_units(compiled.tables, r, u)[:2] == (kernels.OK, want)
        assert micros(reference.rate_units(tariff, rate, u)[0]) == want


def test_huge_price_at_max_usage_fails_without_cap_and_caps_with_cap() -> None:
    compiled, tariff, rate, r = _only(_one_rate("1000000"))  # 1e6 per unit, no cap
    assert rate_ints(tariff, rate).fast_max_u < MAX_USED  # 2**40 takes the slow path
    out, ref = _rate_both(compiled.catalog, "voice", 0, None, MAX_USED)
    assert out.error == "RATING_FAILED" and ref == "RATING_FAILED"
    # exactly at the limit: 9e6 units cost 9e12, one more unit is beyond the engine's range
    limit = MAX_COST_UNITS // 1_000_000
    assert kernels.rate_units(compiled.tables, r, limit)[:2] == (kernels.OK,
                                                                 MAX_COST_UNITS * MICROS)
    assert reference.rate_units(tariff, rate, limit)[0] == MAX_COST_UNITS
    assert kernels.rate_units(compiled.tables, r, limit + 1)[0] == kernels.OVER_LIMIT
    assert ref_rating(tariff, rate, limit + 1) is None
    # unlimited money: the largest grant is the largest ratable usage
    assert check_grant(compiled, tariff, rate, 0, 0, MAX_USED, -1) == (
        limit, MAX_COST_UNITS * MICROS)
    assert check_grant(compiled, tariff, rate, limit, 0, MAX_USED, -1) == (0, 0)
    for cap in ("5", "9000000000000"):
        capped = _one_rate("1000000", max_cost=cap)
        out, ref = _rate_both(capped, "voice", 0, None, MAX_USED)
        assert out.error is None and out.cost_micros == int(cap) * MICROS
        assert ref.cost == int(cap)
        c2, t2, r2, _ = _only(capped)
        assert check_grant(c2, t2, r2, 0, 0, MAX_USED, -1) == (MAX_USED, int(cap) * MICROS)


def test_zero_price_costs_nothing_and_grants_everything() -> None:
    compiled, tariff, rate, r = _only(_one_rate("0", per=60, increment=60))
    for u, rated in ((1, 60), (60, 60), (61, 120), (MAX_USED, MAX_USED + 44)):
        assert kernels.rate_units(compiled.tables, r, u)[:3] == (kernels.OK, 0, rated)
        assert reference.rate_units(tariff, rate, u) == (0, rated)
    assert check_grant(compiled, tariff, rate, 0, 0, MAX_USED, 0) == (MAX_USED, 0)
    assert check_grant(compiled, tariff, rate, MAX_USED, 0, MAX_USED, 0) == (MAX_USED, 0)


# Ties at half of the last decimal, on the fast path (small usage) and the slow path.
#   0.00005 per unit, 4 decimals: 1 unit = 0.0000|5 (q even), 3 units = 0.0001|5 (q odd)
#   1000000.5 per unit, 0 decimals: 1 unit = 1000000|.5, 5000001 units = 5000003500000|.5
TIES = [
    # price, decimals, used, {mode: expected cost in units of the last decimal}
    ("0.00005", 4, 1, {"up": 1, "down": 0, "half_up": 1, "half_even": 0}),
    ("0.00005", 4, 3, {"up": 2, "down": 1, "half_up": 2, "half_even": 2}),
    ("0.000049", 4, 1, {"up": 1, "down": 0, "half_up": 0, "half_even": 0}),
    ("0.000051", 4, 1, {"up": 1, "down": 0, "half_up": 1, "half_even": 1}),
    ("1000000.5", 0, 1, {"up": 1000001, "down": 1000000, "half_up": 1000001,
                         "half_even": 1000000}),
    ("1000000.5", 0, 5000001, {"up": 5000003500001, "down": 5000003500000,
                               "half_up": 5000003500001, "half_even": 5000003500000}),
    ("1000000.5", 0, 5000003, {"up": 5000005500002, "down": 5000005500001,
                               "half_up": 5000005500002, "half_even": 5000005500002}),
]


@pytest.mark.parametrize("mode", ["up", "down", "half_up", "half_even"])
@pytest.mark.parametrize(("price", "decimals", "used", "expected"), TIES)
def test_rounding_modes_at_ties(price, decimals, used, expected, mode) -> None:
    catalog = _one_rate(price, decimals=decimals, mode=mode)
    compiled, tariff, rate, r = _only(catalog)
    want = expected[mode] * 10 ** (6 - decimals)
    big = used > rate_ints(tariff, rate).fast_max_u
    assert big == (used > 10**6), "the case does not take the kernel path it is meant to"
    assert kernels.rate_units(compiled.tables, r, used)[:2] == (kernels.OK, want)
    assert micros(reference.rate_units(tariff, rate, used)[0]) == want
    # a cap that is itself a tie rounds the same way
    capped = _one_rate(price, decimals=decimals, mode=mode, max_cost=price)
    c2, t2, r2_rate, r2 = _only(capped)
    tie_one = expected[mode] if used == 1 else None
    if tie_one is not None:
        assert kernels.rate_units(c2.tables, r2, MAX_USED)[:2] == (
            kernels.OK, tie_one * 10 ** (6 - decimals))
        assert micros(reference.rate_units(t2, r2_rate, MAX_USED)[0]) == (
            tie_one * 10 ** (6 - decimals))
