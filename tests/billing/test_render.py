"""The printable invoice carries Art. 226's mandatory content; the PDF is a PDF."""

from __future__ import annotations

import datetime as dt

from billing.invoice import UsageGroup, build_invoice
from billing.proration import Period
from billing.render import render_html, render_pdf
from billing.settings import billing_settings
from billing.tax import Buyer, treatment
from tests.billing.catalogs import catalog

NOV = Period.parse("2026-11")


def _doc(buyer: Buyer, **extra) -> dict:
    s = billing_settings(catalog())
    d = build_invoice(s, buyer, NOV, plan="PREPAID_S", opened_on=dt.date(2026, 11, 16),
                      treatment=treatment(s, buyer, NOV.end),
                      usage=[UsageGroup("voice", "VOICE_STD", "mobile", 5412, 10_824_000, 37)],
                      units={"voice": "second"})
    return d.document() | {"id": 7, "status": "final", "number": "INV-2026-000007",
                           "issue_date": "2026-12-01"} | extra


def test_the_page_has_the_mandatory_content():
    html = render_html(_doc(Buyer("acct-1", name="Muster Handels GmbH", country="AT",
                                  vat_id="ATU13585627", customer="business")))
    for text in ("Example Telecom GmbH", "Beispielstr. 1", "DE136695976",
                 "Muster Handels GmbH", "ATU13585627", "INV-2026-000007", "2026-12-01",
                 "2026-11-01 to 2026-11-30", "Reverse charge", "Article 196", "10.824",
                 "13.32 EUR", "0 %"):
        assert text in html, text
    assert "DRAFT" not in html


def test_a_draft_says_so_and_a_domestic_invoice_shows_its_vat():
    html = render_html(_doc(Buyer("acct-2", name="Erika <Muster>"), status="draft",
                            number=None, issue_date=None))
    assert "DRAFT" in html and "19 %" in html and "Reverse charge" not in html
    assert "Erika &lt;Muster&gt;" in html  # escaped


def test_the_pdf():
    pdf = render_pdf(_doc(Buyer("acct-1", name="Erika Muster")))
    assert pdf.startswith(b"%PDF-") and len(pdf) > 5000
