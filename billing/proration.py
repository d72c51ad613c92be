"""Bill periods and the recurring fee's proration (CONTRACT §8.3).

A period is a calendar month in the catalog's time zone. A plan's fee is charged for the days
of the period the account existed: days are counted whole, in the catalog's time zone, from
the day the account was loaded (inclusive) to the period's last day (inclusive); the line is
amount × days ÷ days in the period, rounded half-up to the currency's decimals.

An end-exclusive count (Kill Bill's: the first day of the next period minus the first day
charged) is the same number of days; the ``killbill`` convention differs only in taking the
fraction days ÷ days-in-period to 9 decimals (half-up) before multiplying.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from fractions import Fraction
from zoneinfo import ZoneInfo

from billing.tax import round_half_up, round_micros

_PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


@dataclass(frozen=True)
class Period:
    """A calendar month: ``start`` its first day, ``end`` its last day (both inclusive)."""

    start: dt.date
    end: dt.date

    @classmethod
    def parse(cls, text: str) -> Period:
        """``"2026-11"`` → November 2026; ``ValueError`` naming the expected form otherwise."""
        m = _PERIOD.fullmatch(text.strip()) if isinstance(text, str) else None
        if not m:
            raise ValueError(f"--period {text!r} is not a month such as 2026-11 (YYYY-MM)")
        return cls.of(dt.date(int(m[1]), int(m[2]), 1))

    @classmethod
    def of(cls, day: dt.date) -> Period:
        """The month holding ``day``."""
        last = calendar.monthrange(day.year, day.month)[1]
        return cls(day.replace(day=1), day.replace(day=last))

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def label(self) -> str:
        return f"{self.start.year:04d}-{self.start.month:02d}"

    def next(self) -> Period:
        return Period.of(self.end + dt.timedelta(days=1))

    def bounds(self, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) as aware instants: local midnight of the first day and of the day after
        the last (DST-aware)."""
        after = self.end + dt.timedelta(days=1)
        return (dt.datetime.combine(self.start, dt.time(), zone),
                dt.datetime.combine(after, dt.time(), zone))


def local_day(at: dt.datetime, zone: ZoneInfo) -> dt.date:
    """The calendar day of an instant in the catalog's time zone."""
    return at.astimezone(zone).date()


def fee_days(period: Period, opened_on: dt.date | None) -> int:
    """Days of ``period`` the account existed, counting its opening day whole; 0 when it was
    opened after the period. ``None`` (opening day unknown): the whole period."""
    if opened_on is None or opened_on <= period.start:
        return period.days
    if opened_on > period.end:
        return 0
    return (period.end - opened_on).days + 1


def prorate(amount: int, days: int, days_in_period: int, decimals: int,
            convention: str = "exact") -> int:
    """``amount`` micros × ``days`` ÷ ``days_in_period``, rounded half-up to ``decimals``
    (micros). ``killbill``: the fraction rounded to 9 decimals half-up first."""
    if days_in_period <= 0 or days < 0:
        raise ValueError(f"cannot prorate {days} of {days_in_period} days")
    fraction = Fraction(days, days_in_period)
    if convention == "killbill":
        fraction = round_half_up(fraction, 9)
    elif convention != "exact":
        raise ValueError(f"unknown proration convention {convention!r}")
    return round_micros(amount * fraction, decimals)
