"""Bill runs and finalization over the archive in PostgreSQL (CONTRACT §8.1, §8.3).

``bill_run`` drafts one invoice per account and period from the archive: accounts are
streamed in batches (keyset over the account id, optionally a range ``[accounts_from,
accounts_to)`` or a shard ``i/n``, so that several processes split a run), and each batch is
read in one REPEATABLE READ snapshot: the charges aggregated in SQL by service, tariff and
rate, the period's adjustments, and each account's newest archive record (``chain_heads``).
A re-run replaces drafts in place and never touches a final invoice.

A charge goes on the invoice of its own period (``ts`` in the catalog's time zone) unless
that invoice is final without it: then on the next draft of the account, marked late.
Finalization (``finalize``) marks exactly the charges the draft counted — those with
``chain_seq`` up to the draft's ``chain_through`` that match the same rule — with the
invoice's id (and ``late``), numbers the invoice from its series' counter row, locked in the
same transaction, so numbers have no gaps, and freezes it (a trigger refuses any change of a
final row). A draft that no longer matches the archive (an earlier invoice finalized since)
is refused as stale: run the bill run again.

Every step is written to ``billing_events`` with its actor and reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import orjson
import psycopg
from psycopg.types.json import Jsonb

from billing.invoice import Adjustment, UsageGroup, build_invoice
from billing.proration import Period, fee_days, local_day
from billing.settings import BillingSettings
from billing.tax import Buyer, treatment
from charging.errors import ChargeflowError

RETRIES = 5  # a batch read again when a concurrent finalization moved under its snapshot


class BillingError(ChargeflowError, ValueError):
    """A billing request that cannot be done as asked (exit 1): the message says why."""

    code = "BILLING_REFUSED"


class StaleDraftError(BillingError):
    code = "DRAFT_STALE"


class NotDraftError(BillingError):
    code = "NOT_A_DRAFT"


@dataclass(frozen=True)
class RunOptions:
    period: Period
    account: str | None = None
    accounts_from: str | None = None  # inclusive
    accounts_to: str | None = None  # exclusive
    shard: tuple[int, int] | None = None  # (i, n): the accounts with hash % n == i
    batch: int = 500
    actor: str = "cli"


@dataclass
class RunReport:
    period: str
    accounts: int = 0
    drafts: int = 0
    final: int = 0  # accounts whose invoice of the period was final already (left alone)
    removed: int = 0  # drafts dropped: nothing left to bill
    net_total: int = 0
    tax_total: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: RunReport) -> None:
        for name in ("accounts", "drafts", "final", "removed", "net_total", "tax_total"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)

    def as_dict(self, money: Callable[[int], str]) -> dict:
        return {"period": self.period, "accounts": self.accounts, "drafts": self.drafts,
                "final": self.final, "removed": self.removed,
                "net_total": money(self.net_total), "tax_total": money(self.tax_total),
                "total": money(self.net_total + self.tax_total),
                "errors": [{"account": a, "error": e} for a, e in self.errors]}


# the charges a draft of a period counts: the period's own, and earlier ones whose own
# period's invoice is final without them (late); the same rule marks them at finalization
_CHARGES_RULE = """
    c.invoice_id IS NULL AND c.ts < %(end)s
    AND (c.ts >= %(start)s OR EXISTS (
        SELECT 1 FROM invoices i WHERE i.kind = 'invoice' AND i.status = 'final'
        AND i.account = c.account
        AND i.period_start = (date_trunc('month', c.ts AT TIME ZONE %(tz)s))::date))
"""

_USAGE = f"""
SELECT c.account, c.service, c.tariff, c.rate,
       CASE WHEN c.ts >= %(start)s THEN NULL
            ELSE to_char(c.ts AT TIME ZONE %(tz)s, 'YYYY-MM') END AS late,
       sum(c.rated_units)::bigint, sum(c.cost + c.uncharged)::bigint, count(*)
FROM charges c
WHERE c.account = ANY(%(accounts)s) AND {_CHARGES_RULE}
GROUP BY 1, 2, 3, 4, 5
"""


# the period's adjustments, and earlier ones whose own period's invoice is final without them
# (on no final invoice's lines): late
_ADJUSTMENTS = """
SELECT l.account, l.entry_id, l.ts, l.delta, l.note,
       CASE WHEN l.ts >= %(start)s THEN NULL
            ELSE to_char(l.ts AT TIME ZONE %(tz)s, 'YYYY-MM') END
