"""``chargeflow bill run``, ``invoice``, ``credit-note`` and ``dispute`` (CONTRACT §8.1).

The billing settings come from the catalog: ``--catalog FILE``, else the active catalog in
Redis (``--redis``, else the embedded one of ``--data-dir``). The database is ``--db``, else
``CHARGEFLOW_DB_URL``, else the embedded PostgreSQL of ``--data-dir`` (billing/cli.py).
Exit codes: 0 done, 1 the request was wrong or refused (the message says why), 2 a service
could not be reached.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from billing.cli import db_options, open_db
from flows.cli_common import connect_services, emit, fail, fail_problems, password_file_option


def _catalog_options(fn):
    fn = password_file_option(fn)
    fn = click.option("--redis", "redis_url", default=None,
                      help="Redis holding the active catalog (default: $CHARGEFLOW_REDIS_URL, "
                      "else embedded); not read with --catalog.")(fn)
    fn = click.option("--catalog", "catalog_file", default=None,
                      type=click.Path(dir_okay=False),
                      help="Catalog FILE whose billing section to use (default: the active "
                      "catalog in Redis).")(fn)
    return fn


def _json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def _actor_option(fn):
    return click.option("--actor", default="cli", show_default=True,
                        help="Who does this, as recorded with the step.")(fn)


def _catalog(catalog_file, redis_url, redis_password_file, data_dir, as_json):
    """The catalog and its billing settings, or exit 1 naming every problem."""
    from billing.settings import BillingSettingsError, billing_settings
    from charging.errors import CatalogError, StoreError
    from flows.cli_common import load_catalog_or_exit

    if catalog_file is not None:
        cat = load_catalog_or_exit(catalog_file, as_json)
    else:
        from catalog_cache.store import CatalogCache

        services, client = connect_services(redis_url, data_dir, redis_password_file,
                                            create=False)
        try:
            cache = CatalogCache(client, prefix=services.prefix)
            if not cache.refresh():
                fail(as_json, "no active catalog in Redis: load one (chargeflow catalog load "
                     "FILE) or pass --catalog FILE")
            cat = cache.current.catalog
        except StoreError as exc:
            fail(as_json, str(exc), 2)
        except CatalogError as exc:
            fail_problems(as_json, "catalog invalid", exc)
    try:
        return cat, billing_settings(cat)
    except BillingSettingsError as exc:
        fail_problems(as_json, "billing settings invalid", exc)


def _guard(as_json: bool, action: Callable):
    """Run ``action``; refusals exit 1 with their reason, an unreachable database 2."""
    import psycopg

    from billing.billrun import BillingError
    from billing.db import DatabaseError

    try:
        return action()
    except BillingError as exc:
        fail(as_json, str(exc), 1, reason=exc.code)
    except (DatabaseError, psycopg.OperationalError) as exc:
        fail(as_json, f"the database failed: {str(exc).strip()}", 2)


def _period(text: str, as_json: bool):
    from billing.proration import Period

    try:
        return Period.parse(text)
    except ValueError as exc:
        fail(as_json, str(exc))


def _summary(doc: dict) -> str:
    return (f"{doc['id']:>8}  {doc['number'] or '(draft)':<18} {doc['status']:<6} "
            f"{doc['account']:<20} {doc['period']['start'][:7]}  "
            f"{doc['total']:>12} {doc['currency']}"
            + ("  reverse charge" if doc["reverse_charge"] else ""))


def _human(doc: dict) -> str:
    out = [f"{'Credit note' if doc.get('kind') == 'credit_note' else 'Invoice'} {doc['id']} "
           f"{doc['number'] or '(no number yet)'} ({doc['status']}), account {doc['account']}, "
           f"{doc['period']['start']} to {doc['period']['end']}"
           + (f", issued {doc['issue_date']}" if doc.get("issue_date") else "")]
    if doc.get("credits"):
        out.append(f"  credits invoice {doc['credits']['number']}: {doc.get('reason')}")
    for line in doc["lines"]:
        out.append(f"  {line['kind']:<10} {line['description'][:58]:<58} {line['quantity']:>12}"
                   f" {line['net']:>12}  {line['tax_rate']} %")
    for t in doc["tax"]:
        out.append(f"  VAT {t['rate']:>5} %  net {t['net']:>12}  tax {t['tax']:>10}")
    out.append(f"  total {doc['total']} {doc['currency']} (net {doc['net_total']}, tax "
               f"{doc['tax_total']})" + ("  Reverse charge" if doc["reverse_charge"] else ""))
    return "\n".join(out)


@click.group("bill")
def bill() -> None:
    """Bill runs: draft the period's invoices from the archive."""


@bill.command("run")
@click.option("--period", required=True, help="The month to bill, YYYY-MM (catalog time zone).")
@click.option("--account", default=None, help="Bill this account only.")
@click.option("--accounts-from", default=None, help="Bill accounts with ids from this one "
              "(inclusive): split a run over processes by ranges.")
@click.option("--accounts-to", default=None, help="... to this one (exclusive).")
@click.option("--shard", default=None, metavar="I/N",
              help="Bill the accounts of shard I of N (0 ≤ I < N), by a hash of the id.")
