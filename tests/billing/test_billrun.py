"""Bill runs, finalization, late charges, credit notes and disputes on a real PostgreSQL (the
embedded one: tests/billing/conftest.py), over archive rows written as the archiver writes
them (tests/billing/archive_rows.py)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from billing.billrun import (
    BillingError,
    RunOptions,
    StaleDraftError,
    bill_run,
    drafts_of,
    finalize,
    get_doc,
    list_docs,
)
from billing.corrections import create_credit_note, open_dispute, resolve_dispute
from billing.proration import Period
from billing.settings import billing_settings
from tests.billing.archive_rows import ArchiveRows
from tests.billing.catalogs import catalog

UTC = dt.UTC
NOV, DEC = Period.parse("2026-11"), Period.parse("2026-12")
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SETTINGS = billing_settings(catalog())


def at(day: str, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour), UTC)


@pytest.fixture
def rows(db) -> ArchiveRows:
    return ArchiveRows(db)


def run(db, period=NOV, settings=SETTINGS, **kw):
    return bill_run(db, settings, RunOptions(period, **kw))


def invoice(db, account, period=NOV):
    [doc] = [d for d in list_docs(db, account=account) if d["period"]["start"] ==
             period.start.isoformat()]
    return doc


def test_a_domestic_invoice_with_usage_fee_and_adjustment(db, rows):
    rows.account("alice", at("2026-11-16", 8), name="Alice Muster")
    rows.charge("alice", at("2026-11-20"), 1_200_000)
    rows.charge("alice", at("2026-11-21"), 1_234_500)
    rows.charge("alice", at("2026-11-22"), 10_000, service="data", tariff="DATA_STD",
                rate="data", units=1024)
    rows.charge("alice", at("2026-12-01"), 5_000_000)  # December
    rows.charge("alice", at("2026-10-31", 23), 7_000_000)  # 1 Nov 00:00 in Berlin: November
    rows.adjustment("alice", at("2026-11-25"), 500_000, "goodwill")
    report = run(db)
    assert (report.accounts, report.drafts) == (1, 1)
    doc = invoice(db, "alice")
    assert doc["status"] == "draft" and doc["number"] is None
    usage = {(x["service"], x["net"], x["quantity"]) for x in doc["lines"]
             if x["kind"] == "usage"}
    assert usage == {("voice", "9.4345", "180"), ("data", "0.01", "1024")}
    [fee] = [x for x in doc["lines"] if x["kind"] == "fee"]
    assert (fee["quantity"], fee["net"]) == ("15", "2.50")  # 16–30 Nov: 4.99 × 15/30
    [adj] = [x for x in doc["lines"] if x["kind"] == "adjustment"]
    assert adj["net"] == "-0.50"
    # 9.4345 + 0.01 + 2.50 - 0.50 = 11.4445 → 11.44; tax 19 % of the exact sum: 2.174455
    assert doc["tax"] == [{"rate": "19", "net": "11.44", "tax": "2.17"}]
    assert (doc["total"], doc["reverse_charge"]) == ("13.61", False)


def test_a_bill_run_is_idempotent_and_leaves_final_invoices_alone(db, rows):
    rows.account("alice", at("2026-10-01"))
    rows.charge("alice", at("2026-11-20"), 1_000_000)
    run(db)
    first = invoice(db, "alice")
    run(db)
    again = invoice(db, "alice")
    assert again == first
    assert db.execute("SELECT count(*) FROM invoices").fetchone()[0] == 1
    rows.charge("alice", at("2026-11-21"), 1_000_000)
    run(db)
    assert invoice(db, "alice")["id"] == first["id"]  # replaced in place
    assert invoice(db, "alice")["tax"][0]["net"] == "6.99"
    final = finalize(db, SETTINGS, first["id"], now=NOW)
    assert (final["status"], final["number"], final["issue_date"]) == \
        ("final", "INV-2026-000001", "2026-12-01")
    report = run(db)
    assert (report.final, report.drafts) == (1, 0)
    assert get_doc(db, first["id"]) == final
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is final"):
        db.execute("UPDATE invoices SET total = 0 WHERE id = %s", (first["id"],))
    db.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM invoices WHERE id = %s", (first["id"],))
    db.rollback()
    with pytest.raises(BillingError, match="not a draft"):
        finalize(db, SETTINGS, first["id"], now=NOW)


def test_numbers_are_gap_free_in_order_of_finalization(db, rows):
    for name in ("a", "b", "c"):
        rows.account(name, at("2026-10-01"))
    run(db)
    ids = drafts_of(db, NOV)
    numbers = [finalize(db, SETTINGS, i, now=NOW)["number"] for i in reversed(ids)]
    assert numbers == ["INV-2026-000001", "INV-2026-000002", "INV-2026-000003"]
    assert drafts_of(db, NOV) == []


@pytest.mark.parametrize(("attrs", "rate", "tax", "reverse"), [
    ({}, "19", "0.95", False),                                     # domestic consumer
    ({"country": "FR"}, "20", "1.00", False),                      # other-EU consumer
    ({"country": "AT", "vat_id": "ATU13585627", "customer": "business"}, "0", "0.00", True),
    ({"country": "AT", "vat_id": "ATU13585626", "customer": "business"}, "20", "1.00", False),
    ({"country": "US", "customer": "business"}, "0", "0.00", False),  # outside the EU
])
def test_tax_by_customer(db, rows, attrs, rate, tax, reverse):
    rows.account("x", at("2026-10-01"), plan="NO_FEE", **attrs)
    rows.charge("x", at("2026-11-05"), 5_000_000)
    run(db)
    doc = invoice(db, "x")
    assert doc["tax"] == [{"rate": rate, "net": "5.00", "tax": tax}]
    assert doc["reverse_charge"] is reverse
    assert ("Reverse charge" in doc["notes"]) is reverse


def test_gross_prices(db, rows):
    gross = billing_settings(catalog(gross=True))
    rows.account("g", at("2026-10-01"))
    rows.charge("g", at("2026-11-05"), 5_010_000)
    run(db, settings=gross)
    doc = invoice(db, "g")
    # 5.01 + 4.99 = 10.00 gross; tax 10 × 19/119 = 1.5966 → 1.60; net 8.40
    assert doc["tax"] == [{"rate": "19", "net": "8.40", "tax": "1.60"}]
    assert (doc["total"], doc["prices_include_tax"]) == ("10.00", True)


def test_a_rate_change_inside_the_year(db, rows):
    """Germany: 16 % from 2020-07-01, 19 % again from 2021-01-01 (catalog effective dates):
    each invoice takes the rate in force on its period's last day."""
    rows.account("d", at("2020-01-01"), plan="NO_FEE")
    for day in ("2020-06-10", "2020-07-10", "2020-12-31", "2021-01-10"):
        rows.charge("d", at(day), 10_000_000)
    got = {}
    for month in ("2020-06", "2020-07", "2020-12", "2021-01"):
        run(db, period=Period.parse(month))
        got[month] = invoice(db, "d", Period.parse(month))["tax"][0]["tax"]
    assert got == {"2020-06": "1.90", "2020-07": "1.60", "2020-12": "1.60", "2021-01": "1.90"}