FROM ledger l
WHERE l.account = ANY(%(accounts)s) AND l.reason = 'adjustment' AND l.ts < %(end)s
  AND (l.ts >= %(start)s OR (
      EXISTS (SELECT 1 FROM invoices i WHERE i.kind = 'invoice' AND i.status = 'final'
              AND i.account = l.account
              AND i.period_start = (date_trunc('month', l.ts AT TIME ZONE %(tz)s))::date)
      AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.kind = 'invoice'
              AND i.status = 'final' AND i.account = l.account
              AND i.doc @> jsonb_build_object('lines', jsonb_build_array(
                  jsonb_build_object('kind', 'adjustment', 'entry_id', l.entry_id))))))
"""


def _accounts(conn: psycopg.Connection, opts: RunOptions) -> Iterator[list[tuple]]:
    """Batches of (account, plan, name, country, vat_id, customer, opened_at) in account
    order (an account opened after the period still has the period's charges billed, if the
    engine dated any usage before its opening)."""
    where = ["true"]
    args: dict = {"limit": opts.batch}
    if opts.account is not None:
        where.append("account = %(account)s")
        args["account"] = opts.account
    if opts.accounts_from is not None:
        where.append("account >= %(afrom)s")
        args["afrom"] = opts.accounts_from
    if opts.accounts_to is not None:
        where.append("account < %(ato)s")
        args["ato"] = opts.accounts_to
    if opts.shard is not None:
        where.append("abs(hashtext(account)::bigint) %% %(n)s = %(i)s")
        args["i"], args["n"] = opts.shard
    last = None
    while True:
        cond = where + (["account > %(last)s"] if last is not None else [])
        args["last"] = last
        rows = conn.execute(
            "SELECT account, plan, name, country, vat_id, customer, opened_at FROM accounts "
            f"WHERE {' AND '.join(cond)} ORDER BY account LIMIT %(limit)s", args).fetchall()
        conn.commit()
        if not rows:
            return
        yield rows
        last = rows[-1][0]
        if len(rows) < opts.batch:
            return


def bill_run(conn: psycopg.Connection, settings: BillingSettings, opts: RunOptions, *,
             units: dict[str, str] | None = None) -> RunReport:
    """Draft (or re-draft) the period's invoices of the selected accounts."""
    zone = ZoneInfo(settings.timezone)
    period = opts.period
    start, end = period.bounds(zone)
    report = RunReport(period.label)
    conn.commit()
    level, conn.isolation_level = conn.isolation_level, psycopg.IsolationLevel.REPEATABLE_READ
    try:
        for batch in _accounts(conn, opts):
            for attempt in range(RETRIES):
                part = RunReport(period.label)
                try:
                    with conn.transaction():  # one snapshot per batch
                        _bill_batch(conn, settings, period, zone, start, end, batch,
                                    opts.actor, units or {}, part)
                    break
                except psycopg.errors.SerializationFailure:
                    # an invoice of the batch was finalized (or re-drafted by another
                    # run) after this snapshot: read the batch again
                    if attempt == RETRIES - 1:
                        raise
            report.add(part)
    finally:
        conn.commit()
        conn.isolation_level = level
    return report


def _bill_batch(conn, settings, period, zone, start, end, batch, actor, units, report) -> None:
    names = [row[0] for row in batch]
    args = {"accounts": names, "start": start, "end": end, "tz": settings.timezone,
            "pstart": period.start}
    heads = dict(conn.execute("SELECT account, seq FROM chain_heads WHERE account = "
                              "ANY(%(accounts)s)", args).fetchall())
    existing = dict(conn.execute(
        "SELECT account, status FROM invoices WHERE kind = 'invoice' AND account = "
        "ANY(%(accounts)s) AND period_start = %(pstart)s", args).fetchall())
    usage: dict[str, list[UsageGroup]] = {}
    for acct, service, tariff, rate, late, qty, amount, n in conn.execute(_USAGE, args):
        usage.setdefault(acct, []).append(
            UsageGroup(service, tariff, rate, int(qty), int(amount), int(n), late))
    adjustments: dict[str, list[Adjustment]] = {}
    for acct, entry_id, ts, delta, note, late in conn.execute(_ADJUSTMENTS, args):
        adjustments.setdefault(acct, []).append(
            Adjustment(entry_id, local_day(ts, zone).isoformat(), int(delta), note, late))
    drafts = []
    for acct, plan, name, country, vat_id, customer, opened_at in batch:
        report.accounts += 1
        if existing.get(acct) == "final":
            report.final += 1
            continue
        buyer = Buyer(acct, name, country, vat_id, customer or "consumer")
        opened_on = local_day(opened_at, zone)
        fee = settings.fees.get(plan) if plan else None
        if not usage.get(acct) and not adjustments.get(acct) and not (
                fee and fee_days(period, opened_on)):
            if acct in existing:
                _drop_draft(conn, acct, period, actor)
                report.removed += 1
            continue
        try:
            tax = treatment(settings, buyer, period.end)
        except LookupError as exc:
            report.errors.append((acct, str(exc)))
            continue
        draft = build_invoice(settings, buyer, period, plan=plan, opened_on=opened_on,
                              treatment=tax, usage=usage.get(acct, ()),
                              adjustments=adjustments.get(acct, ()), units=units)
        drafts.append((draft, heads.get(acct, 0)))
        report.drafts += 1
        report.net_total += draft.net_total
        report.tax_total += draft.tax_total
    _store_drafts(conn, drafts, actor)