@click.option("--batch", type=click.IntRange(1, 100_000), default=500, show_default=True,
              help="Accounts per transaction.")
@_catalog_options
@db_options
@_actor_option
@_json_option
def bill_run_cmd(period: str, account, accounts_from, accounts_to, shard, batch, catalog_file,
                 redis_url, redis_password_file, db_url, data_dir, actor, as_json) -> None:
    """Draft (or re-draft) the invoices of --period; final invoices are never touched."""
    from billing.billrun import RunOptions, bill_run
    from charging.money import format_amount

    p = _period(period, as_json)
    split = None
    if shard is not None:
        try:
            i, n = (int(x) for x in shard.split("/"))
            if not 0 <= i < n:
                raise ValueError
        except ValueError:
            fail(as_json, f"--shard {shard!r} is not I/N with 0 ≤ I < N, such as 0/4")
        split = (i, n)
    cat, settings = _catalog(catalog_file, redis_url, redis_password_file, data_dir, as_json)
    conn = open_db(db_url, data_dir, as_json)
    opts = RunOptions(p, account, accounts_from, accounts_to, split, batch, actor)
    report = _guard(as_json, lambda: bill_run(conn, settings, opts, units=cat.services))
    conn.close()

    def money(m: int) -> str:
        return format_amount(m, settings.decimals)

    doc = report.as_dict(money)
    human = (f"bill run {p.label}: {report.accounts:,} accounts, {report.drafts:,} drafts "
             f"(net {doc['net_total']}, tax {doc['tax_total']}, total {doc['total']} "
             f"{settings.currency}), {report.final:,} final already left alone"
             + (f", {report.removed:,} drafts removed" if report.removed else ""))
    for acct, err in report.errors:
        human += f"\n  error: {acct}: {err}"
    emit(as_json, doc, human)
    if report.errors:
        sys.exit(1)


@click.group("invoice")
def invoice() -> None:
    """Invoices: list, show, finalize, render."""


@invoice.command("list")
@click.option("--account", default=None)
@click.option("--status", type=click.Choice(["draft", "final", "void"]), default=None)
@db_options
@_json_option
def invoice_list(account, status, db_url, data_dir, as_json) -> None:
    """Invoices in id order (JSONL with --json, one §8.3 object a line)."""
    from billing.billrun import dumps, list_docs

    conn = open_db(db_url, data_dir, as_json)

    def show():
        for doc in list_docs(conn, account=account, status=status):
            click.echo(dumps(doc) if as_json else _summary(doc))

    _guard(as_json, show)
    conn.close()


@invoice.command("show")
@click.argument("invoice_id", type=int)
@db_options
@_json_option
def invoice_show(invoice_id, db_url, data_dir, as_json) -> None:
    """One invoice or credit note (its §8.3 object with --json)."""
    from billing.billrun import get_doc

    conn = open_db(db_url, data_dir, as_json)
    doc = _guard(as_json, lambda: get_doc(conn, invoice_id))
    conn.close()
    if doc is None:
        fail(as_json, f"no invoice {invoice_id}")
    emit(as_json, doc, _human(doc))


@invoice.command("finalize")
@click.argument("invoice_id", type=int, required=False)
@click.option("--period", default=None, help="Finalize every draft of this month instead.")
@click.option("--reason", default=None, help="Why, recorded with the step.")
@_catalog_options
@db_options
@_actor_option
@_json_option
def invoice_finalize(invoice_id, period, reason, catalog_file, redis_url, redis_password_file,
                     db_url, data_dir, actor, as_json) -> None:
    """Number (gap-free per series) and freeze a draft, or every draft of --period."""
    from billing.billrun import finalize, finalize_period

    if (invoice_id is None) == (period is None):
        fail(as_json, "give an invoice ID or --period YYYY-MM (one of them)")
    _, settings = _catalog(catalog_file, redis_url, redis_password_file, data_dir, as_json)
    conn = open_db(db_url, data_dir, as_json)
    if invoice_id is not None:
        doc = _guard(as_json, lambda: finalize(conn, settings, invoice_id, actor=actor,
                                               reason=reason))
        conn.close()
        emit(as_json, doc, f"invoice {doc['id']} is final: {doc['number']}, total "
             f"{doc['total']} {doc['currency']}")
        return
    p = _period(period, as_json)
    done, stale = _guard(as_json, lambda: finalize_period(conn, settings, p, actor=actor,
                                                          reason=reason))
    conn.close()
    doc = {"period": p.label, "finalized": len(done), "first": done[0] if done else None,
           "last": done[-1] if done else None, "stale": stale}
    emit(as_json, doc, f"{len(done)} invoices of {p.label} final"
         + (f": {done[0]} to {done[-1]}" if done else "")
         + "".join(f"\n  error: {e}" for e in stale))
    if stale:
        sys.exit(1)