def test_late_charges_go_on_the_next_invoice(db, rows):
    rows.account("l", at("2026-10-01"), plan="NO_FEE")
    rows.charge("l", at("2026-11-10"), 1_000_000)
    run(db)
    nov = finalize(db, SETTINGS, invoice(db, "l")["id"], now=NOW)
    late = rows.charge("l", at("2026-11-29"), 2_000_000)  # archived after November's final
    rows.charge("l", at("2026-12-03"), 3_000_000)
    run(db)  # November again: final, untouched
    assert get_doc(db, nov["id"]) == nov
    run(db, period=DEC)
    dec = invoice(db, "l", DEC)
    lines = sorted((x["net"], x.get("late", False), x.get("charged_period"))
                   for x in dec["lines"])
    assert lines == [("2.00", True, "2026-11"), ("3.00", False, None)]
    final = finalize(db, SETTINGS, dec["id"], now=dt.datetime(2027, 1, 1, 9, tzinfo=UTC))
    assert final["number"] == "INV-2027-000001"
    marked = db.execute("SELECT id, invoice_id, late FROM charges ORDER BY ts").fetchall()
    assert [(i, late_) for _, i, late_ in marked] == [
        (nov["id"], False), (dec["id"], True), (dec["id"], False)]
    assert marked[1][0] == late


