"""Catalog validation (CONTRACT §4, §4.1 "Catalog validation rejects ..."): one test per rule.

Each test changes one thing in the sample catalog and asserts the YAML path of the problem
and a key phrase of its reason; where a rule has an obvious neighbour that must stay valid
(a band that touches but does not overlap, decimals 6, max_cost exactly 9e12) that control
is asserted too, so the rule cannot pass by rejecting everything.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from charging.catalog import parse_catalog
from charging.errors import CatalogError
from tests.charging.decide_helpers import PLAN, SAMPLE_TEXT

V = "tariffs.VOICE_STD"
R0, R1, R2 = f"{V}.rates[0]", f"{V}.rates[1]", f"{V}.rates[2]"
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def rate(rid: str, destination: str | None = None, band: str | None = None) -> dict:
    """A one-step voice rate, to add to VOICE_STD."""
    out: dict = {"id": rid}
    if destination is not None:
        out["destination"] = destination
    if band is not None:
        out["band"] = band
    out["steps"] = [{"from": 0, "price": "0.15", "per": 60, "increment": 1}]
    return out


# --- steps -------------------------------------------------------------------------------


def test_step_length_not_a_multiple_of_increment(expect_problem, valid):
    # step 0 bills whole minutes (increment 60); a second step from 90 leaves a half minute
    expect_problem({f"{R0}.steps[1].from": 90}, f"{R0}.steps[0]",
                   "not a multiple of its increment")
    valid({f"{R0}.steps[1].from": 120})


@pytest.mark.parametrize("increment", [0, -60])
def test_increment_not_positive(expect_problem, increment):
    expect_problem({f"{R1}.steps[0].increment": increment}, f"{R1}.steps[0].increment",
                   "must be between 1")


@pytest.mark.parametrize("per", [0, -1])
def test_per_not_positive(expect_problem, per):
    expect_problem({f"{R1}.steps[0].per": per}, f"{R1}.steps[0].per", "must be between 1")


def test_negative_price(expect_problem, valid):
    expect_problem({f"{R0}.steps[1].price": "-0.09"}, f"{R0}.steps[1].price",
                   "must not be negative")
    assert valid({f"{R0}.steps[1].price": "0"}).tariffs["VOICE_STD"].rates[0].steps[1].price == 0


def test_negative_connect_fee(expect_problem):
    expect_problem({f"{R0}.connect_fee": "-0.05"}, f"{R0}.connect_fee", "must not be negative")


def test_first_step_not_from_zero(expect_problem):
    expect_problem({f"{R1}.steps[0].from": 10}, f"{R1}.steps", "first step must have from: 0")


def test_duplicate_step_from(expect_problem):
    expect_problem({f"{R0}.steps[1].from": 0}, f"{R0}.steps[1].from", "two steps start at 0")


def test_steps_out_of_order_are_sorted_not_rejected(valid):
    c = valid({f"{R0}.steps": [{"from": 60, "price": "0.09", "per": 60, "increment": 1},
                               {"from": 0, "price": "0.10", "per": 60, "increment": 60}]})
    assert [s.start for s in c.tariffs["VOICE_STD"].rates[0].steps] == [0, 60]


# --- references --------------------------------------------------------------------------


def test_unknown_destination_group(expect_problem):
    expect_problem({f"{R1}.destination": "FR_MOBILE"}, f"{R1}.destination",
                   "unknown destination group 'FR_MOBILE'")


def test_unknown_band(expect_problem):
    expect_problem({f"{R0}.band": "night"}, f"{R0}.band", "unknown band 'night'")


def test_unknown_service_in_tariff(expect_problem):
    expect_problem({"tariffs.SMS_STD.service": "mms"}, "tariffs.SMS_STD.service",
                   "unknown service 'mms'")


def test_plan_names_unknown_service(expect_problem):
    expect_problem({"plans.PREPAID_S.tariffs.mms": "SMS_STD"}, "plans.PREPAID_S.tariffs.mms",
                   "unknown service 'mms'")


def test_plan_names_unknown_tariff(expect_problem):
    expect_problem({"plans.PREPAID_S.tariffs.sms": "SMS_PREMIUM"},
                   "plans.PREPAID_S.tariffs.sms", "unknown tariff 'SMS_PREMIUM'")


def test_plan_maps_service_to_tariff_of_another_service(expect_problem):
    expect_problem({"plans.PREPAID_S.tariffs.sms": "DATA_STD"}, "plans.PREPAID_S.tariffs.sms",
                   "prices 'data', not 'sms'")


def test_allowance_of_unknown_service_and_bad_period(problems_of, find_problem):
    problems = problems_of({"plans.PREPAID_S.allowances[0].service": "video",
                            "plans.PREPAID_S.allowances[+]":
                                {"service": "sms", "units": 10, "period": "year"}})
    find_problem(problems, "plans.PREPAID_S.allowances[0].service", "unknown service 'video'")
    find_problem(problems, "plans.PREPAID_S.allowances[1].period", "'year' is not one of")


# --- tied rates (CONTRACT §4.1 step 2) -----------------------------------------------------


def test_two_bandless_rates_of_one_group_tie(expect_problem):
    # rates[1] "mobile" is already DE_MOBILE without a band
    expect_problem({f"{V}.rates[3]": rate("mobile2", "DE_MOBILE")}, f"{V}.rates[3]",
                   "tied with rate [1]")


def test_two_bandless_rates_without_destination_tie(expect_problem):
    # rates[2] "other" already has no destination and no band
    problem = expect_problem({f"{V}.rates[3]": rate("other2")}, f"{V}.rates[3]",
                              "tied with rate [2]")
    assert "no band" in problem.reason


def test_overlapping_bands_of_one_group_tie(expect_problem, valid):
    evening = {"days": WEEKDAYS, "from": "19:00", "to": "22:00"}
    problem = expect_problem(
        {"bands.evening": evening, f"{V}.rates[3]": rate("mobile_evening", "DE_MOBILE", "evening")},
        f"{V}.rates[3]", "overlap")
    assert "'peak'" in problem.reason and "'evening'" in problem.reason
    assert "mon 19:00" in problem.reason  # where they overlap
    # touching at 20:00 is not overlapping: bands are half-open [from, to)
    valid({"bands.evening": {**evening, "from": "20:00"},
           f"{V}.rates[3]": rate("mobile_evening", "DE_MOBILE", "evening")})


def test_overlapping_bands_of_different_groups_do_not_tie(valid):
    valid({"bands.evening": {"days": WEEKDAYS, "from": "19:00", "to": "22:00"},
           f"{V}.rates[3]": rate("de_evening", "DE", "evening")})


def test_overnight_band_overlaps_next_morning_band(expect_problem, valid):
    # mon 22:00 -> tue 07:00 overlaps a tue 06:00-09:00 band (tue 06:00-07:00)
    night = {"days": ["mon"], "from": "22:00", "to": "07:00"}
    morning = {"days": ["tue"], "from": "06:00", "to": "09:00"}
    changes = {"bands.night": night, "bands.morning": morning,
               f"{V}.rates[3]": rate("de_night", "DE", "night"),
               f"{V}.rates[4]": rate("de_morning", "DE", "morning")}
    problem = expect_problem(changes, f"{V}.rates[4]", "overlap")
    assert "tue 06:00" in problem.reason
    # the same morning band from 07:00 only touches the night band: valid
    valid({**changes, "bands.morning": {**morning, "from": "07:00"}})


def test_sunday_night_band_wraps_into_monday(expect_problem, valid):
    # sun 22:00 -> mon 06:00 overlaps a mon 05:00-08:00 band at the start of the week
    sunday_night = {"days": ["sun"], "from": "22:00", "to": "06:00"}
    early = {"days": ["mon"], "from": "05:00", "to": "08:00"}
    changes = {"bands.sunday_night": sunday_night, "bands.early": early,
               f"{V}.rates[3]": rate("de_sunday_night", "DE", "sunday_night"),
               f"{V}.rates[4]": rate("de_early", "DE", "early")}
    problem = expect_problem(changes, f"{V}.rates[4]", "overlap")
    assert "mon 05:00" in problem.reason
    valid({**changes, "bands.early": {**early, "from": "06:00"}})


def test_one_overnight_band_on_every_day_is_valid(valid):
    # every day 22:00-06:00: consecutive nights touch but one band never ties with itself
    c = valid({"bands.night": {"from": "22:00", "to": "06:00"},
               f"{V}.rates[3]": rate("de_night", "DE", "night")})
    assert c.bands["night"].overnight


def test_same_prefix_in_two_groups_of_one_tariff(expect_problem, valid):
    problem = expect_problem(
        {"destinations.DE_O2": ["+4917", "4918"], f"{V}.rates[3]": rate("o2", "DE_O2")},
        f"{V}.rates", "prefix '4917' is in both destination groups")
    assert "'DE_MOBILE'" in problem.reason and "'DE_O2'" in problem.reason
    # the same overlap of groups is fine when no tariff uses both
    valid({"destinations.DE_O2": ["4917"],
           "tariffs.SMS_STD.rates[0].destination": "DE_O2"})


# --- rounding, amounts, arithmetic bounds ------------------------------------------------


@pytest.mark.parametrize("decimals", [-1, 7])
def test_decimals_outside_0_to_6(expect_problem, decimals):
    expect_problem({f"{V}.rounding.decimals": decimals}, f"{V}.rounding.decimals",
                   "between 0 and 6")


@pytest.mark.parametrize("decimals", [0, 6])
def test_decimals_at_the_limits_are_valid(valid, decimals):
    assert valid({f"{V}.rounding.decimals": decimals}).tariffs["VOICE_STD"].decimals == decimals


def test_bad_rounding_mode(expect_problem):
    expect_problem({f"{V}.rounding.mode": "ceiling"}, f"{V}.rounding.mode",
                   "'ceiling' is not one of up, down, half_up, half_even")


def test_price_that_cannot_be_rated_exactly_in_int64(expect_problem):
    expect_problem({f"{R1}.steps[0].price": "0.000000000000000001",
                    f"{R1}.steps[0].per": 999999937},
                   f"{R1}.steps[0]", "64-bit integers")


def test_prices_without_common_denominator_cannot_be_rated_exactly(problems_of, find_problem):
    # each price alone is fine, but two large coprime `per`s need a denominator D ~ 1e18
    problems = problems_of({f"{R0}.steps[0].per": 999999937, f"{R0}.steps[0].increment": 1,
                            f"{R0}.steps[1].per": 999999929})
    find_problem(problems, R0, "share no denominator")
    assert not any(p.path.startswith(f"{R0}.steps") for p in problems)


def test_max_cost_above_9e12(expect_problem, valid):
    expect_problem({f"{V}.max_cost": "9000000000000.01"}, f"{V}.max_cost",
                   "exceeds 9,000,000,000,000")
    assert valid({f"{V}.max_cost": "9000000000000"}).tariffs["VOICE_STD"].max_cost == 9 * 10**12


def test_connect_fee_above_9e12(expect_problem):
    expect_problem({f"{R0}.connect_fee": "9000000000001"}, f"{R0}.connect_fee",
                   "exceeds 9,000,000,000,000")


def test_amount_ranges_are_listed_beside_a_tariffs_other_problems(problems_of, find_problem):
    # CONTRACT §5: every problem at once; the range checks ran only for tariffs without
    # other problems, so these came out one fix later
    problems = problems_of({f"{V}.service": "fax", f"{R0}.steps[0].per": 0,
                            f"{V}.max_cost": "9000000000001",
                            f"{R1}.connect_fee": "9000000000001"})
    find_problem(problems, f"{V}.service", "unknown service")
    find_problem(problems, f"{R0}.steps[0].per", "must be between 1")
    find_problem(problems, f"{V}.max_cost", "exceeds 9,000,000,000,000")
    # rate [0] did not validate: rate [1] is still named by its own index
    find_problem(problems, f"{R1}.connect_fee", "exceeds 9,000,000,000,000")
    assert not any(p.path.startswith(R2) for p in problems)  # nothing invented


def test_duplicate_rate_id(expect_problem):
    expect_problem({f"{R1}.id": "mobile_peak"}, f"{R1}.id", "'mobile_peak' is used twice")


def test_amount_in_exponent_notation_is_rejected(expect_problem):
    expect_problem({f"{R1}.steps[0].price": "1e-1"}, f"{R1}.steps[0].price",
                   "not a decimal amount")


# --- bands, time zone, currency ----------------------------------------------------------


@pytest.mark.parametrize("field", ["from", "to"])
def test_bad_time_25_00(expect_problem, field):
    expect_problem({f"bands.peak.{field}": "25:00"}, f"bands.peak.{field}", "not a time of day")


def test_24_00_is_not_a_start_time(expect_problem, valid):
    expect_problem({"bands.peak.from": "24:00"}, "bands.peak.from", "00:00-23:59")
    assert valid({"bands.peak.to": "24:00"}).bands["peak"].end_s == 86400


@pytest.mark.parametrize("text", ["8:00", "08:60", "08.00", "eight", "08:00\n",
                                  "\u0660\u0668:\u0660\u0660"])
def test_malformed_times(expect_problem, text):
    expect_problem({"bands.peak.from": text}, "bands.peak.from", "not a time of day")


def test_bad_day_name(expect_problem, valid):
    expect_problem({"bands.peak.days": ["mon", "tue", "funday"]}, "bands.peak.days[2]",
                   "'funday' is not a day")
    assert valid({"bands.peak.days": ["Monday", "sat"]}).bands["peak"].days == {0, 5}


def test_bad_timezone(expect_problem):
    expect_problem({"timezone": "Europe/Berlinn"}, "timezone", "not an IANA time zone")


@pytest.mark.parametrize("currency", ["euro", "eur", "EU", 978, "EUR\n"])
def test_bad_currency(expect_problem, currency):
    expect_problem({"currency": currency}, "currency", "ISO 4217")


# --- reporting ---------------------------------------------------------------------------


def test_several_problems_are_all_reported(problems_of):
    problems = problems_of({"currency": "euro", "timezone": "Mars/Olympus",
                            "plans.PREPAID_S.allowances[0].period": "year"})
    assert sorted(p.path for p in problems) == [
        "currency", "plans.PREPAID_S.allowances[0].period", "timezone"]


def test_several_problems_in_one_tariff_are_all_reported(problems_of, find_problem):
    problems = problems_of({f"{R0}.connect_fee": "-1", f"{R1}.steps[0].per": 0,
                            f"{R2}.band": "night", f"{V}.rounding.mode": "sideways"})
    find_problem(problems, f"{R0}.connect_fee", "negative")
    find_problem(problems, f"{R1}.steps[0].per", "between 1")
    find_problem(problems, f"{R2}.band", "unknown band")
    find_problem(problems, f"{V}.rounding.mode", "not one of")


def test_arithmetic_problems_are_reported_together_with_structural_ones(problems_of):
    problems = problems_of({"currency": "euro",
                            f"{V}.max_cost": "9000000000000.01",
                            f"{R1}.steps[0].price": "0.000000000000000001",
                            f"{R1}.steps[0].per": 999999937})
    expected = ["currency", f"{R1}.steps[0]", f"{V}.max_cost"]
    assert sorted(p.path for p in problems) == sorted(expected)


def test_catalog_error_message_lists_every_problem(problems_of, catalog_yaml):
    with pytest.raises(CatalogError) as info:
        parse_catalog(catalog_yaml({"currency": "euro", "timezone": "Nowhere/City"}),
                      source="my.yaml")
    text = str(info.value)
    assert text.startswith("my.yaml: 2 problem(s)")
    assert "currency: " in text and "timezone: " in text
    assert info.value.code == "CATALOG_INVALID"


def test_not_yaml_is_one_problem(problems_of):
    problems = problems_of(text="tariffs: [unclosed\n")
    assert len(problems) == 1 and "not valid YAML" in problems[0].reason


# --- YAML 1.1 traps ------------------------------------------------------------------------

UNQUOTED = """\
version: 2026-11-b
currency: EUR
timezone: Europe/Berlin
services: {voice: {unit: second}}
destinations:
  INTL: [0049, 00, 4917]
