"""The billing commands end to end through the CLI, on the embedded PostgreSQL: bill run,
invoice list/show/finalize/render, credit-note create/list, dispute open/accept."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from click.testing import CliRunner

from flows.cli import main
from tests.billing.archive_rows import ArchiveRows
from tests.billing.catalogs import BASE, BILLING

UTC = dt.UTC


@pytest.fixture
def setup(db_url, db, tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(BASE + BILLING % {"gross": "false"})
    rows = ArchiveRows(db)
    rows.account("alice", dt.datetime(2026, 11, 16, 8, tzinfo=UTC), name="Alice Muster")
    rows.account("bob", dt.datetime(2026, 10, 1, tzinfo=UTC), name="Bob GmbH", country="AT",
                 vat_id="ATU13585627", customer="business")
    rows.charge("alice", dt.datetime(2026, 11, 20, tzinfo=UTC), 1_200_000)
    rows.charge("bob", dt.datetime(2026, 11, 20, tzinfo=UTC), 3_000_000)

    def cli(*args: str, code: int = 0):
        result = CliRunner().invoke(main, [*args, "--db", db_url], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    return cli, str(path), tmp_path


def test_the_billing_commands(setup):
    cli, catalog, tmp = setup
    run = json.loads(cli("bill", "run", "--period", "2026-11", "--catalog", catalog, "--json"))
    assert (run["accounts"], run["drafts"], run["errors"]) == (2, 2, [])
    listed = [json.loads(x) for x in cli("invoice", "list", "--json").splitlines()]
    assert [(d["account"], d["status"], d["total"]) for d in listed] == [
        ("alice", "draft", "4.40"),  # (1.20 + 4.99 × 15/30 = 2.50) × 1.19 = 4.403
        ("bob", "draft", "7.99")]    # reverse charge: 3.00 + 4.99
    out = cli("invoice", "finalize", "--period", "2026-11", "--catalog", catalog, "--json")
    assert json.loads(out)["finalized"] == 2
    bob = json.loads(cli("invoice", "show", str(listed[1]["id"]), "--json"))
    assert bob["number"].endswith("-000002") and bob["reverse_charge"] is True
    assert bob["status"] == "final"
    assert "Reverse charge" in cli("invoice", "show", str(bob["id"]))
    pdf = tmp / "bob.pdf"
    cli("invoice", "render", str(bob["id"]), "--format", "pdf", "-o", str(pdf))
    assert pdf.read_bytes().startswith(b"%PDF-")
    note = json.loads(cli("credit-note", "create", str(bob["id"]), "--amount", "2.00",
                          "--reason", "outage", "--catalog", catalog, "--json"))
    assert (note["total"], note["credits"]["number"]) == ("-2.00", bob["number"])
    err = json.loads(cli("credit-note", "create", str(bob["id"]), "--amount", "6.00",
                         "--reason", "x", "--catalog", catalog, "--json", code=1))
    assert "more than is left (5.99)" in err["error"]
    assert len(cli("credit-note", "list", "--json").splitlines()) == 1
    opened = json.loads(cli("dispute", "open", str(bob["id"]), "--reason", "roaming",
                            "--json"))
    accepted = json.loads(cli("dispute", "accept", str(opened["dispute"]), "--reason", "ok",
                              "--catalog", catalog, "--json"))
    assert accepted["credit_note"]["total"] == "-5.99"  # all that was left
    html = tmp / "cn.html"
    cli("invoice", "render", str(accepted["credit_note"]["id"]), "--format", "html", "-o",
        str(html))
    assert "Credit note" in html.read_text()


def test_wrong_requests_exit_1_and_change_nothing(setup, db):
    cli, catalog, _ = setup
    assert "YYYY-MM" in cli("bill", "run", "--period", "2026-13", "--catalog", catalog,
                            code=1)
    cli("invoice", "show", "12345", code=1)
    cli("invoice", "finalize", "--catalog", catalog, code=1)  # neither ID nor --period
    cli("bill", "run", "--period", "2026-11", "--catalog", catalog, "--shard", "2/2", code=1)
    assert db.execute("SELECT count(*) FROM invoices").fetchone()[0] == 0


def test_an_unreachable_database_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["invoice", "list", "--db",
                                       "host=/nonexistent dbname=x connect_timeout=1"])
    assert result.exit_code == 2, result.output


def test_final_invoices_refuse_changes_in_the_database(setup, db_url):
    cli, catalog, _ = setup
    cli("bill", "run", "--period", "2026-11", "--catalog", catalog)
    cli("invoice", "finalize", "--period", "2026-11", "--catalog", catalog)
    with psycopg.connect(db_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE invoices SET doc = '{}'")