@invoice.command("render")
@click.argument("invoice_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["pdf", "html"]), default="pdf",
              show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The file to write.")
@db_options
@_json_option
def invoice_render(invoice_id, fmt, output, db_url, data_dir, as_json) -> None:
    """The printable invoice (or credit note) as PDF or HTML."""
    from billing.billrun import get_doc
    from billing.render import RenderError, render_html, render_pdf

    conn = open_db(db_url, data_dir, as_json)
    doc = _guard(as_json, lambda: get_doc(conn, invoice_id))
    conn.close()
    if doc is None:
        fail(as_json, f"no invoice {invoice_id}")
    try:
        data = render_pdf(doc) if fmt == "pdf" else render_html(doc).encode()
    except RenderError as exc:
        fail(as_json, str(exc))
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        fail(as_json, f"cannot write {output}: {exc.strerror or exc}")
    emit(as_json, {"id": invoice_id, "format": fmt, "file": output, "bytes": len(data)},
         f"wrote {output} ({len(data):,} bytes)")


@click.group("credit-note")
def credit_note() -> None:
    """Credit notes against final invoices."""


@credit_note.command("create")
@click.argument("invoice_id", type=int)
@click.option("--amount", default=None, help="The amount to credit, in the invoice's terms "
              "(net, or gross when its prices include tax); default: all that is left.")
@click.option("--reason", required=True, help="Why (printed on the credit note).")
@_catalog_options
@db_options
@_actor_option
@_json_option
def credit_note_create(invoice_id, amount, reason, catalog_file, redis_url,
                       redis_password_file, db_url, data_dir, actor, as_json) -> None:
    """Issue a credit note against final invoice INVOICE_ID, never more than is left."""
    from billing.corrections import create_credit_note

    _, settings = _catalog(catalog_file, redis_url, redis_password_file, data_dir, as_json)
    conn = open_db(db_url, data_dir, as_json)
    doc = _guard(as_json, lambda: create_credit_note(conn, settings, invoice_id, amount,
                                                     reason, actor=actor))
    conn.close()
    emit(as_json, doc, f"credit note {doc['id']} {doc['number']} on invoice "
         f"{doc['credits']['number']}: {doc['total']} {doc['currency']}")


@credit_note.command("list")
@click.option("--account", default=None)
@db_options
@_json_option
def credit_note_list(account, db_url, data_dir, as_json) -> None:
    """Credit notes in id order (JSONL with --json)."""
    from billing.billrun import dumps, list_docs

    conn = open_db(db_url, data_dir, as_json)

    def show():
        for doc in list_docs(conn, account=account, kind="credit_note"):
            click.echo(dumps(doc) if as_json else
                       _summary(doc) + f"  credits {doc['credits']['number']}")

    _guard(as_json, show)
    conn.close()


@click.group("dispute")
def dispute() -> None:
    """Disputes of final invoices: open, then accept (with a credit note) or reject."""


@dispute.command("open")
@click.argument("invoice_id", type=int)
@click.option("--reason", required=True)
@db_options
@_actor_option
@_json_option
def dispute_open(invoice_id, reason, db_url, data_dir, actor, as_json) -> None:
    from billing.corrections import open_dispute

    conn = open_db(db_url, data_dir, as_json)
    did = _guard(as_json, lambda: open_dispute(conn, invoice_id, reason, actor=actor))
    conn.close()
    emit(as_json, {"dispute": did, "invoice": invoice_id, "status": "open"},
         f"dispute {did} open on invoice {invoice_id}")


def _resolve(accept: bool):
    @click.argument("dispute_id", type=int)
    @click.option("--reason", required=True)
    @_catalog_options
    @db_options
    @_actor_option
    @_json_option
    def command(dispute_id, reason, catalog_file, redis_url, redis_password_file, db_url,
                data_dir, actor, as_json, amount=None) -> None:
        from billing.corrections import resolve_dispute

        _, settings = _catalog(catalog_file, redis_url, redis_password_file, data_dir,
                               as_json)
        conn = open_db(db_url, data_dir, as_json)
        out = _guard(as_json, lambda: resolve_dispute(conn, settings, dispute_id, accept,
                                                      reason, amount=amount, actor=actor))
        conn.close()
        note = out["credit_note"]
        emit(as_json, out, f"dispute {dispute_id} {out['status']}"
             + (f": credit note {note['number']}, {note['total']} {note['currency']}"
                if note else ""))
    return command


dispute.command("accept", help="Accept a dispute: a credit note of --amount (default: all "
                "that is left).")(click.option("--amount", default=None)(_resolve(True)))
dispute.command("reject", help="Reject a dispute.")(_resolve(False))


@dispute.command("list")
@click.option("--invoice", "invoice_id", type=int, default=None)
@db_options
@_json_option
def dispute_list(invoice_id, db_url, data_dir, as_json) -> None:
    from billing.billrun import dumps
    from billing.corrections import list_disputes

    conn = open_db(db_url, data_dir, as_json)
    rows = _guard(as_json, lambda: list_disputes(conn, invoice_id))
    conn.close()
    for d in rows:
        click.echo(dumps(d) if as_json else
                   f"{d['id']:>6}  invoice {d['invoice_number']:<18} {d['status']:<9} "
                   f"{d['reason']}" + (f"  → {d['credit_note']}" if d["credit_note"] else ""))


COMMANDS = (bill, invoice, credit_note, dispute)
