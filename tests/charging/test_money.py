"""Money: exact decimal parsing, the four rounding modes, micros formatting (charging.money)."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from charging.money import (
    MAX_COST_MICROS,
    MAX_COST_UNITS,
    ROUNDING_MODES,
    format_fraction,
    format_micros,
    parse_decimal,
    round_fraction,
    to_micros,
)
from charging.yamlio import load_yaml

# --- parse_decimal ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("0.05", F(1, 20)),
    ("0.10", F(1, 10)),
    ("0.1", F(1, 10)),
    ("5", F(5)),
    (".5", F(1, 2)),
    ("-0.5", F(-1, 2)),
    ("+2.25", F(9, 4)),
    ("-.25", F(-1, 4)),
    ("  1.50 ", F(3, 2)),
    ("000.000001", F(1, 10**6)),
    ("0.000000000000000001", F(1, 10**18)),
    ("9000000000000.000000", F(9 * 10**12)),
    ("123456789012345678901234567890.5", F(1234567890123456789012345678905, 10)),
])
def test_parse_decimal_strings_are_exact(text, value):
    got = parse_decimal(text)
    assert isinstance(got, F) and got == value


@pytest.mark.parametrize("value, expected", [(0, F(0)), (7, F(7)), (-3, F(-3)),
                                             (10**30, F(10**30))])
def test_parse_decimal_ints(value, expected):
    assert parse_decimal(value) == expected


@pytest.mark.parametrize("text", ["\u0663", "\uff13", "\U0001d7cf\U0001d7ce",
                                  "\u0661\u0660\u0660.\u0665\u0660", "1.5\n2"])
def test_parse_decimal_takes_ascii_digits_only(text):
    # int() reads Arabic-Indic and full-width digits; an amount should not
    with pytest.raises(ValueError):
        parse_decimal(text)


@pytest.mark.parametrize("value, expected", [
    (0.1, F(1, 10)),  # the binary float 0.1 is 3602879701896397/36028797018963968
    (0.05, F(1, 20)),
    (0.09, F(9, 100)),
    (1.5, F(3, 2)),
    (100.0, F(100)),
    (0.3, F(3, 10)),
])
def test_parse_decimal_floats_mean_what_was_typed(value, expected):
    assert parse_decimal(value) == expected


@pytest.mark.parametrize("yaml_text, expected", [
    ("price: 0.10", F(1, 10)),
    ("price: 0.09", F(9, 100)),
    ("price: 12", F(12)),
    ('price: "0.10"', F(1, 10)),
])
def test_parse_decimal_of_yaml_scalars(yaml_text, expected):
    assert parse_decimal(load_yaml(yaml_text)["price"]) == expected


@pytest.mark.parametrize("yaml_text, expected", [("price: 0.00001", F(1, 100000)),
                                                 ("price: 0.000015", F(15, 1000000))])
def test_parse_decimal_small_yaml_floats(yaml_text, expected):
    assert parse_decimal(load_yaml(yaml_text)["price"]) == expected


@pytest.mark.parametrize("value", [
    "1e5", "1E5", "1.5e-3", "abc", "", " ", "0x10", "1,50", "1.2.3", "€1", "NaN", "inf",
    "--1", "1_000", ".", "+", True, False, None, [1], {"a": 1}, F(1, 3),
])
def test_parse_decimal_rejects(value):
    with pytest.raises(ValueError):
        parse_decimal(value)


def test_parse_decimal_reason_says_how_to_write_it():
    with pytest.raises(ValueError, match=r"not a decimal amount.*0\.05"):
        parse_decimal("1e5")


# --- round_fraction ----------------------------------------------------------------------------

#              x                    decimals   up        down      half_up    half_even
ROUNDING = [
    (F(5, 100000), 4, "0.0001", "0.0000", "0.0001", "0.0000"),  # tie, even below
    (F(15, 100000), 4, "0.0002", "0.0001", "0.0002", "0.0002"),  # tie, odd below
    (F(25, 100000), 4, "0.0003", "0.0002", "0.0003", "0.0002"),
    (F(149, 1000000), 4, "0.0002", "0.0001", "0.0001", "0.0001"),  # just below a tie
    (F(151, 1000000), 4, "0.0002", "0.0001", "0.0002", "0.0002"),  # just above a tie
    (F(1, 3), 4, "0.3334", "0.3333", "0.3333", "0.3333"),
    (F(2, 3), 4, "0.6667", "0.6666", "0.6667", "0.6667"),
    (F(1515, 10000), 4, "0.1515", "0.1515", "0.1515", "0.1515"),  # exact: unchanged
    (F(0), 4, "0", "0", "0", "0"),
    (F(5, 2), 0, "3", "2", "3", "2"),
    (F(7, 2), 0, "4", "3", "4", "4"),
    (F(1, 1024), 6, "0.000977", "0.000976", "0.000977", "0.000977"),
    (F(1, 2 * 10**6), 6, "0.000001", "0", "0.000001", "0"),
    (F(3, 2 * 10**6), 6, "0.000002", "0.000001", "0.000002", "0.000002"),
    (F(10000000000001, 10**12), 2, "10.01", "10", "10", "10"),
    (F(10**18 + 1, 10**7), 4, "100000000000.0001", "100000000000", "100000000000",
     "100000000000"),
]


@pytest.mark.parametrize("x, decimals, up, down, half_up, half_even", ROUNDING)
def test_round_fraction_all_modes(x, decimals, up, down, half_up, half_even):
    got = {mode: round_fraction(x, decimals, mode) for mode in ROUNDING_MODES}
    assert got == {"up": F(up), "down": F(down), "half_up": F(half_up),
                   "half_even": F(half_even)}


def test_contract_data_example_rounds_up_to_0_0001():
    # CONTRACT §4.1: 2048 · 0.01 / 1048576 = 0.00001953125 -> 0.0001
    raw = 2048 * F(1, 100) / 1048576
    assert raw == F("0.00001953125")
    assert round_fraction(raw, 4, "up") == F(1, 10000)
    assert round_fraction(raw, 4, "half_up") == 0


@pytest.mark.parametrize("mode", ROUNDING_MODES)
@pytest.mark.parametrize("decimals", range(7))
def test_round_fraction_result_has_the_decimals_and_is_close(mode, decimals):
    scale = 10**decimals
    for x in (F(1, 7), F(22, 7), F(123456789, 1000003), F(999999, 10**6)):
        r = round_fraction(x, decimals, mode)
        assert (r * scale).denominator == 1
        assert abs(r - x) < F(1, scale)
        assert (r >= x) if mode == "up" else True
        assert (r <= x) if mode == "down" else True
        if mode in ("half_up", "half_even"):
            assert abs(r - x) <= F(1, 2 * scale)


def test_round_fraction_rejects_negative_amounts_and_unknown_modes():
    with pytest.raises(ValueError):
        round_fraction(F(-1, 3), 4, "up")
    with pytest.raises(ValueError, match="ceiling"):
        round_fraction(F(1, 3), 4, "ceiling")


# --- micros ---------------------------------------------------------------------------------


@pytest.mark.parametrize("micros, decimals, text", [
    (150_000, 4, "0.1500"),
    (151_500, 4, "0.1515"),
    (0, 4, "0.0000"),
    (0, 6, "0.000000"),
    (123, 6, "0.000123"),
    (12_345_600, 4, "12.3456"),
    (5_000_000, 2, "5.00"),
    (-1_500_000, 2, "-1.50"),
    (-100, 4, "-0.0001"),
    (5_000_000, 0, "5"),
    (-7_000_000, 0, "-7"),
    (MAX_COST_MICROS, 4, "9000000000000.0000"),
    (2**63 - 1 - (2**63 - 1) % 10**6, 0, str((2**63 - 1) // 10**6)),
])
def test_format_micros(micros, decimals, text):
    assert format_micros(micros, decimals) == text


def test_format_micros_defaults_to_six_decimals():
    assert format_micros(1) == "0.000001"


@pytest.mark.parametrize("micros, decimals", [(150_001, 4), (1, 5), (10, 4), (-1, 2)])
def test_format_micros_refuses_to_drop_digits(micros, decimals):
    with pytest.raises(ValueError):
        format_micros(micros, decimals)


@pytest.mark.parametrize("micros", [1_500_000, 1, -2_500_000])
def test_format_micros_zero_decimals_refuses_to_drop_digits(micros):
    with pytest.raises(ValueError):
        format_micros(micros, 0)


def test_to_micros_and_format_fraction():
    assert to_micros(F(1515, 10000)) == 151_500
    assert to_micros(F(-1, 10**6)) == -1
    with pytest.raises(ValueError):
        to_micros(F(1, 3))
    with pytest.raises(ValueError):
        to_micros(F(1, 10**7))
    assert format_fraction(F(1515, 10000), 4) == "0.1515"
    assert format_fraction(F(122, 1000), 4) == "0.1220"


def test_largest_cost_constants():
    assert MAX_COST_UNITS == 9 * 10**12
    assert MAX_COST_MICROS == MAX_COST_UNITS * 10**6 < 2**63
