"""The product catalog's model (CONTRACT §4): immutable values that ``charging.catalog``
builds from YAML once it has validated every rule, and that the compiler, the exact rater
and the decision rules read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Band:
    """A weekly local-time window: ``days`` (0 = Monday) and [start_s, end_s) seconds of day.

    ``end_s <= start_s`` means the band runs past midnight; ``days`` then names the day it
    starts on (CONTRACT §4.1).
    """

    name: str
    days: frozenset[int]
    start_s: int
    end_s: int

    @property
    def overnight(self) -> bool:
        return self.end_s <= self.start_s

    def week_intervals(self) -> list[tuple[int, int]]:
        """The band as half-open intervals of seconds since Monday 00:00 local, sorted."""
        week = 7 * 86400
        out: list[tuple[int, int]] = []
        for d in sorted(self.days):
            base = d * 86400
            if not self.overnight:
                out.append((base + self.start_s, base + self.end_s))
            else:
                end = base + 86400 + self.end_s
                if end <= week:
                    out.append((base + self.start_s, end))
                else:  # Sunday night into Monday morning wraps to the week's start
                    out.append((base + self.start_s, week))
                    out.append((0, end - week))
        return sorted(out)


@dataclass(frozen=True)
class Step:
    start: int  # `from`: first usage position (units) this step prices
    price: Fraction  # currency units per `per` units
    per: int
    increment: int


@dataclass(frozen=True)
class Rate:
    id: str
    destination: str | None  # destination group name, None = any destination
    band: str | None  # band name, None = any time
    connect_fee: Fraction
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Tariff:
    name: str
    service: str
    quota: int
    validity_s: int
    decimals: int
    mode: str
    max_cost: Fraction | None
    rates: tuple[Rate, ...]


@dataclass(frozen=True)
class Allowance:
    service: str
    units: int
    period: str


@dataclass(frozen=True)
class Plan:
    name: str
    tariffs: dict[str, str]  # service -> tariff name
    allowances: tuple[Allowance, ...]
    fee: dict | None = None  # CONTRACT §8.2, as written; validated by the billing package


@dataclass(frozen=True)
class Catalog:
    version: str
    currency: str
    timezone: str
    services: dict[str, str]  # service -> unit name
    destinations: dict[str, tuple[str, ...]]  # group -> prefixes (digits, no '+')
    bands: dict[str, Band]
    tariffs: dict[str, Tariff]
    plans: dict[str, Plan]
    content_hash: str
    #: unknown keys passed over; only ``parse_catalog(strict_keys=False)`` leaves any
    warnings: tuple[str, ...] = field(default=())
    #: rating group -> the service it names (CONTRACT §6.2: at most one service each)
    rating_groups: dict[int, str] = field(default_factory=dict)
    billing: dict | None = None  # CONTRACT §8.2, as written; validated by the billing package

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def service_of_rating_group(self, rating_group: int) -> str | None:
        """The service a rating group names (a Gy MSCC, an Nchf unit usage), or None."""
        return self.rating_groups.get(rating_group)

    def rating_groups_of(self, service: str) -> tuple[int, ...]:
        """The rating groups a service lists, in the catalog's order."""
        return tuple(rg for rg, svc in self.rating_groups.items() if svc == service)

    def first_plan(self) -> str:
        return next(iter(self.plans))