def _store_drafts(conn, drafts: list, actor: str) -> None:
    """Upsert a batch's drafts in one pipelined round of statements, and their events."""
    if not drafts:
        return
    params = []
    docs = []
    for draft, chain_through in drafts:
        doc = draft.document()
        docs.append(doc)
        params.append((draft.account, draft.period.start, draft.period.end, draft.currency,
                       draft.net_total, draft.tax_total, draft.total,
                       draft.treatment.reverse_charge, Jsonb(doc), chain_through,
                       draft.charges))
    with conn.cursor() as cur:
        cur.executemany(_UPSERT, params, returning=True)
        ids = []
        while True:
            row = cur.fetchone()
            ids.append(row[0] if row else None)  # None: final meanwhile, left alone
            if not cur.nextset():
                break
        events = [(i, d.account, "draft", actor, None,
                   Jsonb({"period": d.period.label, "total": doc["total"],
                          "charges": d.charges}))
                  for i, (d, _), doc in zip(ids, drafts, docs, strict=True) if i is not None]
        cur.executemany("INSERT INTO billing_events (invoice, account, action, actor, reason, "
                        "detail) VALUES (%s, %s, %s, %s, %s, %s)", events)


_UPSERT = (
    "INSERT INTO invoices (kind, account, period_start, period_end, status, currency, "
    "net_total, tax_total, total, reverse_charge, doc, chain_through, charge_count) "
    "VALUES ('invoice', %s, %s, %s, 'draft', %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (account, period_start) WHERE kind = 'invoice' DO UPDATE SET "
    "doc = EXCLUDED.doc, currency = EXCLUDED.currency, net_total = EXCLUDED.net_total, "
    "tax_total = EXCLUDED.tax_total, total = EXCLUDED.total, "
    "reverse_charge = EXCLUDED.reverse_charge, chain_through = EXCLUDED.chain_through, "
    "charge_count = EXCLUDED.charge_count, built_at = now() "
    "WHERE invoices.status = 'draft' RETURNING id")


def _drop_draft(conn, account: str, period: Period, actor: str) -> None:
    row = conn.execute("DELETE FROM invoices WHERE kind = 'invoice' AND account = %s AND "
                       "period_start = %s AND status = 'draft' RETURNING id",
                       (account, period.start)).fetchone()
    if row:
        _event(conn, None, account, "draft_removed", actor, "nothing left to bill",
               {"period": period.label, "id": row[0]})


def _event(conn, invoice: int | None, account: str, action: str, actor: str,
           reason: str | None, detail: dict | None = None) -> None:
    conn.execute("INSERT INTO billing_events (invoice, account, action, actor, reason, "
                 "detail) VALUES (%s, %s, %s, %s, %s, %s)",
                 (invoice, account, action, actor, reason,
                  Jsonb(detail) if detail is not None else None))


def today(settings: BillingSettings, now: dt.datetime | None = None) -> dt.date:
    return local_day(now or dt.datetime.now(dt.UTC), ZoneInfo(settings.timezone))


def next_number(conn, series: str) -> int:
    """The next number of ``series``; its counter row stays locked until the transaction
    ends, so concurrent finalizations queue and a rolled-back one leaves no gap."""
    conn.execute("INSERT INTO invoice_series (series, last_number) VALUES (%s, 0) "
                 "ON CONFLICT DO NOTHING", (series,))
    return conn.execute("UPDATE invoice_series SET last_number = last_number + 1 "
                        "WHERE series = %s RETURNING last_number", (series,)).fetchone()[0]


def finalize(conn: psycopg.Connection, settings: BillingSettings, invoice_id: int, *,
             actor: str = "cli", reason: str | None = None,
             now: dt.datetime | None = None) -> dict:
    """Number and freeze a draft; returns its document. ``BillingError`` if it is not a
    draft, ``StaleDraftError`` if the archive no longer matches what it counted."""
    conn.commit()
    with conn.transaction():
        return _finalize(conn, settings, invoice_id, actor, reason, today(settings, now))


