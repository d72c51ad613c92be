"""The reference rater: CONTRACT §4.1 and the grant rule of §4.2, read literally, in Fractions.

This is the oracle the kernels are tested against. It is written to be checked by eye
against the contract, not to be fast: plain loops, exact ``Fraction`` money, and the
catalog's time zone through ``zoneinfo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from charging.catalog import Band, Catalog, Rate, Tariff
from charging.errors import RatingError
from charging.money import MAX_COST_UNITS, round_fraction
from charging.records import Result

# the §3.1 codes these rules answer with, as plain strings (``charging.records.Result``)
RATING_FAILED = Result.RATING_FAILED.value
SERVICE_DENIED = Result.SERVICE_DENIED.value


@dataclass(frozen=True)
class RatedUsage:
    cost: Fraction  # currency units, rounded per the tariff
    rated_units: int
    tariff: str
    rate: str


def tariff_for(catalog: Catalog, plan: str, service: str) -> Tariff:
    """Step 1: the plan's tariff for the service, or END_USER_SERVICE_DENIED."""
    name = catalog.plans[plan].tariffs.get(service)
    if name is None:
        raise RatingError(SERVICE_DENIED, f"service {service!r} is not in plan {plan!r}")
    return catalog.tariffs[name]


def band_holds(band: Band, local: datetime) -> bool:
    """Whether the band holds at this local wall-clock time (CONTRACT §4.1 step 2)."""
    day = local.weekday()
    secs = local.hour * 3600 + local.minute * 60 + local.second
    if not band.overnight:
        return day in band.days and band.start_s <= secs < band.end_s
    started_today = day in band.days and secs >= band.start_s
    started_yesterday = (day - 1) % 7 in band.days and secs < band.end_s
    return started_today or started_yesterday


def select_rate(catalog: Catalog, tariff: Tariff, ts_ms: int, destination: str | None) -> Rate:
    """Step 2: the rate for this time and destination, or RATING_FAILED."""
    local = datetime.fromtimestamp(ts_ms // 1000, tz=catalog.zone)
    digits = (destination or "").lstrip("+")
    scored: list[tuple[int, bool, Rate]] = []
    for rate in tariff.rates:
        if rate.band is not None and not band_holds(catalog.bands[rate.band], local):
            continue
        if rate.destination is None:
            scored.append((0, rate.band is not None, rate))
            continue
        lengths = [len(p) for p in catalog.destinations[rate.destination] if digits.startswith(p)]
        if lengths:
            scored.append((max(lengths), rate.band is not None, rate))
    if not scored:
        raise RatingError(RATING_FAILED, f"no rate of tariff {tariff.name!r} matches "
                          f"destination {destination!r} at {local.isoformat()}")
    longest = max(length for length, _, _ in scored)
    best = [s for s in scored if s[0] == longest]
    best.sort(key=lambda s: not s[1])  # a rate with a band beats one without
    return best[0][2]


def rate_units(tariff: Tariff, rate: Rate, used: int) -> tuple[Fraction, int]:
    """Steps 3-6: (cost, rated_units) of ``used`` units at this rate."""
    if used == 0:
        return Fraction(0), 0
    raw = rate.connect_fee
    rated = 0
    steps = rate.steps
    for i, step in enumerate(steps):
        end = steps[i + 1].start if i + 1 < len(steps) else None
        seg = max(0, (used if end is None else min(used, end)) - step.start)
        charged = -(-seg // step.increment) * step.increment
        rated += charged
        raw += Fraction(charged) * step.price / step.per
    if tariff.max_cost is not None:
        raw = min(raw, tariff.max_cost)
    cost = round_fraction(raw, tariff.decimals, tariff.mode)
    if cost > MAX_COST_UNITS:
        raise RatingError(RATING_FAILED, f"cost {cost} exceeds 9,000,000,000,000, the largest "
                          "the engine represents")
    return cost, rated


def rate_usage(catalog: Catalog, plan: str, service: str, ts_ms: int,
               destination: str | None, used: int) -> RatedUsage:
    """Rate one usage as an `event` would be (the whole of §4.1)."""
    tariff = tariff_for(catalog, plan, service)
    rate = select_rate(catalog, tariff, ts_ms, destination)
    cost, rated = rate_units(tariff, rate, used)
    return RatedUsage(cost, rated, tariff.name, rate.id)


def step_cost(tariff: Tariff, rate: Rate, before: int, after: int) -> Fraction:
    """Interim charge of a session step: rating(after) − rating(before) (§4.2)."""
    return rate_units(tariff, rate, after)[0] - rate_units(tariff, rate, before)[0]


def grant_money(tariff: Tariff, rate: Rate, chargeable: int, allowance: int, g: int) -> Fraction:
    """Money reserved for a grant of g units: rating(C + max(0, g − A)) − rating(C)."""
    return step_cost(tariff, rate, chargeable, chargeable + max(0, g - allowance))


def max_grant(tariff: Tariff, rate: Rate, chargeable: int, allowance: int, requested: int,
              available: Fraction | None) -> tuple[int, Fraction]:
    """The largest g ≤ requested whose money fits ``available`` (None: no limit), and its money.

    Rating is non-decreasing in usage, so affordability is monotone in g and a binary search
    finds the largest affordable g. A grant whose rating fails (cost beyond the engine's
    range) is never affordable.
    """

    def money(g: int) -> Fraction | None:
        try:
            return grant_money(tariff, rate, chargeable, allowance, g)
        except RatingError:
            return None

    def fits(g: int) -> bool:
        m = money(g)
        return m is not None and (available is None or m <= available)

    lo, hi = 0, requested  # fits(0) always: rating(C) − rating(C) = 0
    if fits(hi):
        lo = hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo, money(lo) or Fraction(0)
