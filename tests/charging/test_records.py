"""The typed decision and charge records and their one wire form (CONTRACT §3.1, §3.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from charging.decide import BALANCE_LIMIT
from charging.money import format_amount
from charging.records import (
    CHARGE_FIELDS,
    DECISION_FIELDS,
    Charge,
    Decision,
    Result,
    charge_from_wire,
    charge_wire,
    decision_from_wire,
    decision_wire,
    format_balance,
    format_ts,
    parse_amount,
)

MICROS = st.integers(-BALANCE_LIMIT, BALANCE_LIMIT)
DECIMALS = st.integers(0, 6)


def test_result_values_are_the_contracts_codes():
    assert {r.value for r in Result} == {"SUCCESS", "CREDIT_LIMIT_REACHED", "USER_UNKNOWN",
                                         "END_USER_SERVICE_DENIED", "RATING_FAILED",
                                         "SESSION_UNKNOWN"}
    assert Result("END_USER_SERVICE_DENIED") is Result.SERVICE_DENIED


@given(MICROS, DECIMALS)
def test_an_amount_reads_back_as_written(micros, decimals):
    text = format_amount(micros, decimals)
    back, places = parse_amount(text, "cost")
    assert back == micros and places >= decimals
    assert format_amount(back, places) == text


@given(MICROS)
def test_a_balance_reads_back_as_written(micros):
    assert parse_amount(format_balance(micros), "balance")[0] == micros


@given(st.builds(Decision, st.text(max_size=8), st.sampled_from(["event", "initial"]),
                 st.text(max_size=8), st.text(max_size=8), st.none() | st.text(max_size=8),
                 st.none() | st.integers(0, 2**31), st.sampled_from(list(Result)),
                 st.integers(0, 2**40), st.integers(0, 86_400), st.booleans(),
                 st.none() | MICROS, MICROS, DECIMALS, st.none() | st.text(max_size=20)))
def test_a_decision_reads_back_from_its_wire_form(d):
    wire = decision_wire(d)
    assert tuple(wire)[:len(DECISION_FIELDS)] == DECISION_FIELDS
    assert ("detail" in wire) == (d.detail is not None) and type(wire["result"]) is str
    back = decision_from_wire(wire)
    assert decision_wire(back) == wire
    assert (back.result, back.balance, back.charged) == (d.result, d.balance, d.charged)


@given(st.integers(0, 2**31), MICROS, st.integers(0, BALANCE_LIMIT), DECIMALS,
       st.integers(0, 4_102_444_800_000))
def test_a_charge_reads_back_from_its_wire_form(units, cost, uncharged, decimals, ts_ms):
    c = Charge("r", "a", "voice", "s", 1, ts_ms, units, units, 0, cost, "EUR", "T", "rate",
               "v1", -cost, uncharged, decimals)
    wire = charge_wire(c)
    assert tuple(wire) == CHARGE_FIELDS
    back = charge_from_wire(wire)
    assert charge_wire(back) == wire
    assert (back.ts_ms, back.cost, back.uncharged, back.balance) == (ts_ms, cost, uncharged,
                                                                     -cost)


def test_wire_times_are_rfc3339_utc_with_milliseconds():
    assert format_ts(1_795_510_800_250) == "2026-11-24T09:00:00.250Z"
    assert format_ts(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(("change", "message"), [
    ({"result": "MAYBE"}, "'MAYBE' is not a valid Result"),
    ({"charged": 0.1}, "charged: 0.1 is not a decimal string"),
    ({"charged": "0.1234567"}, "charged: '0.1234567' is not a decimal string of at most 6"),
    ({"balance": "1e3"}, "balance: '1e3' is not a decimal string"),
    ({"granted": "300"}, "granted: '300' is not an integer"),
    ({"final": 0}, "final: 0 is not a boolean"),
])
def test_a_wire_decision_that_is_not_one_is_refused_naming_the_field(change, message):
    wire = decision_wire(Decision("r", "event", "a", "sms", None, None, Result.SUCCESS,
                                  balance=1_000_000, charged=90_000, decimals=4))
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        decision_from_wire({**wire, **change})
