"""Published worked examples nobody here wrote, as test vectors (tests/billing/vectors/, a copy
of the shared set; its README gives every source, commit and licence, and each vector cites its
own file and line): GOBL's computed invoices (invopop/gobl, Apache-2.0), Kill Bill's and Lago's
prorations (killbill/killbill, Apache-2.0; getlago/lago-api, only the scenarios' numbers) and
Lago's credit notes. Only their figures are used; no code of theirs.

Conventions (the vectors' README): every GOBL vector's figures are reproduced by the contract's
rule (§8.3) from its line amounts, including those labelled ``currency`` rounding, so they are
checked against that rule. Kill Bill counts days end-exclusive and takes the day fraction to 9
decimals: its day counts equal §8.3's inclusive count to the period's last day, and its
fraction rounding is offered as ``billing.proration: killbill``, checked against its own
figures, with the §8.3 figure checked beside it where the source gives an amount.
"""

from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction
from pathlib import Path

import pytest

from billing.credit import RateLeft, credit
from billing.proration import Period, fee_days, prorate
from billing.settings import BillingSettings, Party, RateFrom
from billing.tax import Buyer, round_half_up, tax_totals, treatment
from charging.money import MICROS, parse_decimal

HERE = Path(__file__).parent / "vectors"
TAX = sorted((HERE / "tax").glob("*.json"))
PRORATIONS = json.loads((HERE / "proration.json").read_text())["vectors"]
CREDITS = json.loads((HERE / "credit_notes.json").read_text())["vectors"]
#: valid VAT ids (format and check digits) of the customers' states in the reverse-charge
#: vectors, which record only that the customer has one
VAT_IDS = {"DE": "DE136695976", "ES": "ESX2482300W", "AT": "ATU13585627"}


def micros(text: str) -> int:
    return int(parse_decimal(text) * MICROS)


def money(m: int) -> Fraction:
    return Fraction(m, MICROS)


def test_the_set_is_whole():
    assert len(TAX) + len(PRORATIONS) + len(CREDITS) == 46


@pytest.mark.parametrize("path", TAX, ids=lambda p: p.stem)
def test_gobl_invoice_totals(path):
    v = json.loads(path.read_text())
    # one tax per category: a line's main tax, and any further one (IN: CGST and SGST)
    by_category: dict[str, list[tuple[Fraction, int]]] = {}
    for line in v["lines"]:
        by_category.setdefault(line.get("tax_category"), []).append(
            (parse_decimal(line["tax_rate"]), micros(line["net"])))
        for extra in line.get("extra_taxes", ()):
            by_category.setdefault(extra["tax_category"], []).append(
                (parse_decimal(extra["tax_rate"]), micros(line["net"])))
    got = []
    for category, lines in by_category.items():
        for t in tax_totals(lines, gross=v["prices_include_tax"], decimals=2):
            got.append((category, t.rate, money(t.net), money(t.tax)))
    want = [(e.get("category"), parse_decimal(e["rate"]), parse_decimal(e["net"]),
             parse_decimal(e["tax"])) for e in v["expect"]["tax"]]
    assert sorted(got) == sorted(want)
    # totals are sums of the rounded per-rate figures; a base taxed twice (CGST + SGST)
    # counts once in the net
    main = next(iter(by_category))
    nets = [g for g in got if g[0] == main]
    assert sum(g[2] for g in nets) == parse_decimal(v["expect"]["net_total"])
    assert sum(g[3] for g in got) == parse_decimal(v["expect"]["tax_total"])
    assert sum(g[2] for g in nets) + sum(g[3] for g in got) == \
        parse_decimal(v["expect"]["total"])


@pytest.mark.parametrize("path", [p for p in TAX if json.loads(p.read_text())["parties"].get(
    "customer_country")], ids=lambda p: p.stem)
def test_gobl_place_of_supply_and_reverse_charge(path):
    """The treatment §8.3 gives the vector's parties: reverse charge exactly where GOBL has it,
    else the rate of the country whose rate the vector uses."""
    v = json.loads(path.read_text())
    parties = v["parties"]
    seller = "GR" if parties["supplier_country"] == "EL" else parties["supplier_country"]
    customer = parties["customer_country"]
    rated = [line for line in v["lines"] if not line.get("tax_rate_absent_in_source")]
    country = rated[0].get("tax_country", seller) if rated else customer
    rate = parse_decimal(rated[0]["tax_rate"]) if rated else Fraction(0)
    settings = BillingSettings(Party("seller", seller), v["currency"], 2, "UTC",
                               tax={country: (RateFrom(rate, dt.date(2000, 1, 1)),)})
    vat_id = VAT_IDS.get(customer) if parties["customer_tax_id"] else None
    # a customer with a tax id is a business (B2B); one without is a consumer
    buyer = Buyer("a", country=customer, vat_id=vat_id,
                  customer="business" if parties["customer_tax_id"] else "consumer")
    if customer != seller and vat_id is None and parties["customer_tax_id"]:
        pytest.skip(f"no valid VAT id of {customer} at hand")
    t = treatment(settings, buyer, dt.date.fromisoformat(v["issue_date"]))
    assert t.reverse_charge == v["reverse_charge"]
    if not v["reverse_charge"]:
        assert (t.country, t.rate) == (customer, rate)


