"""Hypothesis strategies: random *valid* catalogs (as YAML text) and requests against them.

Catalogs are built as Python dicts that satisfy every rule of CONTRACT §4 by construction
(no tied rates, step lengths multiples of their increments, ...) and dumped with
``yaml.safe_dump``; amounts are always quoted strings. The only catalogs ``parse_catalog``
may still reject are those whose exact arithmetic would not fit the engine's integers
(``charging.exact``); ``valid_catalogs`` filters those with ``assume`` (rare: see
``rejection_rate``).

Requests aim at the places where a fast integer kernel and the Fraction reference could
part: DST transitions and band edges for time, prefix extensions and truncations for
destinations, step boundaries, the fast/slow path boundary, the cap and the 9e12 limit for
usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import yaml
from hypothesis import assume
from hypothesis import strategies as st

from charging import reference
from charging.catalog import DAYS, Band, Catalog, Rate, Tariff, _overlap, parse_catalog
from charging.errors import CatalogError, RatingError
from charging.exact import rate_ints
from charging.money import MAX_COST_UNITS
from charging.requests import MAX_UNITS, Request
from charging.timezones import MAX_TS_MS, MIN_TS_MS, transitions
from charging.yamlio import load_yaml

TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
SERVICES = ("voice", "data", "sms")
PERS = (1, 60, 1000, 1048576, 7, 3)
MODES = ("up", "down", "half_up", "half_even")
#: Prices 5·10**-k make exact rounding ties (half of the last decimal) at odd usages.
PRICES = (
    "0", "0.0000001", "0.000001", "0.000005", "0.00005", "0.0001", "0.0005", "0.001", "0.005",
    "0.01", "0.05", "0.09", "0.10", "0.12", "0.2", "0.333333", "0.5", "1", "2.5", "7", "99.99",
    "1000", "123456.789", "1000000",
)
#: 2**62 micros (the kernels' fast-path bound) and the 9e12 limit appear as fees and caps.
FEES = ("0", "0.0000005", "0.00005", "0.05", "0.5", "1", "0.123", "2500",
        "4611686018427.387903", "4611686018427.387904", "9000000000000")
CAPS = ("0", "0.00005", "0.5", "5.00", "12.3456789", "1000", "1000000", "123456789.5",
        "4611686018427.387904", "4611686018427.387905", "8999999999999.9999995",
        "9000000000000")
#: Local clock times around which zones change offset (02:00 / 03:00 in Berlin and New York,
#: 02:00 / 02:30 / 01:30 on Lord Howe) and ordinary tariff edges.
CLOCKS = ("00:00", "00:00:01", "01:00", "01:30", "02:00", "02:30", "03:00", "07:59:59", "08:00",
          "12:00", "18:30", "20:00", "22:00", "23:30", "23:59", "23:59:59")
MICROS = 1_000_000
MAX_USED = MAX_UNITS  # 2**40


# -- small helpers ---------------------------------------------------------------------------

def _decimal(n: int, scale: int) -> str:
    """n / 10**scale as a decimal string, e.g. (5, 3) -> "0.005"."""
    if scale == 0:
        return str(n)
    s = str(n).rjust(scale + 1, "0")
    return f"{s[:-scale]}.{s[-scale:]}"


def _seconds(clock: str) -> int:
    parts = [int(p) for p in clock.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)


def amounts(fixed: tuple[str, ...], max_int: int = 10**7, max_scale: int = 9):
    """Decimal strings: a fixed list of interesting ones, or random n / 10**scale."""
    randoms = st.builds(_decimal, st.integers(0, max_int), st.integers(0, max_scale))
    return st.one_of(st.sampled_from(fixed), randoms)


def prices():
    """Step prices: mostly ordinary, sometimes so fine-grained (10-13 decimals) that the
    rate's common denominator nears, or passes, the validator's 64-bit bound, sometimes so
    large that 2**40 units pass the 9e12 limit many times over."""
    fine = st.builds(_decimal, st.integers(1, 10**8), st.integers(10, 13))
    large = st.sampled_from(("1000", "65536.5", "1000000", "400000000000"))
    return st.one_of(amounts(PRICES), amounts(PRICES), amounts(PRICES), fine, large)


@st.composite
def clocks(draw, *, allow_24: bool) -> str:
    pool = CLOCKS + ("24:00",) if allow_24 else CLOCKS
    if draw(st.integers(0, 2)):
        return draw(st.sampled_from(pool))
    h, m = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    if draw(st.booleans()):
        return f"{h:02d}:{m:02d}:{draw(st.integers(0, 59)):02d}"
    return f"{h:02d}:{m:02d}"


@st.composite
def band_specs(draw) -> dict:
    spec: dict = {}
    if draw(st.integers(0, 2)):
        days = draw(st.lists(st.sampled_from(DAYS), min_size=1, max_size=7, unique=True))
        spec["days"] = [d.upper() if draw(st.integers(0, 9)) == 0 else d for d in days]
    spec["from"] = draw(clocks(allow_24=False))
    spec["to"] = draw(clocks(allow_24=True))
    return spec


def _band(name: str, spec: dict) -> Band:
    days = frozenset(DAYS.index(d.lower()) for d in spec["days"]) if "days" in spec \
        else frozenset(range(7))
    return Band(name, days, _seconds(spec["from"]), _seconds(spec["to"]))


@st.composite
def digit_strings(draw, min_size: int = 0, max_size: int = 20) -> str:
    return draw(st.text("0123456789", min_size=min_size, max_size=max_size))


@st.composite
def destination_groups(draw) -> dict[str, list[str]]:
    """1-4 groups of prefixes cut from 1-3 chains of nested prefixes ("49", "4917",
    "491760"), each prefix put in a random group, so that one group may hold "49" and
    another "4917"; sometimes the same prefix lands in two groups (a tariff then uses only
    one of them)."""
    n_groups = draw(st.integers(1, 4))
    groups: dict[str, list[str]] = {f"G{g}": [] for g in range(n_groups)}
    chains = draw(st.lists(digit_strings(1, 3), min_size=1, max_size=3, unique=True))
    for root in chains:
        prefix = root
        for level in range(draw(st.integers(1, 4))):
            if level:
                prefix += draw(digit_strings(1, 3))
            groups[f"G{draw(st.integers(0, n_groups - 1))}"].append(prefix)
    if draw(st.integers(0, 4)) == 0:  # a long prefix, up to the 18-digit maximum
        groups[f"G{draw(st.integers(0, n_groups - 1))}"].append(draw(digit_strings(10, 18)))
    pool = sorted({p for ps in groups.values() for p in ps})
    for prefixes in groups.values():
        if not prefixes or draw(st.integers(0, 5)) == 0:
            prefixes.append(draw(st.sampled_from(pool)))  # never empty; sometimes shared
        if draw(st.integers(0, 9)) == 0:
            prefixes.insert(0, "+" + prefixes[0])  # '+' is allowed and stripped
    return groups


@st.composite
def step_lists(draw) -> list[dict]:
    n = draw(st.integers(1, 4))
    steps = []
    start = 0
    for _ in range(n):
        inc = draw(st.one_of(st.sampled_from((1, 1, 1, 7, 30, 60, 1024, 3600)),
                             st.integers(1, 3600)))
        per = draw(st.sampled_from(PERS))
        step = {"from": start, "price": draw(prices()), "per": per, "increment": inc}
        if per == 1 and draw(st.booleans()):
            del step["per"]  # default 1
        if inc == 1 and draw(st.booleans()):
            del step["increment"]  # default 1
        steps.append(step)
        start += inc * draw(st.one_of(st.integers(1, 5), st.integers(1, 10**6)))
    if draw(st.booleans()):
        steps = draw(st.permutations(steps))  # the validator sorts steps by `from`
    return steps


@st.composite
def tariff_specs(draw, service: str, groups: dict[str, list[str]], bands: dict[str, dict]
                 ) -> dict:
    # Groups this tariff uses: pairwise disjoint prefix sets (a shared prefix is a tie).
    names = draw(st.permutations(sorted(groups)))
    used: list[str] = []
    owned: set[str] = set()
    for g in names:
        mine = {p.lstrip("+") for p in groups[g]}
        if not mine & owned and draw(st.integers(0, 3)):
            used.append(g)
            owned |= mine
    band_objs = {name: _band(name, spec) for name, spec in bands.items()}
    rates: list[dict] = []
    for group in [None, *used]:
        plain = draw(st.integers(0, 2)) > 0
        chosen: list[Band] = []
        for name in draw(st.lists(st.sampled_from(sorted(bands)), max_size=3, unique=True)
                         if bands else st.just([])):
            band = band_objs[name]
            if all(_overlap(band, other) is None for other in chosen):
                chosen.append(band)
        for band in [None, *chosen] if plain else chosen:
            rate: dict = {}
            if group is not None:
                rate["destination"] = group
            if band is not None:
                rate["band"] = band.name
            fee = draw(st.one_of(st.none(), amounts(FEES, 10**6, 7)))
            if fee is not None:
                rate["connect_fee"] = fee
            rate["steps"] = draw(step_lists())
            rates.append(rate)
    if not rates:
        rates.append({"steps": draw(step_lists())})
    rates = draw(st.permutations(rates))
    for i, rate in enumerate(rates):
        rate["id"] = f"r{i}"  # unique in the tariff; the same ids recur across tariffs
    spec: dict = {"service": service}
    if draw(st.integers(0, 3)):
        rounding: dict = {}
        if draw(st.integers(0, 5)):
            # 6 decimals (whole micros) most often: an error of one micro then shows
            rounding["decimals"] = draw(st.one_of(st.just(6), st.integers(0, 6)))
        if draw(st.integers(0, 5)):
            rounding["mode"] = draw(st.sampled_from(MODES))
        spec["rounding"] = rounding
    if draw(st.booleans()):
        spec["max_cost"] = draw(amounts(CAPS, 10**9, 7))
    if draw(st.booleans()):
        spec["quota"] = draw(st.integers(1, 10**6))
    if draw(st.booleans()):
        spec["validity_s"] = draw(st.integers(1, 3600))
    spec["rates"] = [{k: r[k] for k in ("id", "destination", "band", "connect_fee", "steps")
                      if k in r} for r in rates]
    return spec


@st.composite
def catalog_dicts(draw) -> dict:
    services = draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=3, unique=True))
    groups = draw(destination_groups()) if draw(st.integers(0, 5)) else {}
    bands = {f"b{i}": draw(band_specs()) for i in range(draw(st.integers(0, 5)))}
    tariffs: dict[str, dict] = {}
    for i in range(draw(st.one_of(st.integers(len(services), 4), st.integers(1, 4)))):
        svc = services[i] if i < len(services) else draw(st.sampled_from(services))
        tariffs[f"T{i}"] = draw(tariff_specs(svc, groups, bands))
    plans: dict[str, dict] = {}
    for p in range(draw(st.integers(1, 3))):
        mapping = {}
        for svc in services:
            options = sorted(n for n, t in tariffs.items() if t["service"] == svc)
            if options and draw(st.integers(0, 6)):
                mapping[svc] = draw(st.sampled_from(options))
        plan: dict = {"tariffs": mapping}
        if draw(st.integers(0, 3)) == 0:
            plan["allowances"] = [{"service": services[0], "units": draw(st.integers(1, 10**9)),
                                   "period": draw(st.sampled_from(("day", "week", "month",
                                                                   "none")))}]
        plans[f"P{p}"] = plan
    doc: dict = {
        "version": "prop-1",
        "currency": "EUR",
        "timezone": draw(st.sampled_from(TIMEZONES)),
        "services": {s: {"unit": "unit"} for s in services},
    }
    if groups:
        doc["destinations"] = groups
    if bands:
        doc["bands"] = bands
    doc["tariffs"] = tariffs
    doc["plans"] = plans
    return doc


def dump(doc: dict) -> str:
    """YAML text of the document; it must read back (YAML 1.2 loader) as the same document,
    else the catalog under test would not be the one that was generated."""
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
    assert load_yaml(text) == doc, "generated YAML reads back differently"
    return text


def catalog_texts():
    """YAML texts of catalogs built to be valid (a few fail the arithmetic bounds)."""
    return catalog_dicts().map(dump)


@dataclass(frozen=True)
class CatalogCase:
    text: str
    catalog: Catalog


@st.composite
def valid_catalogs(draw) -> CatalogCase:
    """A catalog text and its parsed ``Catalog``; rejected texts are ``assume``d away."""
    text = draw(catalog_texts())
    try:
        catalog = parse_catalog(text)
    except CatalogError:
        assume(False)
        raise AssertionError("unreachable") from None
    return CatalogCase(text, catalog)


# -- usages ----------------------------------------------------------------------------------

def _rate_edges(tariff: Tariff, rate: Rate) -> set[int]:
    """Usages at which something changes for this rate: step bounds, increment edges, the
    fast/slow kernel boundary, where the raw cost crosses the cap or the 9e12 limit."""
    out: set[int] = set()
    for i, step in enumerate(rate.steps):
        for u in (step.start, step.start + step.increment):
            out.update((u - 1, u, u + 1))
        price = step.price / step.per
        if price > 0:
            # usage at which this step alone (plus fee and earlier steps, roughly) reaches
            # the 9e12 limit and the cap
            before = rate.connect_fee + sum(
                (Fraction(rate.steps[j + 1].start - s.start) * s.price / s.per
                 for j, s in enumerate(rate.steps[:i])), Fraction(0))
            for target in (Fraction(MAX_COST_UNITS), tariff.max_cost):
                if target is None or target < before:
                    continue
                u = step.start + int((target - before) / price)
                out.update(range(u - 2, u + 3))
    fast = rate_ints(tariff, rate).fast_max_u
    out.update((fast - 1, fast, fast + 1))
    return {u for u in out if 0 <= u <= MAX_USED}


def _catalog_edges(catalog: Catalog) -> tuple[int, ...]:
    out: set[int] = set()
    for tariff in catalog.tariffs.values():
        for rate in tariff.rates:
            out |= _rate_edges(tariff, rate)
    return tuple(sorted(out))


def usages(edges: tuple[int, ...] | list[int] | set[int] = ()):
    """Used units in [0, 2**40]: zero, small, anywhere, the maximum, near the given edges."""
    options = [
        st.just(0),
        st.integers(1, 200),
        st.integers(0, 100_000),
        st.integers(0, MAX_USED),
        st.just(MAX_USED),
        st.integers(0, 40).map(lambda k: 2**k),
    ]
    if edges:
        options.append(st.sampled_from(sorted(edges)))
        options.append(st.sampled_from(sorted(edges)))  # weight the edges up
    return st.one_of(options)


def rate_usages(tariff: Tariff, rate: Rate):
    return usages(_rate_edges(tariff, rate))


# -- times -----------------------------------------------------------------------------------

def _clamp_ts(ms: int) -> int:
    return min(max(ms, MIN_TS_MS), MAX_TS_MS - 1)


@st.composite
def timestamps(draw, catalog: Catalog) -> int:
    """Epoch ms in [1970, 2100): anywhere; at the catalog zone's UTC-offset changes; at band
    edges or other clock times (local wall clock, either fold); at the ends of the range.
    Edges are hit exactly, a millisecond or a second either side, or within two hours."""
    kind = draw(st.integers(0, 9))
    near = st.one_of(st.sampled_from((0, -1000, -1, 999, 1000)), st.integers(-2000, 2000),
                     st.integers(-7_200_000, 7_200_000))
    if kind <= 2:
        return draw(st.integers(MIN_TS_MS, MAX_TS_MS - 1))
    if kind <= 5:
        starts, _ = transitions(catalog.timezone)
        if len(starts) > 1:
            t = int(starts[draw(st.integers(1, len(starts) - 1))]) * 1000
            return _clamp_ts(t + draw(near))
    if kind <= 8:
        day = datetime(1970, 1, 1) + timedelta(days=draw(st.integers(0, 47480)))
        if catalog.bands and kind <= 7:
            band = catalog.bands[draw(st.sampled_from(sorted(catalog.bands)))]
            edge = draw(st.sampled_from((band.start_s, band.end_s)))
            # on a day the band starts (its end: the next day, when it runs past midnight)
            weekday = draw(st.sampled_from(sorted(band.days)))
            if edge == band.end_s and band.overnight:
                weekday = (weekday + 1) % 7
            day += timedelta(days=(weekday - day.weekday()) % 7)
        else:
            edge = _seconds(draw(st.sampled_from(CLOCKS)))
        local = (day + timedelta(seconds=edge)).replace(
            tzinfo=ZoneInfo(catalog.timezone), fold=draw(st.integers(0, 1)))
        return _clamp_ts(int(local.timestamp()) * 1000 + draw(near))
    return draw(st.one_of(st.integers(MIN_TS_MS, MIN_TS_MS + 86_400_000 * 8),
                          st.integers(MAX_TS_MS - 86_400_000 * 8, MAX_TS_MS - 1)))


# -- destinations and requests ---------------------------------------------------------------

@st.composite
def destinations(draw, catalog: Catalog) -> str | None:
    prefixes = sorted({p for ps in catalog.destinations.values() for p in ps})
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return None
    if kind == 1:
        return ""
    if kind <= 3 or not prefixes:
        return draw(digit_strings(0, 20))
    prefix = draw(st.sampled_from(prefixes))
    if kind == 4:  # a truncation of a catalog prefix: the trie walk stops half way
        return prefix[: draw(st.integers(0, len(prefix)))]
    return (prefix + draw(digit_strings(0, 20)))[:20]


@st.composite
def requests_for(draw, catalog: Catalog, min_size: int = 1, max_size: int = 25
                 ) -> list[Request]:
    """Requests (``kind`` event, ``plan`` set) against this catalog.

    Mostly for a service the plan prices (else any service, or one the catalog lacks). The
    used units aim at the edges of the rate the reference selects for the request, so step
    bounds, the cap and the 9e12 limit of the rate that is actually used get hit.
    """
    edges = _catalog_edges(catalog)
    all_services = sorted(catalog.services) + ["nosuch"]
    n = draw(st.integers(min_size, max_size))
    out = []
    for i in range(n):
        plan = draw(st.sampled_from(sorted(catalog.plans)))
        priced = sorted(catalog.plans[plan].tariffs)
        if priced and draw(st.integers(0, 5)):
            service = draw(st.sampled_from(priced))
        else:
            service = draw(st.sampled_from(all_services))
        ts_ms = draw(timestamps(catalog))
        destination = draw(destinations(catalog))
        target = edges
        tname = catalog.plans[plan].tariffs.get(service)
        if tname is not None:
            tariff = catalog.tariffs[tname]
            try:
                rate = reference.select_rate(catalog, tariff, ts_ms, destination)
            except RatingError:
                pass
            else:
                target = tuple(sorted(_rate_edges(tariff, rate)))
        out.append(Request(
            id=f"q{i}", kind="event", account="acct", service=service, ts_ms=ts_ms,
            used=draw(usages(target)), destination=destination, plan=plan,
        ))
    return out


@st.composite
def catalog_rates(draw, catalog: Catalog) -> tuple[Tariff, Rate]:
    """One (tariff, rate) of the catalog, picked directly rather than through selection."""
    tariff = catalog.tariffs[draw(st.sampled_from(sorted(catalog.tariffs)))]
    return tariff, draw(st.sampled_from(tariff.rates))


def rejection_rate(n: int = 300) -> float:
    """Share of generated catalog texts ``parse_catalog`` rejects (for tuning; see tests)."""
    from hypothesis import HealthCheck, given, settings

    seen = {"ok": 0, "bad": 0}

    @settings(max_examples=n, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(catalog_texts())
    def run(text: str) -> None:
        try:
            parse_catalog(text)
            seen["ok"] += 1
        except CatalogError:
            seen["bad"] += 1

    run()
    return seen["bad"] / max(1, seen["ok"] + seen["bad"])


__all__ = [
    "CatalogCase", "catalog_dicts", "catalog_rates", "catalog_texts", "destinations", "dump",
    "rate_usages", "rejection_rate", "requests_for", "timestamps", "usages", "valid_catalogs",
]