def test_a_draft_made_stale_by_an_earlier_finalization_is_refused(db, rows):
    rows.account("s", at("2026-10-01"), plan="NO_FEE")
    rows.charge("s", at("2026-11-10"), 1_000_000)
    run(db)
    rows.charge("s", at("2026-11-28"), 2_000_000)  # after November's draft
    rows.charge("s", at("2026-12-02"), 3_000_000)
    run(db, period=DEC)  # November is no final yet: December does not take it
    finalize(db, SETTINGS, invoice(db, "s")["id"], now=NOW)  # without the 2.00
    dec_id = invoice(db, "s", DEC)["id"]
    with pytest.raises(StaleDraftError, match="run `chargeflow bill run`"):
        finalize(db, SETTINGS, dec_id, now=NOW)
    run(db, period=DEC)
    assert finalize(db, SETTINGS, dec_id, now=NOW)["number"] == "INV-2026-000002"  # no gap


def test_credit_notes_up_to_what_is_left(db, rows):
    rows.account("c", at("2026-10-01"), plan="NO_FEE")
    rows.charge("c", at("2026-11-10"), 10_000_000)
    run(db)
    inv = finalize(db, SETTINGS, invoice(db, "c")["id"], now=NOW)
    assert (inv["net_total"], inv["tax_total"]) == ("10.00", "1.90")
    one = create_credit_note(db, SETTINGS, inv["id"], "3.33", "dropped call", now=NOW)
    assert (one["number"], one["kind"], one["status"]) == ("CN-2026-000001", "credit_note",
                                                          "final")
    assert one["tax"] == [{"rate": "19", "net": "-3.33", "tax": "-0.63"}]  # 0.6327
    assert one["credits"]["number"] == inv["number"]
    assert [x["kind"] for x in one["lines"]] == ["credit"]
    with pytest.raises(BillingError, match=r"more than is left \(6.67\)"):
        create_credit_note(db, SETTINGS, inv["id"], "6.68", "too much", now=NOW)
    rest = create_credit_note(db, SETTINGS, inv["id"], None, "the rest", now=NOW)
    assert rest["tax"] == [{"rate": "19", "net": "-6.67", "tax": "-1.27"}]  # 1.90 - 0.63
    with pytest.raises(BillingError, match="nothing is left"):
        create_credit_note(db, SETTINGS, inv["id"], "0.01", "again", now=NOW)
    assert [d["number"] for d in list_docs(db, kind="credit_note")] == \
        ["CN-2026-000001", "CN-2026-000002"]
    with pytest.raises(BillingError, match="needs a reason"):
        create_credit_note(db, SETTINGS, inv["id"], "1", " ", now=NOW)


def test_credit_notes_only_against_final_invoices(db, rows):
    rows.account("c", at("2026-10-01"))
    run(db)
    with pytest.raises(BillingError, match="final invoices only"):
        create_credit_note(db, SETTINGS, invoice(db, "c")["id"], "1.00", "x", now=NOW)
    with pytest.raises(BillingError, match="no invoice"):
        create_credit_note(db, SETTINGS, 999, "1.00", "x", now=NOW)


def test_disputes(db, rows):
    rows.account("d", at("2026-10-01"), plan="NO_FEE")
    rows.charge("d", at("2026-11-10"), 10_000_000)
    run(db)
    inv = finalize(db, SETTINGS, invoice(db, "d")["id"], now=NOW)
    first = open_dispute(db, inv["id"], "never called that number", actor="agent-7")
    with pytest.raises(BillingError, match="open dispute already"):
        open_dispute(db, inv["id"], "again")
    out = resolve_dispute(db, SETTINGS, first, False, "the call is in the CDRs",
                          actor="agent-8")
    assert (out["status"], out["credit_note"]) == ("rejected", None)
    second = open_dispute(db, inv["id"], "roaming surcharge")
    out = resolve_dispute(db, SETTINGS, second, True, "goodwill", amount="2.00", now=NOW)
    assert out["credit_note"]["total"] == "-2.38"
    with pytest.raises(BillingError, match="accepted already"):
        resolve_dispute(db, SETTINGS, second, False, "no")
    events = db.execute("SELECT action, actor, reason FROM billing_events WHERE invoice = %s "
                        "ORDER BY id", (inv["id"],)).fetchall()
    assert [e[0] for e in events] == ["draft", "finalize", "dispute_open", "dispute_reject",
                                      "dispute_open", "dispute_accept"]
    assert events[2][1:] == ("agent-7", "never called that number")


