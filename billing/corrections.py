"""Credit notes and disputes over the store (CONTRACT §8.1; billing/credit.py does the sums).

A credit note is issued final: numbered in its own series (``CN-<year>``) in the transaction
that writes it, with the credited invoice's row locked (``SELECT ... FOR UPDATE``), so two
notes issued at once against one invoice cannot together credit more than is left. A dispute
of a final invoice is opened, then accepted (with a credit note, in the same transaction) or
rejected; every step is in ``billing_events`` with its actor and reason.
"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import psycopg
from psycopg.types.json import Jsonb

from billing.billrun import BillingError, _event, next_number, today, with_row
from billing.credit import CreditError, RateLeft, credit, parse_amount
from billing.settings import BillingSettings
from billing.tax import REVERSE_CHARGE, format_rate
from charging.money import MICROS, format_amount, parse_decimal


def _micros(text: str) -> int:
    return int(parse_decimal(text) * MICROS)


def _left(conn, invoice_id: int, doc: dict) -> list[RateLeft]:
    """What is left of each rate of an invoice after its credit notes (positive micros)."""
    left = {t["rate"]: [_micros(t["net"]), _micros(t["tax"])] for t in doc["tax"]}
    for (note,) in conn.execute("SELECT doc FROM invoices WHERE credits = %s", (invoice_id,)):
        for t in note["tax"]:  # a credit note's figures are negative
            left[t["rate"]][0] += _micros(t["net"])
            left[t["rate"]][1] += _micros(t["tax"])
    return [RateLeft(parse_decimal(rate), net, tax) for rate, (net, tax) in left.items()]


def create_credit_note(conn: psycopg.Connection, settings: BillingSettings, invoice_id: int,
                       amount: str | None, reason: str, *, actor: str = "cli",
                       now: dt.datetime | None = None, _in_transaction: bool = False) -> dict:
    """A final credit note of ``amount`` (the invoice's terms: net, or gross when its prices
    include tax; None: everything left) against final invoice ``invoice_id``."""
    if not reason or not reason.strip():
        raise BillingError("a credit note needs a reason (--reason TEXT)")
    if not _in_transaction:
        conn.commit()
    with conn.transaction():
        row = conn.execute("SELECT kind, status, account, period_start, period_end, currency, "
                           "number, issue_date, doc FROM invoices WHERE id = %s FOR UPDATE",
                           (invoice_id,)).fetchone()
        if row is None:
            raise BillingError(f"no invoice {invoice_id}")
        kind, status, account, pstart, pend, currency, number, issued_on, inv = row
        inv = with_row(invoice_id, number, status, issued_on, inv)
        if kind != "invoice" or status != "final":
            what = "a credit note" if kind != "invoice" else status
            raise BillingError(f"invoice {invoice_id} is {what}: credit notes are issued "
                               "against final invoices only")
        decimals = settings.decimals
        gross = bool(inv.get("prices_include_tax"))
        try:
            asked = None if amount is None else parse_amount(amount, decimals)
            credits = credit(_left(conn, invoice_id, inv), asked, gross=gross,
                             decimals=decimals)
        except CreditError as exc:
            raise BillingError(f"invoice {inv['number']}: {exc}") from exc

        def money(m: int) -> str:
            return format_amount(m, decimals)

        lines = [{"kind": "credit", "service": None,
                  "description": f"credit on invoice {inv['number']} of {inv['issue_date']}: "
                                 f"{reason.strip()}",
                  "quantity": "1", "net": money(-(c.net + c.tax if gross else c.net)),
                  "tax_rate": format_rate(c.rate)} for c in credits]
        tax = [{"rate": format_rate(c.rate), "net": money(-c.net), "tax": money(-c.tax)}
               for c in credits]
        net_total, tax_total = -sum(c.net for c in credits), -sum(c.tax for c in credits)
        issued = today(settings, now)
        series = f"{settings.credit_note_prefix}{issued.year}"
        seq = next_number(conn, series)
        number = f"{series}-{seq:06d}"
        doc = {"id": None, "number": number, "kind": "credit_note", "account": account,
               "status": "final", "issue_date": issued.isoformat(),
               "period": inv["period"], "currency": currency,
               "prices_include_tax": gross, "lines": lines, "tax": tax,
               "net_total": money(net_total), "tax_total": money(tax_total),
               "total": money(net_total + tax_total),
               "reverse_charge": inv["reverse_charge"],
               "place_of_supply": inv.get("place_of_supply"),
               "notes": [n for n in inv.get("notes", []) if n],
               "seller": inv["seller"], "buyer": inv["buyer"],
               "credits": {"id": invoice_id, "number": inv["number"],
                           "issue_date": inv["issue_date"]},
               "reason": reason.strip()}
        if inv["reverse_charge"] and REVERSE_CHARGE not in doc["notes"]:
            doc["notes"].insert(0, REVERSE_CHARGE)
        # the id first: the row is final from its insert on, so its document must hold it then
        new_id = conn.execute("SELECT nextval(pg_get_serial_sequence('invoices', 'id'))"
                              ).fetchone()[0]
        doc["id"] = new_id
        conn.execute(
            "INSERT INTO invoices (id, kind, account, period_start, period_end, status, "
            "series, seq, number, issue_date, currency, net_total, tax_total, total, "
            "reverse_charge, doc, credits, finalized_at) OVERRIDING SYSTEM VALUE VALUES "
            "(%s, 'credit_note', %s, %s, %s, 'final', %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, now())",
            (new_id, account, pstart, pend, series, seq, number, issued, currency, net_total,
             tax_total, net_total + tax_total, inv["reverse_charge"], Jsonb(doc), invoice_id))
        _event(conn, new_id, account, "credit_note", actor, reason.strip(),
               {"number": number, "credits": inv["number"], "total": doc["total"]})
    if not _in_transaction:
        conn.commit()
    return doc


def left_of(conn: psycopg.Connection, invoice_id: int, doc: dict) -> Fraction:
    return Fraction(sum(r.net + r.tax for r in _left(conn, invoice_id, doc)), MICROS)


def open_dispute(conn: psycopg.Connection, invoice_id: int, reason: str, *,
                 actor: str = "cli") -> int:
    if not reason or not reason.strip():
        raise BillingError("a dispute needs a reason (--reason TEXT)")
    conn.commit()
    with conn.transaction():
        row = conn.execute("SELECT kind, status, account FROM invoices WHERE id = %s",
                           (invoice_id,)).fetchone()
        if row is None or row[0] != "invoice" or row[1] != "final":
            raise BillingError(f"invoice {invoice_id} is not a final invoice: only a final "
                               "invoice is disputed")
        try:
            with conn.transaction():
                did = conn.execute("INSERT INTO disputes (invoice, status, reason, opened_by) "
                                   "VALUES (%s, 'open', %s, %s) RETURNING id",
                                   (invoice_id, reason.strip(), actor)).fetchone()[0]
        except psycopg.errors.UniqueViolation as exc:
            raise BillingError(f"invoice {invoice_id} has an open dispute already") from exc
        _event(conn, invoice_id, row[2], "dispute_open", actor, reason.strip(),
               {"dispute": did})
    conn.commit()
    return did


def resolve_dispute(conn: psycopg.Connection, settings: BillingSettings, dispute_id: int,
                    accept: bool, reason: str, *, amount: str | None = None,
                    actor: str = "cli", now: dt.datetime | None = None) -> dict:
    """Accept (issuing a credit note of ``amount``, None: all that is left) or reject."""
    if not reason or not reason.strip():
        raise BillingError("resolving a dispute needs a reason (--reason TEXT)")
    conn.commit()
    with conn.transaction():
        row = conn.execute("SELECT invoice, status FROM disputes WHERE id = %s FOR UPDATE",
                           (dispute_id,)).fetchone()
        if row is None:
            raise BillingError(f"no dispute {dispute_id}")
        invoice_id, status = row
        if status != "open":
            raise BillingError(f"dispute {dispute_id} is {status} already")
        note = None
        if accept:
            note = create_credit_note(conn, settings, invoice_id, amount,
                                      f"dispute {dispute_id} accepted: {reason.strip()}",
                                      actor=actor, now=now, _in_transaction=True)
        conn.execute("UPDATE disputes SET status = %s, resolved_by = %s, resolved_at = now(), "
                     "resolution = %s, credit_note = %s WHERE id = %s",
                     ("accepted" if accept else "rejected", actor, reason.strip(),
                      note["id"] if note else None, dispute_id))
        account = conn.execute("SELECT account FROM invoices WHERE id = %s",
                               (invoice_id,)).fetchone()[0]
        _event(conn, invoice_id, account, "dispute_accept" if accept else "dispute_reject",
               actor, reason.strip(), {"dispute": dispute_id,
                                       "credit_note": note["number"] if note else None})
    conn.commit()
    return {"dispute": dispute_id, "invoice": invoice_id,
            "status": "accepted" if accept else "rejected",
            "credit_note": note}


def list_disputes(conn: psycopg.Connection, invoice_id: int | None = None) -> list[dict]:
    rows = conn.execute(
        "SELECT d.id, d.invoice, i.number, d.status, d.reason, d.opened_by, d.opened_at, "
        "d.resolved_by, d.resolution, c.number FROM disputes d JOIN invoices i ON "
        "i.id = d.invoice LEFT JOIN invoices c ON c.id = d.credit_note "
        + ("WHERE d.invoice = %s " if invoice_id is not None else "") + "ORDER BY d.id",
        (invoice_id,) if invoice_id is not None else ()).fetchall()
    conn.commit()
    return [{"id": r[0], "invoice": r[1], "invoice_number": r[2], "status": r[3],
             "reason": r[4], "opened_by": r[5], "opened_at": r[6].isoformat(),
             "resolved_by": r[7], "resolution": r[8], "credit_note": r[9]} for r in rows]
