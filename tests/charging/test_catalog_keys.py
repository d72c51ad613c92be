"""Strict catalog keys: an unknown key is an error with the key likely meant, listed with
every other problem; the keys CONTRACT v2 adds (rating groups §6.2, billing and fees §8.2)
are known.

Unknown keys used to be warnings: ``maxcost:`` dropped VOICE_STD's cap of 5.00, ``incremnt:``
rated 30 s of mobile_peak at 0.1000 instead of 0.1500, and the catalog loaded "active".
"""

from __future__ import annotations

import pytest

from charging.catalog import parse_catalog
from tests.charging.conftest import DELETE

V = "tariffs.VOICE_STD"
R0 = f"{V}.rates[0]"
#: the content hash of the sample catalog as 1d4aa33 computed and stored it in Redis
SAMPLE_HASH = "5d2acf7be69e45a5a0148f4143cc168197bb13572b24cf6ed3a65e9f3655740a"


def misspelt(path: str, old: str, new: str, value: object) -> dict:
    """Changes to the sample that give the key ``old`` at ``path`` as ``new``."""
    def at(key: str) -> str:
        return f"{path}.{key}" if path else key
    return {at(old): DELETE, at(new): value}


@pytest.mark.parametrize("path, old, new, value, reason", [
    (V, "max_cost", "maxcost", "5.00", "unknown key 'maxcost' — did you mean 'max_cost'?"),
    (V, "quota", "qouta", 300, "unknown key 'qouta' — did you mean 'quota'?"),
    (f"{R0}.steps[0]", "increment", "incremnt", 60,
     "unknown key 'incremnt' — did you mean 'increment'?"),
    ("bands.peak", "days", "day", ["mon"], "unknown key 'day' — did you mean 'days'?"),
    ("plans.PREPAID_S", "allowances", "allowance", [],
     "unknown key 'allowance' — did you mean 'allowances'?"),
    ("", "timezone", "time_zone", "Europe/Berlin",
     "unknown key 'time_zone' — did you mean 'timezone'?"),
])
def test_a_misspelt_key_is_an_error_with_a_suggestion(problems_of, path, old, new, value,
                                                      reason):
    problems = problems_of(misspelt(path, old, new, value))
    assert [(p.path, p.reason) for p in problems] == [(path, reason)]


def test_str_of_the_problem_reads_as_path_then_reason(problems_of):
    (p,) = problems_of(misspelt(V, "max_cost", "maxcost", "5.00"))
    assert str(p) == "tariffs.VOICE_STD: unknown key 'maxcost' — did you mean 'max_cost'?"


def test_unknown_keys_are_listed_with_every_other_problem(problems_of):
    problems = problems_of({"owner": "pricing team", f"{V}.discount": "10%",
                            f"{R0}.comment": "peak", "bands.peak.timezone": "UTC",
                            "currency": "euro"})
    got = {(p.path, p.reason) for p in problems}
    assert got == {
        ("", "unknown key 'owner' (known: version, currency, timezone, services, destinations, "
             "bands, tariffs, plans, billing)"),
        (V, "unknown key 'discount' (known: service, quota, validity_s, rounding, max_cost, "
            "rates)"),
        (R0, "unknown key 'comment' (known: id, destination, band, connect_fee, steps)"),
        ("bands.peak", "unknown key 'timezone' (known: days, from, to)"),
        ("currency", "must be an ISO 4217 code such as EUR, got 'euro'"),
    }


def test_a_key_that_is_not_text_is_unknown_too(problems_of):
    (p,) = problems_of({f"{V}.7": "x"})
    assert p.path == V and p.reason.startswith("unknown key '7'")


def test_unknown_keys_pass_over_only_when_asked(catalog_yaml):
    text = catalog_yaml(misspelt(V, "max_cost", "maxcost", "5.00"))
    cat = parse_catalog(text, strict_keys=False)  # a version stored by an earlier release
    assert cat.tariffs["VOICE_STD"].max_cost is None  # as it rated then: no cap
    assert cat.warnings == ("tariffs.VOICE_STD: unknown key 'maxcost' — did you mean "
                            "'max_cost'?",)


def test_the_sample_loads_strictly_and_its_hash_is_the_stored_one(sample_text):
    cat = parse_catalog(sample_text)
    assert cat.warnings == () and cat.rating_groups == {} and cat.billing is None
    assert cat.content_hash == SAMPLE_HASH  # stored versions stay loadable as themselves


# --- rating groups (CONTRACT §6.2) ----------------------------------------------------------


def test_rating_groups_name_their_service(valid):
    cat = valid({"services.voice.rating_groups": [100, 101], "services.data.rating_groups":
                 [0, 4294967295]})
    assert cat.rating_groups == {100: "voice", 101: "voice", 0: "data", 4294967295: "data"}
    assert cat.service_of_rating_group(101) == "voice"
    assert cat.service_of_rating_group(7) is None
    assert cat.rating_groups_of("data") == (0, 4294967295)
    assert cat.rating_groups_of("sms") == ()
    assert cat.content_hash != SAMPLE_HASH


def test_a_rating_group_of_two_services_is_an_error(expect_problem):
    p = expect_problem({"services.voice.rating_groups": [100, 200],
                        "services.data.rating_groups": [300, 200]},
                       "services.data.rating_groups[1]", "already names service 'voice'")
    assert p.reason == ("rating group 200 already names service 'voice' (at "
                        "services.voice.rating_groups[1]); a rating group belongs to one service")


def test_a_rating_group_listed_twice_in_one_service_is_an_error(expect_problem):
    expect_problem({"services.sms.rating_groups": [5, 5]}, "services.sms.rating_groups[1]",
                   "listed twice (also at services.sms.rating_groups[0])")


@pytest.mark.parametrize("value", [-1, 2**32, "10", True, 1.5, None])
def test_a_rating_group_is_an_unsigned_32_bit_number(expect_problem, value):
    expect_problem({"services.voice.rating_groups": [10, value]},
                   "services.voice.rating_groups[1]", "whole number from 0 to 4294967295")


def test_rating_groups_are_a_list(expect_problem):
    expect_problem({"services.voice.rating_groups": 10}, "services.voice.rating_groups",
                   "must be a list")


# --- billing and fees (CONTRACT §8.2) -------------------------------------------------------

BILLING = {"seller": {"name": "Example Telecom GmbH", "country": "DE",
                      "vat_id": "DE136695976"},
           "prices_include_tax": False,
           "tax": {"DE": [{"rate": "19", "from": "2021-01-01"}]}}


def test_billing_and_fees_are_known_and_carried_as_written(valid):
    cat = valid({"billing": BILLING, "plans.PREPAID_S.fee": {"amount": "4.99",
                                                             "period": "month"}})
    assert cat.billing == BILLING
    assert cat.plans["PREPAID_S"].fee == {"amount": "4.99", "period": "month"}
    changed = valid({"billing": {**BILLING, "prices_include_tax": True}})
    assert len({cat.content_hash, changed.content_hash, SAMPLE_HASH}) == 3


@pytest.mark.parametrize("path", ["billing", "plans.PREPAID_S.fee"])
@pytest.mark.parametrize("value", ["19%", [1, 2], 5])
def test_billing_and_fee_must_be_mappings(expect_problem, path, value):
    expect_problem({path: value}, path, "expected a mapping")


def test_a_billing_value_the_hash_cannot_hold_is_an_error(expect_problem):
    expect_problem({"billing": {"tax": {"DE": [{"rate": 10**30}]}}}, "billing",
                   "cannot store")