@pytest.mark.parametrize("v", [v for v in PRORATIONS if v["convention"] == "killbill"],
                         ids=lambda v: v["id"])
def test_killbill_prorations(v):
    start = dt.date.fromisoformat(v["start"])
    end = dt.date.fromisoformat(v["end_exclusive"])
    assert (end - start).days == v["days"]  # end-exclusive count
    fraction = round_half_up(Fraction(v["days"], v["days_in_period"]), 9)
    assert fraction == parse_decimal(v["expect"]["fraction"])
    if v["period"] == "month" and end.day == 1:  # the fee to a calendar month's end:
        assert fee_days(Period.of(start), start) == v["days"]  # §8.3 counts the same days
    if v.get("amount") is None:
        return
    amount = micros(v["amount"])
    days, dip = v["days"], v["days_in_period"]
    got = prorate(amount, days, dip, 2, "killbill")
    if "amount" in v["expect"]:  # a repair of unused days: the source's sign is negative
        assert got == abs(micros(v["expect"]["amount"]))
        assert prorate(amount, days, dip, 2) == got  # the §8.3 figure agrees
    if "invoice_balance" in v["expect"] and "invoice_cycles" in v["expect"]:
        whole = int(parse_decimal(v["expect"]["invoice_cycles"]))
        assert whole * amount + got == micros(v["expect"]["invoice_balance"])
        assert whole * amount + prorate(amount, days, dip, 2) == \
            micros(v["expect"]["invoice_balance"])
    if "invoice_balance" in v["expect"] and "amount" in v["expect"]:
        # 93.55 = the new plan's 100.00 less the repair
        assert micros(v["expect"]["invoice_balance"]) == 100 * MICROS - got


@pytest.mark.parametrize("v", [v for v in PRORATIONS if v["convention"] == "lago"],
                         ids=lambda v: v["id"])
def test_lago_prorations(v):
    first, last = dt.date.fromisoformat(v["start"]), dt.date.fromisoformat(v["end"])
    assert (last - first).days + 1 == v["days"]  # both ends inclusive, as §8.3
    p_start = dt.date.fromisoformat(v["period_start"])
    p_end = dt.date.fromisoformat(v["period_end"])
    assert (p_end - p_start).days + 1 == v["days_in_period"]
    if v["billing_time"] == "calendar" and v["period"] == "month" and last == p_end:
        period = Period.of(first)  # an account loaded on `first`, billed to month end
        assert (period.start, period.end) == (p_start, p_end)
        assert fee_days(period, first) == v["days"]
    got = prorate(micros(v["amount"]), v["days"], v["days_in_period"], 2)
    assert got == micros(v["expect"]["amount"])


@pytest.mark.parametrize("v", CREDITS, ids=lambda v: v["id"])
def test_lago_credit_notes(v):
    """Lago credits the unused days of a fee: the net is the prorated amount; our credit of
    that net at the invoice's rate gives Lago's tax and total (net + tax)."""
    rate = parse_decimal(v["tax_rate"])
    net = prorate(micros(v["plan"]["amount"]), v["credited"]["days"],
                  v["credited"]["days_in_period"], 2)
    if "net" in v["expect"]:
        assert net == micros(v["expect"]["net"])
    # what is left of the invoice credited: its net (given, or derived by the source)
    inv = v["invoice"]
    inv_net = micros(inv.get("net") or inv.get("net_derived")) if (
        inv.get("net") or inv.get("net_derived")) else net
    inv_tax = micros(inv["tax"]) if "tax" in inv else tax_totals(
        [(rate, inv_net)], gross=False, decimals=2)[0].tax
    [c] = credit([RateLeft(rate, inv_net, inv_tax)], net, gross=False, decimals=2)
    if "tax" in v["expect"]:
        assert c.tax == micros(v["expect"]["tax"])
    assert c.net + c.tax == micros(v["expect"]["total"])


def test_a_credit_is_never_more_than_is_left():
    from billing.credit import CreditError

    left = [RateLeft(Fraction(20), 37_500_000, 7_500_000)]
    with pytest.raises(CreditError, match="more than is left"):
        credit(left, 37_510_000, gross=False, decimals=2)
    [whole] = credit(left, None, gross=False, decimals=2)
    assert (whole.net, whole.tax) == (37_500_000, 7_500_000)