def test_shards_and_ranges_split_a_run(db, rows):
    names = [f"acct-{i:03d}" for i in range(30)]
    for name in names:
        rows.account(name, at("2026-10-01"))
    halves = [run(db, shard=(i, 2), batch=7).drafts for i in range(2)]
    assert sum(halves) == 30 and all(halves)
    assert run(db, accounts_from="acct-010", accounts_to="acct-020", batch=4).drafts == 10
    assert run(db, account="acct-007").drafts == 1
    assert db.execute("SELECT count(*) FROM invoices").fetchone()[0] == 30


def test_an_account_opened_after_the_period_has_no_fee_for_it(db, rows):
    rows.account("new", at("2026-12-02"))
    assert run(db).drafts == 0
    rows.charge("new", at("2026-11-24"), 1_000_000)  # usage dated before the opening
    assert run(db).drafts == 1
    assert [x["kind"] for x in invoice(db, "new")["lines"]] == ["usage"]


def test_late_adjustments_go_on_the_next_invoice_once(db, rows):
    rows.account("a", at("2026-10-01"), plan="NO_FEE")
    rows.charge("a", at("2026-11-10"), 1_000_000)
    rows.adjustment("a", at("2026-11-12"), -300_000, "roaming fix")
    run(db)
    finalize(db, SETTINGS, invoice(db, "a")["id"], now=NOW)
    rows.adjustment("a", at("2026-11-29"), 200_000, "goodwill")  # after November's final
    rows.charge("a", at("2026-12-03"), 1_000_000)
    run(db, period=DEC)
    adj = [(x["net"], x.get("charged_period")) for x in invoice(db, "a", DEC)["lines"]
           if x["kind"] == "adjustment"]
    assert adj == [("-0.20", "2026-11")]
    finalize(db, SETTINGS, invoice(db, "a", DEC)["id"], now=NOW)
    jan = Period.parse("2027-01")
    rows.charge("a", at("2027-01-03"), 1_000_000)
    run(db, period=jan)
    assert [x["kind"] for x in invoice(db, "a", jan)["lines"]] == ["usage"]


def test_finalizing_a_period_skips_a_stale_draft_and_numbers_the_rest_without_gaps(db, rows):
    from billing.billrun import finalize_period

    for name in ("a", "b", "c"):
        rows.account(name, at("2026-10-01"), plan="NO_FEE")
        rows.charge(name, at("2026-11-10"), 1_000_000)
        rows.charge(name, at("2026-12-10"), 1_000_000)
    run(db)
    rows.charge("b", at("2026-11-28"), 2_000_000)  # after November's draft of b
    run(db, period=DEC)
    numbers, stale = finalize_period(db, SETTINGS, NOV, now=NOW)
    assert numbers == ["INV-2026-000001", "INV-2026-000002", "INV-2026-000003"]
    numbers, stale = finalize_period(db, SETTINGS, DEC, now=NOW, chunk=2)
    assert numbers == ["INV-2026-000004", "INV-2026-000005"]
    assert len(stale) == 1 and "(b, 2026-12)" in stale[0]
    assert invoice(db, "b", DEC)["status"] == "draft"
    run(db, period=DEC)
    assert finalize_period(db, SETTINGS, DEC, now=NOW) == (["INV-2026-000006"], [])


def test_a_draft_with_nothing_left_to_bill_is_removed_and_its_events_kept(db, rows):
    import dataclasses

    rows.account("f", at("2026-10-01"))  # the fee alone
    run(db)
    assert invoice(db, "f")["lines"][0]["kind"] == "fee"
    report = run(db, settings=dataclasses.replace(SETTINGS, fees={}))  # the fee dropped
    assert (report.drafts, report.removed) == (0, 1)
    assert list(list_docs(db, account="f")) == []
    events = db.execute("SELECT invoice, account, action FROM billing_events ORDER BY id"
                        ).fetchall()
    assert events == [(None, "f", "draft"), (None, "f", "draft_removed")]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM billing_events")
    db.rollback()
