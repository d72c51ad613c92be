"""Tax treatment and the per-rate totals (CONTRACT §8.3), pure."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest

from billing.settings import BillingSettingsError, billing_settings
from billing.tax import (
    REVERSE_CHARGE_NOTE,
    Buyer,
    format_rate,
    round_half_up,
    tax_totals,
    treatment,
    vat_id_country,
)
from charging.catalog import parse_catalog
from tests.billing.catalogs import BASE, catalog

DEC31 = dt.date(2026, 12, 31)


@pytest.fixture
def settings():
    return billing_settings(catalog())


def test_domestic_consumer_pays_the_sellers_rate(settings):
    t = treatment(settings, Buyer("a"), DEC31)
    assert (t.country, t.rate, t.reverse_charge, t.note) == ("DE", 19, False, None)


def test_other_eu_consumer_pays_their_countrys_rate(settings):
    t = treatment(settings, Buyer("a", country="FR"), DEC31)
    assert (t.country, t.rate, t.reverse_charge) == ("FR", 20, False)


def test_eu_business_with_a_valid_vat_id_of_another_state_is_reverse_charged(settings):
    t = treatment(settings, Buyer("a", country="AT", vat_id="ATU13585627",
                                  customer="business"), DEC31)
    assert (t.rate, t.reverse_charge, t.vat_id_valid) == (0, True, True)
    assert "Article 196" in t.note


def test_a_business_whose_vat_id_fails_its_check_digits_pays_vat(settings):
    t = treatment(settings, Buyer("a", country="AT", vat_id="ATU13585626",
                                  customer="business"), DEC31)
    assert (t.rate, t.reverse_charge, t.vat_id_valid) == (20, False, False)


def test_a_consumer_with_a_vat_id_is_not_reverse_charged(settings):
    t = treatment(settings, Buyer("a", country="AT", vat_id="ATU13585627"), DEC31)
    assert (t.rate, t.reverse_charge) == (20, False)


def test_a_domestic_business_pays_vat(settings):
    t = treatment(settings, Buyer("a", country="DE", vat_id="DE136695976",
                                  customer="business"), DEC31)
    assert (t.rate, t.reverse_charge, t.vat_id_valid) == (19, False, True)


def test_a_country_without_rates_is_outside_the_scope(settings):
    t = treatment(settings, Buyer("a", country="US", customer="business"), DEC31)
    assert (t.country, t.rate, t.reverse_charge) == ("US", 0, False)
    assert "place of supply is US" in t.note


def test_the_rate_is_the_one_in_force_on_the_periods_last_day(settings):
    """Germany's 2020 cut: 16 % from 2020-07-01, 19 % again from 2021-01-01."""
    assert treatment(settings, Buyer("a"), dt.date(2020, 6, 30)).rate == 19
    assert treatment(settings, Buyer("a"), dt.date(2020, 7, 31)).rate == 16
    assert treatment(settings, Buyer("a"), dt.date(2020, 12, 31)).rate == 16
    assert treatment(settings, Buyer("a"), dt.date(2021, 1, 31)).rate == 19


def test_a_listed_country_with_no_rate_in_force_yet_is_an_error(settings):
    with pytest.raises(LookupError, match="FR has no rate in force on 1999-12-31"):
        treatment(settings, Buyer("a", country="FR"), dt.date(1999, 12, 31))


def test_vat_ids():
    assert vat_id_country("DE136695976") == "DE"
    assert vat_id_country("de 136 695 976") == "DE"
    assert vat_id_country("EL094259216") == "GR"
    assert vat_id_country("DE136695975") is None  # check digit
    assert vat_id_country("GB980780684") is None  # not a member state
    assert vat_id_country("nonsense") is None
    assert vat_id_country(None) is None


def test_one_rounding_per_rate_of_the_exact_line_taxes():
    """Three lines of 0.10 at 19 %: 0.019 each, 0.057 exact, 0.06 rounded once (per-line
    rounding would give 0.06 too, but 0.015 × 3 lines shows it: 0.045 → 0.05, not 0.06)."""
    tot = tax_totals([(Fraction(15), 100_000)] * 3, gross=False, decimals=2)
    assert [(t.net, t.tax) for t in tot] == [(300_000, 50_000)]


def test_gross_prices_take_the_tax_out_of_the_rates_sum():
    tot = tax_totals([(Fraction(19), 4_990_000), (Fraction(19), 10_000_000)], gross=True,
                     decimals=2)
    # 14.99 × 19/119 = 2.3933... → 2.39; net 12.60
    assert [(t.net, t.tax) for t in tot] == [(12_600_000, 2_390_000)]


def test_net_lines_with_sub_cent_amounts_round_once_per_rate():
    tot = tax_totals([(Fraction(19), 1_234_500), (Fraction(19), 1_000)], gross=False,
                     decimals=2)
    assert [(t.net, t.tax) for t in tot] == [(1_240_000, 230_000)]  # 1.2355, 0.234745


def test_half_up_is_away_from_zero():
    assert round_half_up(Fraction(-125, 1000), 2) == Fraction(-13, 100)
    assert round_half_up(Fraction(125, 1000), 2) == Fraction(13, 100)
    assert round_half_up(Fraction(-124, 1000), 2) == Fraction(-12, 100)


def test_rates_print_short():
    assert [format_rate(Fraction(x)) for x in ("19", "8.5", "0", "23.33", "5.50")] == \
        ["19", "8.5", "0", "23.33", "5.5"]


def test_bad_billing_sections_list_every_problem():
    bad = BASE + """
billing:
  seller: {name: "", country: Germany}
  prices_include_tax: "no"
  tax:
    DE: [{rate: "119", from: "2021-01-01"}, {rate: "7", from: "yesterday"}]
    de: [{rate: "19", from: "2021-01-01"}]
  proration: monthly
"""
    with pytest.raises(BillingSettingsError) as err:
        billing_settings(parse_catalog(bad.replace('"4.99"', '"4.999"')))
    paths = sorted(p.path for p in err.value.problems)
    assert paths == ["billing.prices_include_tax", "billing.proration", "billing.seller.country",
                     "billing.seller.name", "billing.tax.DE[0].rate", "billing.tax.DE[1].from",
                     "billing.tax.de", "plans.PREPAID_S.fee.amount"]


def test_a_catalog_without_billing_cannot_bill():
    with pytest.raises(BillingSettingsError, match="no billing section"):
        billing_settings(parse_catalog(BASE))


def test_the_reverse_charge_wording():
    assert "Directive 2006/112/EC" in REVERSE_CHARGE_NOTE


def test_the_shipped_sample_catalog_bills():
    """billing/samples/catalog.yaml (docs/invoices.md's first invoice) parses and bills."""
    from importlib import resources

    from charging.catalog import load_catalog

    path = resources.files("billing") / "samples" / "catalog.yaml"
    s = billing_settings(load_catalog(str(path)))
    assert (s.seller.country, s.fees["PREPAID_S"].amount) == ("DE", 4_990_000)
    assert s.rate_on("DE", dt.date(2020, 12, 31)) == 16
