"""The §8.3 document of a draft invoice, pure."""

from __future__ import annotations

import datetime as dt

from billing.invoice import Adjustment, UsageGroup, build_invoice
from billing.proration import Period
from billing.settings import billing_settings
from billing.tax import Buyer, treatment
from tests.billing.catalogs import catalog

NOV = Period.parse("2026-11")


ERIKA = Buyer("acct-1", name="Erika Muster")


def _draft(*, gross=False, buyer=ERIKA, opened=None, **kw):
    s = billing_settings(catalog(gross=gross))
    return build_invoice(s, buyer, NOV, plan="PREPAID_S", opened_on=opened,
                         treatment=treatment(s, buyer, NOV.end),
                         units={"voice": "second", "data": "byte"}, **kw)


def test_the_document_has_the_contract_fields():
    d = _draft(usage=[UsageGroup("voice", "VOICE_STD", "mobile", 600, 1_200_000, 3)],
               adjustments=[Adjustment("adj-1", "2026-11-20", 500_000, "goodwill")],
               opened=dt.date(2026, 11, 16)).document()
    assert set(d) >= {"account", "period", "currency", "lines", "tax", "net_total",
                      "tax_total", "total", "reverse_charge", "seller", "buyer"}
    assert d["period"] == {"start": "2026-11-01", "end": "2026-11-30"}
    assert [(x["kind"], x["service"], x["quantity"], x["net"], x["tax_rate"])
            for x in d["lines"]] == [
        ("usage", "voice", "600", "1.20", "19"),
        ("fee", None, "15", "2.50", "19"),   # 4.99 × 15/30 = 2.495 → 2.50
        ("adjustment", None, "1", "-0.50", "19"),  # a credit to the balance
    ]
    assert d["tax"] == [{"rate": "19", "net": "3.20", "tax": "0.61"}]  # 0.608
    assert (d["net_total"], d["tax_total"], d["total"]) == ("3.20", "0.61", "3.81")
    assert d["reverse_charge"] is False
    assert d["seller"]["vat_id"] == "DE136695976"
    assert d["buyer"]["name"] == "Erika Muster"
    assert d["buyer"]["country"] == "DE"


def test_gross_prices():
    d = _draft(gross=True).document()  # the fee alone, 4.99 gross
    assert d["tax"] == [{"rate": "19", "net": "4.19", "tax": "0.80"}]  # 4.99 × 19/119 = 0.7967
    assert d["total"] == "4.99"


def test_reverse_charge_says_so():
    d = _draft(buyer=Buyer("b", name="Muster GmbH", country="AT", vat_id="ATU13585627",
                           customer="business")).document()
    assert d["reverse_charge"] is True
    assert d["tax"] == [{"rate": "0", "net": "4.99", "tax": "0.00"}]
    assert "Reverse charge" in d["notes"]


def test_late_charges_are_lines_of_their_own():
    d = _draft(usage=[UsageGroup("data", "DATA_STD", "data", 2048, 20_000, 1),
                      UsageGroup("data", "DATA_STD", "data", 1024, 10_000, 1, "2026-10")]
               ).document()
    late = [x for x in d["lines"] if x.get("late")]
    assert [(x["charged_period"], x["net"]) for x in late] == [("2026-10", "0.01")]
    assert len([x for x in d["lines"] if x["kind"] == "usage"]) == 2