bands:
  day: {days: [mon, tue, wed, thu, fri, sat, sun], from: 08:00, to: 20:00}
  late: {from: 22:30, to: 24:00}
tariffs:
  V:
    service: voice
    rates:
      - {id: day, destination: INTL, band: day, steps: [{from: 0, price: 0.10, per: 60}]}
      - {id: late, destination: INTL, band: late, steps: [{from: 0, price: 0.05, per: 60}]}
      - {id: rest, steps: [{from: 0, price: 0.20, per: 60, increment: 1}]}
plans:
  no: {tariffs: {voice: V}}
"""


def test_unquoted_times_stay_times_not_sexagesimal():
    c = parse_catalog(UNQUOTED)
    assert (c.bands["day"].start_s, c.bands["day"].end_s) == (8 * 3600, 20 * 3600)
    assert (c.bands["late"].start_s, c.bands["late"].end_s) == (22 * 3600 + 1800, 86400)


def test_unquoted_yes_no_and_versions_stay_strings():
    c = parse_catalog(UNQUOTED)
    assert list(c.plans) == ["no"]  # YAML 1.1 would make this the boolean False
    assert c.version == "2026-11-b"


def test_unquoted_decimal_prices_are_exact():
    steps = parse_catalog(UNQUOTED).tariffs["V"].rates
    assert [r.steps[0].price for r in steps] == [Fraction(1, 10), Fraction(1, 20), Fraction(1, 5)]


def test_unquoted_prefix_with_leading_zeros_keeps_its_digits():
    c = parse_catalog(UNQUOTED)
    assert c.destinations["INTL"] == ("0049", "00", "4917")


def test_quoted_prefix_with_leading_zeros_keeps_its_digits(valid):
    assert valid({"destinations.DE": ["0049", "+49"]}).destinations["DE"] == ("0049", "49")


# --- content hash --------------------------------------------------------------------------


def test_sample_validates_with_a_stable_content_hash(sample_text):
    a, b = parse_catalog(sample_text), parse_catalog(sample_text)
    assert a.content_hash == b.content_hash
    assert len(a.content_hash) == 64 and int(a.content_hash, 16) >= 0
    assert a.version == "2026-11-a" and a.currency == "EUR" and a.timezone == "Europe/Berlin"
    assert list(a.tariffs) == ["VOICE_STD", "DATA_STD", "SMS_STD"]


def test_content_hash_changes_with_a_price(sample_text):
    base = parse_catalog(sample_text)
    changed = sample_text.replace('price: "0.12"', 'price: "0.13"')
    assert changed != sample_text
    assert parse_catalog(changed).content_hash != base.content_hash


def test_content_hash_ignores_comments_and_formatting(sample_text):
    base = parse_catalog(sample_text)
    reformatted = "# a new comment\n" + sample_text.replace('price: "0.12"', "price: 0.120")
    assert parse_catalog(reformatted).content_hash == base.content_hash


@pytest.mark.parametrize("changes", [
    {"version": "2026-11-b"},
    {f"{R0}.connect_fee": "0.06"},
    {f"{R0}.steps[1].increment": 30},
    {"bands.peak.to": "20:30"},
    {"destinations.DE_MOBILE[+]": "4918"},
    {"plans.PREPAID_S.allowances[0].units": 1},
    {f"{V}.rounding.mode": "half_even"},
])
def test_content_hash_changes_with_any_semantic_change(catalog_yaml, sample_catalog, changes):
    assert parse_catalog(catalog_yaml(changes)).content_hash != sample_catalog.content_hash


def test_prefix_with_a_trailing_newline_is_not_a_prefix(expect_problem, valid):
    # "$" matched before a trailing newline: such a prefix passed and broke compilation
    expect_problem({"destinations.DE": ["49\n"]}, "destinations.DE[0]", "is not a prefix")
    assert valid({"destinations.DE": ["+49"]}).destinations["DE"] == ("49",)


def test_name_with_a_trailing_newline_is_rejected(problems_of):
    from charging.catalog import _NAME

    assert _NAME.fullmatch("DE") and not _NAME.fullmatch("DE\n")
    problems = problems_of({"destinations.DE\n": ["49"]})
    assert any(p.path.startswith("destinations.DE") for p in problems), problems


# --- inputs that used to pass validation and break later (session 5 review) ---------------

_DATA_ALLOWANCE = "      - {service: data, units: 1073741824, period: month}"


def _problems(text: str) -> list:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text)
    return info.value.problems


def test_allowances_of_one_service_may_not_add_up_past_2_to_the_62():
    # each within 1..2**62, together 3 * 2**62: the kernels hold a service's free units as
    # one int64 (four such crashed grant_at; three refused service for lack of units)
    assert _DATA_ALLOWANCE in SAMPLE_TEXT
    many = "\n".join(f"      - {{service: data, units: {2**62}, period: {p}}}"
                     for p in ("month", "day", "week"))
    problems = _problems(SAMPLE_TEXT.replace(_DATA_ALLOWANCE, many))
    assert [p.path for p in problems] == [f"plans.{PLAN}.allowances"]
    assert "2**62" in problems[0].reason
    two = "\n".join(f"      - {{service: data, units: {2**61}, period: {p}}}"
                    for p in ("month", "day"))
    assert parse_catalog(SAMPLE_TEXT.replace(_DATA_ALLOWANCE, two))  # exactly 2**62: valid


@pytest.mark.parametrize("old,new", [
    ('steps: [{from: 0, price: "0.20", per: 60, increment: 60}]',
     'steps: [{from: 0, price: "0.20", per: 60, increment: 60, price: "0.02"}]'),
    ("currency: EUR\n", "currency: EUR\ncurrency: USD\n"),
])
def test_a_key_given_twice_is_an_error_not_a_silent_overwrite(old, new):
    text = SAMPLE_TEXT.replace(old, new)
    assert text != SAMPLE_TEXT
    problems = _problems(text)
    assert len(problems) == 1 and "duplicate key" in problems[0].reason


@pytest.mark.parametrize("old,new,path", [
    ("        destination: DE_MOBILE\n        band: peak",
     "        destination: [DE_MOBILE]\n        band: peak", f"{V}.rates[0].destination"),
    ("        destination: DE_MOBILE\n        band: peak",
     "        destination: DE_MOBILE\n        band: [peak]", f"{V}.rates[0].band"),
    ("    service: voice\n", "    service: [voice]\n", f"{V}.service"),
    ("tariffs: {voice: VOICE_STD,", "tariffs: {voice: [VOICE_STD],",
     f"plans.{PLAN}.tariffs.voice"),
    ("{service: data, units:", "{service: [data], units:",
     f"plans.{PLAN}.allowances[0].service"),
])
def test_a_list_where_a_name_belongs_is_a_problem_not_a_crash(old, new, path):
    text = SAMPLE_TEXT.replace(old, new, 1)
    assert text != SAMPLE_TEXT
    assert path in [p.path for p in _problems(text)]  # was: TypeError: unhashable type


@pytest.mark.parametrize("tz", ["Europe", "localtime", "posixrules"])
def test_timezone_must_be_a_zone_of_the_iana_list(tz):
    problems = _problems(SAMPLE_TEXT.replace("timezone: Europe/Berlin", f"timezone: {tz}"))
    assert [p.path for p in problems] == ["timezone"]  # "Europe" was an IsADirectoryError
    assert parse_catalog(SAMPLE_TEXT.replace("timezone: Europe/Berlin", "timezone: UTC"))


def test_deeply_nested_yaml_is_a_problem_not_a_recursion_error():
    problems = _problems("[" * 2000 + "]" * 2000)
    assert [p.path for p in problems] == [""] and "too deeply" in problems[0].reason


def test_catalog_file_with_a_byte_order_mark_reads(tmp_path):
    from charging.catalog import load_catalog

    path = tmp_path / "catalog.yaml"
    path.write_text(SAMPLE_TEXT, encoding="utf-8-sig")
    assert load_catalog(path).version == parse_catalog(SAMPLE_TEXT).version