def finalize_period(conn: psycopg.Connection, settings: BillingSettings, period: Period, *,
                    actor: str = "cli", reason: str | None = None, chunk: int = 200,
                    now: dt.datetime | None = None) -> tuple[list[str], list[str]]:
    """Finalize every draft of ``period`` in account order, ``chunk`` invoices per
    transaction (each in a savepoint of its own: a stale draft is skipped and named, the
    others go final with consecutive numbers). Returns (numbers, stale reasons)."""
    numbers: list[str] = []
    stale: list[str] = []
    ids = drafts_of(conn, period)
    issued = today(settings, now)
    for at in range(0, len(ids), chunk):
        done: list[str] = []
        with conn.transaction():
            for invoice_id in ids[at:at + chunk]:
                try:
                    with conn.transaction():
                        done.append(_finalize(conn, settings, invoice_id, actor, reason,
                                              issued)["number"])
                except StaleDraftError as exc:
                    stale.append(str(exc))
                except NotDraftError:
                    pass  # finalized by another finalizer meanwhile
        numbers.extend(done)
    return numbers, stale


def _finalize(conn, settings: BillingSettings, invoice_id: int, actor: str,
              reason: str | None, issued: dt.date) -> dict:
    row = conn.execute(
        "SELECT kind, account, period_start, status, chain_through, charge_count, doc "
        "FROM invoices WHERE id = %s FOR UPDATE", (invoice_id,)).fetchone()
    if row is None:
        raise BillingError(f"no invoice {invoice_id}")
    kind, account, pstart, status, through, count, doc = row
    if kind != "invoice" or status != "draft":
        raise NotDraftError(f"invoice {invoice_id} is {status}, not a draft: only a "
                            "draft is finalized")
    period = Period.of(pstart)
    start, end = period.bounds(ZoneInfo(settings.timezone))
    marked = conn.execute(
        f"UPDATE charges c SET invoice_id = %(id)s, late = (c.ts < %(start)s) "
        f"WHERE c.account = %(account)s AND c.chain_seq <= %(through)s "
        f"AND {_CHARGES_RULE}",
        {"id": invoice_id, "start": start, "end": end, "tz": settings.timezone,
         "account": account, "through": through}).rowcount
    if marked != count:
        raise StaleDraftError(
            f"invoice {invoice_id} ({account}, {period.label}) counted {count} "
            f"charges but {marked} match now (an earlier invoice was finalized "
            "since): run `chargeflow bill run` for the period again, then finalize")
    series = f"{settings.number_prefix}{issued.year}"
    seq = next_number(conn, series)
    number = f"{series}-{seq:06d}"
    conn.execute("UPDATE invoices SET status = 'final', series = %s, seq = %s, "
                 "number = %s, issue_date = %s, finalized_at = now() WHERE id = %s",
                 (series, seq, number, issued, invoice_id))
    doc = with_row(invoice_id, number, "final", issued, doc)
    _event(conn, invoice_id, account, "finalize", actor, reason,
           {"number": number, "total": doc["total"], "charges": count})
    return doc


def drafts_of(conn: psycopg.Connection, period: Period) -> list[int]:
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM invoices WHERE kind = 'invoice' AND status = 'draft' AND "
        "period_start = %s ORDER BY account", (period.start,))]
    conn.commit()
    return ids


_ROW = "id, number, status, issue_date, doc"


def with_row(invoice_id: int, number: str | None, status: str, issued: dt.date | None,
             doc: dict) -> dict:
    """The §8.3 object: the stored body with what its row holds (id, number, status, date)."""
    return {"id": invoice_id, "number": number, "status": status,
            "issue_date": issued.isoformat() if issued else None,
            **{k: v for k, v in doc.items()
               if k not in ("id", "number", "status", "issue_date")}}


def get_doc(conn: psycopg.Connection, invoice_id: int) -> dict | None:
    row = conn.execute(f"SELECT {_ROW} FROM invoices WHERE id = %s", (invoice_id,)).fetchone()
    conn.commit()
    return with_row(*row) if row else None


def list_docs(conn: psycopg.Connection, *, account: str | None = None,
              status: str | None = None, kind: str = "invoice") -> Iterator[dict]:
    """Documents in id order, streamed (a server-side cursor)."""
    where, args = ["kind = %s"], [kind]
    if account is not None:
        where.append("account = %s")
        args.append(account)
    if status is not None:
        where.append("status = %s")
        args.append(status)
    with conn.transaction(), conn.cursor(name="invoice_list") as cur:
        cur.execute(f"SELECT {_ROW} FROM invoices WHERE {' AND '.join(where)} ORDER BY id",
                    args)
        for row in cur:
            yield with_row(*row)


def dumps(doc: dict) -> str:
    return orjson.dumps(doc).decode()
