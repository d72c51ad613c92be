"""Periods and fee proration (CONTRACT §8.3), pure: months of 28–31 days, mid-month opening."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from billing.proration import Period, fee_days, local_day, prorate

FEE = 4_990_000  # 4.99


@pytest.mark.parametrize(("month", "days"), [("2026-02", 28), ("2028-02", 29),
                                             ("2026-04", 30), ("2026-12", 31)])
def test_months_of_28_to_31_days(month, days):
    p = Period.parse(month)
    assert p.days == days
    assert fee_days(p, None) == days
    assert prorate(FEE, fee_days(p, p.start), p.days, 2) == FEE  # whole month: the amount


@pytest.mark.parametrize(("month", "opened", "days", "amount"), [
    ("2026-02", "2026-02-15", 14, 2_500_000),  # 4.99 × 14/28 = 2.495 → 2.50
    ("2028-02", "2028-02-15", 15, 2_580_000),  # × 15/29 = 2.5810...
    ("2026-04", "2026-04-30", 1, 170_000),     # × 1/30 = 0.1663...
    ("2026-12", "2026-12-02", 30, 4_830_000),  # × 30/31 = 4.8290...
])
def test_an_account_opened_mid_month_pays_for_its_days(month, opened, days, amount):
    p = Period.parse(month)
    got_days = fee_days(p, dt.date.fromisoformat(opened))
    assert got_days == days
    assert prorate(FEE, got_days, p.days, 2) == amount


def test_half_a_cent_rounds_up():
    # 4.99 × 14 / 28 = 2.495 exactly → 2.50 (half-up)
    assert prorate(FEE, 14, 28, 2) == 2_500_000


def test_opened_after_the_period_or_before_it():
    p = Period.parse("2026-11")
    assert fee_days(p, dt.date(2026, 12, 1)) == 0
    assert fee_days(p, dt.date(2025, 1, 1)) == 30
    assert fee_days(p, dt.date(2026, 11, 30)) == 1


def test_the_opening_day_is_the_catalog_time_zones():
    """Loaded at 23:30 UTC on 30 Nov: already 1 Dec in Berlin, so November has no fee."""
    at = dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.UTC)
    day = local_day(at, ZoneInfo("Europe/Berlin"))
    assert day == dt.date(2026, 12, 1)
    assert fee_days(Period.parse("2026-11"), day) == 0


def test_period_bounds_follow_the_zone_and_dst():
    start, end = Period.parse("2026-03").bounds(ZoneInfo("Europe/Berlin"))
    assert start.astimezone(dt.UTC) == dt.datetime(2026, 2, 28, 23, 0, tzinfo=dt.UTC)
    assert end.astimezone(dt.UTC) == dt.datetime(2026, 3, 31, 22, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-01", "", "2026-01-01"])
def test_bad_periods_say_the_form(text):
    with pytest.raises(ValueError, match="YYYY-MM"):
        Period.parse(text)


def test_killbill_rounds_the_fraction_first():
    # 1e9 × 1/3: exact 333333333.33, Kill Bill's 0.333333333 × 1e9 = 333333333.00
    assert prorate(1_000_000_000 * 1_000_000, 1, 3, 2) == 333_333_333_330_000
    assert prorate(1_000_000_000 * 1_000_000, 1, 3, 2, "killbill") == 333_333_333_000_000
