"""Time: band edges, overnight bands, DST changes, timestamp inputs (CONTRACT §2, §4.1 step 2).

Every band case is checked three ways against a hand-computed expectation:
the kernel's local time (``kernels.week_second``), the kernel rating path
(``rating.rate_requests`` over a compiled catalog) and the reference rater
(``reference.band_holds`` / ``select_rate`` / ``rate_usage``).

Band catalogs (conftest ``band_catalog``) have one band ``b`` and two rates: ``on`` at 1.00 per
unit while the band holds, ``off`` at 2.00 otherwise.

DST facts used below (hand-checked against the published rules):
  Europe/Berlin     2026-03-29 (Sun) 01:00Z: 02:00 CET  -> 03:00 CEST (02:00-03:00 local skipped)
                    2026-10-25 (Sun) 01:00Z: 03:00 CEST -> 02:00 CET  (02:00-03:00 local twice)
  America/New_York  2026-03-08 (Sun) 07:00Z: 02:00 EST  -> 03:00 EDT  (02:00-03:00 local skipped)
                    2026-11-01 (Sun) 06:00Z: 02:00 EDT  -> 01:00 EST  (01:00-02:00 local twice)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from charging import kernels, reference
from charging.catalog import DAYS
from charging.errors import RequestError
from charging.rating import rate_requests
from charging.requests import parse

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"
ON, OFF = True, False


def ms(utc: str) -> int:
    """Epoch ms of an ISO time written in UTC ("2026-03-29T00:59:59.999Z"), via datetime."""
    dt = datetime.fromisoformat(utc.replace("Z", "+00:00"))
    assert dt.utcoffset() == timedelta(0)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def week_text(week_s: int) -> str:
    """Seconds since Monday 00:00 as "Sun 01:59:59"."""
    day, s = divmod(int(week_s), 86400)
    return f"{DAYS[day].capitalize()} {s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def request(i: int, ts: int | str, used: int = 1, destination: str | None = None,
            service: str = "voice"):
    obj = {"id": f"r{i}", "kind": "event", "account": "a", "service": service, "ts": ts,
           "used": used}
    if destination is not None:
        obj["destination"] = destination
    return parse(obj)


def check_band(band_catalog, timezone: str, band: dict,
               cases: list[tuple[str, str, bool]]) -> None:
    """Each case: (UTC instant, expected local "Day HH:MM:SS", whether the band holds)."""
    catalog, compiled = band_catalog(timezone, band)
    zone = ZoneInfo(timezone)
    reqs = [request(i, ms(utc)) for i, (utc, _, _) in enumerate(cases)]
    rated = rate_requests(compiled, reqs)
    tariff = catalog.tariffs["T"]
    failures = []
    for (utc, local_text, holds), req, got in zip(cases, reqs, rated, strict=True):
        want_rate = "on" if holds else "off"
        kernel_local = week_text(kernels.week_second(compiled.tables, req.ts_ms))
        local = datetime.fromtimestamp(req.ts_ms // 1000, tz=zone)
        ref = reference.rate_usage(catalog, "P", "voice", req.ts_ms, None, 1)
        seen = {
            "kernel local time": kernel_local,
            "kernel rate": got.rate,
            "kernel cost": got.cost_micros,
            "reference band_holds": reference.band_holds(catalog.bands["b"], local),
            "reference select_rate": reference.select_rate(catalog, tariff, req.ts_ms, None).id,
            "reference cost": ref.cost,
        }
        want = {
            "kernel local time": local_text,
            "kernel rate": want_rate,
            "kernel cost": 1_000_000 if holds else 2_000_000,
            "reference band_holds": holds,
            "reference select_rate": want_rate,
            "reference cost": Fraction(1 if holds else 2),
        }
        for key in want:
            if seen[key] != want[key]:
                failures.append(f"{utc} ({local_text}): {key} = {seen[key]!r}, "
                                f"expected {want[key]!r}")
        assert got.error is None
    assert not failures, "\n".join(failures)


# --- band edges on the sample catalog ------------------------------------------------------

# Sample: voice to DE_MOBILE is mobile_peak Mon-Fri 08:00-20:00 Berlin, else mobile.
# 61 s cost 0.05 + 0.10 + 1·0.09/60 = 0.1515 at peak, 61·0.12/60 = 0.1220 off-peak (§4.1 table).
PEAK, OFFPEAK = ("mobile_peak", "0.1515", Fraction(1515, 10000)), \
    ("mobile", "0.1220", Fraction(1220, 10000))


def check_sample(sample_catalog, sample_compiled, cases: list[tuple[str, tuple]]) -> None:
    reqs = [request(i, ms(utc), used=61, destination="+4917612345")
            for i, (utc, _) in enumerate(cases)]
    rated = rate_requests(sample_compiled, reqs)
    for (utc, (rate_id, cost_text, cost)), req, got in zip(cases, reqs, rated, strict=True):
        assert (utc, got.rate, got.as_json()["cost"]) == (utc, rate_id, cost_text)
        ref = reference.rate_usage(sample_catalog, "PREPAID_S", "voice", req.ts_ms,
                                   req.destination, 61)
        assert (utc, ref.rate, ref.cost) == (utc, rate_id, cost)


def test_peak_starts_at_0800_and_ends_at_2000_local(sample_catalog, sample_compiled):
    # Tue 2026-11-24, CET (UTC+1)
    check_sample(sample_catalog, sample_compiled, [
        ("2026-11-24T06:59:59.000Z", OFFPEAK),  # 07:59:59.000
        ("2026-11-24T06:59:59.999Z", OFFPEAK),  # 07:59:59.999 still off-peak
        ("2026-11-24T07:00:00.000Z", PEAK),     # 08:00:00.000
        ("2026-11-24T07:00:00.001Z", PEAK),
        ("2026-11-24T18:59:59.999Z", PEAK),     # 19:59:59.999
        ("2026-11-24T19:00:00.000Z", OFFPEAK),  # 20:00:00.000: `to` is excluded
        ("2026-11-28T09:00:00.000Z", OFFPEAK),  # Sat 10:00: not a peak day
    ])


def test_peak_follows_summer_time(sample_catalog, sample_compiled):
    check_sample(sample_catalog, sample_compiled, [
        # Mon 2026-03-23, still CET (UTC+1): 08:00 local is 07:00Z
        ("2026-03-23T06:30:00Z", OFFPEAK),
        ("2026-03-23T07:00:00Z", PEAK),
        # Mon 2026-03-30, CEST (UTC+2): 08:00 local is 06:00Z, 20:00 local is 18:00Z
        ("2026-03-30T05:59:59.999Z", OFFPEAK),
        ("2026-03-30T06:00:00Z", PEAK),
        ("2026-03-30T17:59:59.999Z", PEAK),
        ("2026-03-30T18:00:00Z", OFFPEAK),
    ])


# --- overnight, 24:00, week wrap -----------------------------------------------------------


def test_overnight_band_belongs_to_the_day_it_starts(band_catalog):
    # Fri 22:00 -> Sat 06:00; November 2026 is CET (UTC+1)
    check_band(band_catalog, BERLIN, {"days": ["fri"], "from": "22:00", "to": "06:00"}, [
        ("2026-11-26T21:30:00Z", "Thu 22:30:00", OFF),  # Thursday night: not listed
        ("2026-11-27T04:00:00Z", "Fri 05:00:00", OFF),  # ...nor its morning part
        ("2026-11-27T20:59:59.999Z", "Fri 21:59:59", OFF),
        ("2026-11-27T21:00:00Z", "Fri 22:00:00", ON),
        ("2026-11-27T22:59:59.999Z", "Fri 23:59:59", ON),
        ("2026-11-27T23:00:00Z", "Sat 00:00:00", ON),
        ("2026-11-28T04:59:00Z", "Sat 05:59:00", ON),
        ("2026-11-28T04:59:59.999Z", "Sat 05:59:59", ON),
        ("2026-11-28T05:00:00Z", "Sat 06:00:00", OFF),
        ("2026-11-28T21:30:00Z", "Sat 22:30:00", OFF),  # Saturday night: sat not listed
    ])


def test_overnight_band_listing_saturday_holds_saturday_night(band_catalog):
    check_band(band_catalog, BERLIN, {"days": ["fri", "sat"], "from": "22:00", "to": "06:00"}, [
        ("2026-11-28T21:30:00Z", "Sat 22:30:00", ON),
        ("2026-11-29T04:59:59Z", "Sun 05:59:59", ON),
        ("2026-11-29T05:00:00Z", "Sun 06:00:00", OFF),
        ("2026-11-29T21:30:00Z", "Sun 22:30:00", OFF),
    ])


def test_band_to_24_00_runs_to_midnight(band_catalog):
    check_band(band_catalog, BERLIN, {"days": ["mon"], "from": "20:00", "to": "24:00"}, [
        ("2026-11-23T18:59:59.999Z", "Mon 19:59:59", OFF),
        ("2026-11-23T19:00:00Z", "Mon 20:00:00", ON),
        ("2026-11-23T22:59:59.999Z", "Mon 23:59:59", ON),
        ("2026-11-23T23:00:00Z", "Tue 00:00:00", OFF),
        ("2026-11-22T22:00:00Z", "Sun 23:00:00", OFF),
    ])


def test_whole_day_band_00_00_to_24_00(band_catalog):
    check_band(band_catalog, BERLIN, {"days": ["sat"], "from": "00:00", "to": "24:00"}, [
        ("2026-11-27T22:59:59.999Z", "Fri 23:59:59", OFF),
        ("2026-11-27T23:00:00Z", "Sat 00:00:00", ON),
        ("2026-11-28T22:59:59.999Z", "Sat 23:59:59", ON),
        ("2026-11-28T23:00:00Z", "Sun 00:00:00", OFF),
    ])


def test_sunday_night_band_wraps_into_monday(band_catalog):
    check_band(band_catalog, BERLIN, {"days": ["sun"], "from": "22:00", "to": "06:00"}, [
        ("2026-11-28T22:00:00Z", "Sat 23:00:00", OFF),
        ("2026-11-29T20:59:59Z", "Sun 21:59:59", OFF),
        ("2026-11-29T21:00:00Z", "Sun 22:00:00", ON),
        ("2026-11-29T22:59:59.999Z", "Sun 23:59:59", ON),
        ("2026-11-29T23:00:00Z", "Mon 00:00:00", ON),  # week second 0
        ("2026-11-30T04:59:59.999Z", "Mon 05:59:59", ON),
        ("2026-11-30T05:00:00Z", "Mon 06:00:00", OFF),
        ("2026-11-30T22:00:00Z", "Mon 23:00:00", OFF),
    ])


def test_sunday_night_band_wraps_into_monday_in_new_york(band_catalog):
    # November 2026 after the change: EST (UTC-5)
    check_band(band_catalog, NEW_YORK, {"days": ["sun"], "from": "23:00", "to": "01:00"}, [
        ("2026-11-09T03:59:59Z", "Sun 22:59:59", OFF),
        ("2026-11-09T04:00:00Z", "Sun 23:00:00", ON),
        ("2026-11-09T05:00:00Z", "Mon 00:00:00", ON),
        ("2026-11-09T05:59:59.999Z", "Mon 00:59:59", ON),
        ("2026-11-09T06:00:00Z", "Mon 01:00:00", OFF),
    ])


# --- DST changes ----------------------------------------------------------------------------

SUN = ["sun"]


def test_berlin_spring_forward_skips_0200_to_0300(band_catalog):
    check_band(band_catalog, BERLIN, {"days": SUN, "from": "02:00", "to": "03:00"}, [
        ("2026-03-29T00:30:00Z", "Sun 01:30:00", OFF),
        ("2026-03-29T00:59:59.999Z", "Sun 01:59:59", OFF),
        ("2026-03-29T01:00:00Z", "Sun 03:00:00", OFF),  # 02:00 local never happens
        ("2026-03-29T01:30:00Z", "Sun 03:30:00", OFF),
    ])


def test_berlin_spring_forward_hour_before_and_after(band_catalog):
    check_band(band_catalog, BERLIN, {"days": SUN, "from": "01:00", "to": "02:00"}, [
        ("2026-03-28T23:59:59.999Z", "Sun 00:59:59", OFF),
        ("2026-03-29T00:00:00Z", "Sun 01:00:00", ON),
        ("2026-03-29T00:59:59.999Z", "Sun 01:59:59", ON),
        ("2026-03-29T01:00:00Z", "Sun 03:00:00", OFF),
    ])
    check_band(band_catalog, BERLIN, {"days": SUN, "from": "03:00", "to": "04:00"}, [
        ("2026-03-29T00:59:59.999Z", "Sun 01:59:59", OFF),
        ("2026-03-29T01:00:00Z", "Sun 03:00:00", ON),
        ("2026-03-29T01:59:59.999Z", "Sun 03:59:59", ON),
        ("2026-03-29T02:00:00Z", "Sun 04:00:00", OFF),
    ])


def test_berlin_fall_back_repeats_0200_to_0300(band_catalog):
    # the band holds for two real hours: 00:00Z-01:00Z in CEST, then 01:00Z-02:00Z in CET
    check_band(band_catalog, BERLIN, {"days": SUN, "from": "02:00", "to": "03:00"}, [
        ("2026-10-24T23:59:59.999Z", "Sun 01:59:59", OFF),
        ("2026-10-25T00:00:00Z", "Sun 02:00:00", ON),
        ("2026-10-25T00:59:59.999Z", "Sun 02:59:59", ON),
        ("2026-10-25T01:00:00Z", "Sun 02:00:00", ON),  # the second 02:00
        ("2026-10-25T01:59:59.999Z", "Sun 02:59:59", ON),
        ("2026-10-25T02:00:00Z", "Sun 03:00:00", OFF),
    ])


def test_berlin_overnight_band_across_both_changes(band_catalog):
    night = {"days": ["sat"], "from": "22:00", "to": "06:00"}
    check_band(band_catalog, BERLIN, night, [
        # Sat 2026-03-28 22:00 CET -> Sun 06:00 CEST: 7 real hours
        ("2026-03-28T20:59:59Z", "Sat 21:59:59", OFF),
        ("2026-03-28T21:00:00Z", "Sat 22:00:00", ON),
        ("2026-03-29T03:59:59.999Z", "Sun 05:59:59", ON),
        ("2026-03-29T04:00:00Z", "Sun 06:00:00", OFF),
        # Sat 2026-10-24 22:00 CEST -> Sun 06:00 CET: 9 real hours
        ("2026-10-24T19:59:59Z", "Sat 21:59:59", OFF),
        ("2026-10-24T20:00:00Z", "Sat 22:00:00", ON),
        ("2026-10-25T04:59:59.999Z", "Sun 05:59:59", ON),
        ("2026-10-25T05:00:00Z", "Sun 06:00:00", OFF),
    ])


def test_new_york_spring_forward_skips_0200_to_0300(band_catalog):
    check_band(band_catalog, NEW_YORK, {"days": SUN, "from": "02:00", "to": "03:00"}, [
        ("2026-03-08T06:59:59.999Z", "Sun 01:59:59", OFF),
        ("2026-03-08T07:00:00Z", "Sun 03:00:00", OFF),
    ])
    check_band(band_catalog, NEW_YORK, {"days": SUN, "from": "01:00", "to": "02:00"}, [
        ("2026-03-08T05:59:59.999Z", "Sun 00:59:59", OFF),
        ("2026-03-08T06:00:00Z", "Sun 01:00:00", ON),
        ("2026-03-08T06:59:59.999Z", "Sun 01:59:59", ON),
        ("2026-03-08T07:00:00Z", "Sun 03:00:00", OFF),
    ])


def test_new_york_fall_back_repeats_0100_to_0200(band_catalog):
    check_band(band_catalog, NEW_YORK, {"days": SUN, "from": "01:00", "to": "02:00"}, [
        ("2026-11-01T04:59:59.999Z", "Sun 00:59:59", OFF),
        ("2026-11-01T05:00:00Z", "Sun 01:00:00", ON),  # EDT
        ("2026-11-01T05:59:59.999Z", "Sun 01:59:59", ON),
        ("2026-11-01T06:00:00Z", "Sun 01:00:00", ON),  # EST, the second 01:00
        ("2026-11-01T06:59:59.999Z", "Sun 01:59:59", ON),
        ("2026-11-01T07:00:00Z", "Sun 02:00:00", OFF),
    ])
    check_band(band_catalog, NEW_YORK, {"days": SUN, "from": "02:00", "to": "03:00"}, [
        ("2026-11-01T06:59:59.999Z", "Sun 01:59:59", OFF),
        ("2026-11-01T07:00:00Z", "Sun 02:00:00", ON),  # only one real hour
        ("2026-11-01T07:59:59.999Z", "Sun 02:59:59", ON),
        ("2026-11-01T08:00:00Z", "Sun 03:00:00", OFF),
    ])


@pytest.mark.parametrize("timezone, change_utc", [
    (BERLIN, "2026-03-29T01:00:00Z"), (BERLIN, "2026-10-25T01:00:00Z"),
    (NEW_YORK, "2026-03-08T07:00:00Z"), (NEW_YORK, "2026-11-01T06:00:00Z"),
])
def test_kernel_local_time_matches_zoneinfo_around_each_change(band_catalog, timezone,
                                                               change_utc):
    """Every 5 minutes (and ±1 ms of each) for a day either side of the change: the kernel's
    week second equals zoneinfo's wall clock, and kernel and reference pick the same rate."""
    catalog, compiled = band_catalog(timezone, {"days": SUN, "from": "01:00", "to": "03:00"})
    zone = ZoneInfo(timezone)
    centre = ms(change_utc)
    instants = [centre + k * 300_000 + d for k in range(-288, 289) for d in (-1, 0, 1)]
    rated = rate_requests(compiled, [request(i, t) for i, t in enumerate(instants)])
    tariff = catalog.tariffs["T"]
    for t, got in zip(instants, rated, strict=True):
        local = datetime.fromtimestamp(t // 1000, tz=zone)
        want_ws = local.weekday() * 86400 + local.hour * 3600 + local.minute * 60 + local.second
        assert kernels.week_second(compiled.tables, t) == want_ws, t
        assert got.rate == reference.select_rate(catalog, tariff, t, None).id, t


# --- timestamp inputs -----------------------------------------------------------------------

TUE_0900Z = 1_795_510_800_000  # 2026-11-24T09:00:00Z = 10:00 Berlin, hand-computed:
# (56·365 + 14 leap days + 304 + 23) days · 86400 s + 9 h = 1 795 510 800 s


@pytest.mark.parametrize("ts", [
    TUE_0900Z,
    "2026-11-24T09:00:00Z",
    "2026-11-24T09:00:00z",
    "2026-11-24t09:00:00Z",
    "2026-11-24 09:00:00Z",
    "2026-11-24T10:00:00+01:00",
    "2026-11-24T04:00:00-05:00",
    "2026-11-24T14:30:00+05:30",
    "2026-11-23T23:00:00-10:00",  # the day before, locally
    "2026-11-24T09:00:00.000Z",
    "2026-11-24T09:00:00.000000000+00:00",
])
def test_epoch_ms_and_rfc3339_give_the_same_instant(ts):
    assert request(0, ts).ts_ms == TUE_0900Z


@pytest.mark.parametrize("ts, extra_ms", [
    ("2026-11-24T09:00:00.5Z", 500),
    ("2026-11-24T09:00:00.05Z", 50),
    ("2026-11-24T09:00:00.123Z", 123),
    ("2026-11-24T09:00:00.123456789Z", 123),  # below the millisecond: floored
    ("2026-11-24T09:00:00.999999+00:00", 999),
    ("2026-11-24T10:00:00.250+01:00", 250),
    ("2026-11-24T04:00:00.001-05:00", 1),
])
def test_fractional_seconds(ts, extra_ms):
    assert request(0, ts).ts_ms == TUE_0900Z + extra_ms


def test_equivalent_timestamps_rate_identically(sample_compiled):
    forms = [TUE_0900Z, "2026-11-24T10:00:00+01:00", "2026-11-24T04:00:00-05:00",
             "2026-11-24T09:00:00Z"]
    rated = rate_requests(sample_compiled,
                          [request(i, ts, used=61, destination="4917612345")
                           for i, ts in enumerate(forms)])
    assert {(r.rate, r.as_json()["cost"]) for r in rated} == {("mobile_peak", "0.1515")}


@pytest.mark.parametrize("ts", [
    "2026-11-24T09:00:00",  # no offset: ambiguous, rejected
    "2026-11-24",
    "2026-11-24T09:00Z",
    "2026-02-30T10:00:00Z",
    "2026-11-24T25:00:00Z",
    "2026-11-24T09:00:00+25:00",
    "2026-11-24T09:00:00.Z",
    "1795510800000",  # epoch ms must be a number, not a string
    1795510800000.0,
    True,
    [2026, 11, 24],
])
def test_malformed_timestamps_are_rejected(ts):
    with pytest.raises(RequestError) as info:
        request(0, ts)
    assert info.value.code == "INVALID_FIELD"
    assert "'ts'" in info.value.detail


@pytest.mark.parametrize("ts", [
    -1,
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:30:00+01:00",  # 1969-12-31T23:30Z
    "1900-01-01T00:00:00Z",
    4_102_444_800_000,  # 2100-01-01T00:00:00Z
    "2100-01-01T00:00:00Z",
    "2100-01-01T01:30:00+01:00",  # 2100-01-01T00:30Z
    2**62,
])
def test_timestamps_outside_1970_to_2099_are_rejected(ts):
    with pytest.raises(RequestError) as info:
        request(0, ts)
    assert info.value.code == "INVALID_FIELD"
    assert "outside the supported range" in info.value.detail


@pytest.mark.parametrize("timezone, ts, local_text", [
    (BERLIN, 0, "Thu 01:00:00"),  # 1970-01-01 was a Thursday; Berlin was UTC+1
    (NEW_YORK, 0, "Wed 19:00:00"),
    (BERLIN, "1970-01-01T00:00:00Z", "Thu 01:00:00"),
    (BERLIN, 4_102_444_799_999, "Fri 00:59:59"),  # 2099-12-31 is a Thursday
    (NEW_YORK, "2099-12-31T23:59:59.999Z", "Thu 18:59:59"),
])
def test_timestamps_at_the_ends_of_the_range_are_rated(band_catalog, timezone, ts, local_text):
    catalog, compiled = band_catalog(timezone, {"days": ["thu"], "from": "00:00", "to": "24:00"})
    req = request(0, ts)
    assert week_text(kernels.week_second(compiled.tables, req.ts_ms)) == local_text
    got = rate_requests(compiled, [req])[0]
    want = reference.select_rate(catalog, catalog.tariffs["T"], req.ts_ms, None).id
    assert got.error is None and got.rate == want == ("on" if local_text[:3] == "Thu" else "off")


@pytest.mark.parametrize("label, period, expected", [
    ("2026-W48", "month", "2026-11"),  # ISO week 48 of 2026 begins Monday 23 November
    ("2026-W01", "month", "2025-12"),  # ... and week 1 on Monday 29 December 2025
    ("2026-W01", "day", "2025-12-29"),
    ("2026-11", "week", "2026-W44"),  # 1 November 2026 is a Sunday: ISO week 44
    ("2026-11-24", "month", "2026-11"),
    ("2026-11-24", "none", "-"),
    ("-", "month", ""),  # a bucket without a period began before any: sorts first
    ("-", "none", "-"),
])
def test_label_as_names_the_day_a_period_began_in_another_kind(label, period, expected):
    from charging.state import LABEL_LENGTH, label_as

    assert label_as(label, period) == expected
    assert expected in ("", "-") or len(expected) == LABEL_LENGTH[period]
