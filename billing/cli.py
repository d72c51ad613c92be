"""``chargeflow archive`` and ``chargeflow audit verify`` (CONTRACT §8.1), and the database
options every billing command shares (``db_options``, ``open_db``)."""

from __future__ import annotations

import signal
import sys
import threading
import time

import click

from charging.errors import StoreError
from flows.cli_common import connect_services, emit, fail, password_file_option


def db_options(fn):
    """--db and --data-dir, as every billing command takes them (billing/db.py)."""
    fn = click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
                      help="Directory of the embedded services (default .chargeflow/).")(fn)
    fn = click.option("--db", "db_url", default=None,
                      help="PostgreSQL URL (default: $CHARGEFLOW_DB_URL, else an embedded "
                      "PostgreSQL in the data directory).")(fn)
    return fn


def open_db(db_url: str | None, data_dir: str | None, as_json: bool):
    """A migrated connection; exit 1 when --db is not a connection string, 2 when the
    database cannot be reached or started."""
    from billing.db import Database, DatabaseError, DatabaseUrlError

    try:
        return Database.from_options(db_url, data_dir).connect()
    except DatabaseUrlError as exc:
        fail(as_json, str(exc), 1)
    except DatabaseError as exc:
        fail(as_json, str(exc), 2)


@click.command("archive")
@click.option("--until-idle", is_flag=True,
              help="Exit 0 once every outbox entry is archived (else keep following).")
@click.option("--batch", type=click.IntRange(min=1, max=100_000), default=2000,
              show_default=True, help="Outbox entries per transaction.")
@click.option("--retain-s", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep archived outbox entries this many seconds in Redis (0: trim them "
              "once committed).")
@click.option("--redis", "redis_url", default=None,
              help="Redis URL (default: $CHARGEFLOW_REDIS_URL, else embedded).")
@password_file_option
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
def archive(until_idle: bool, batch: int, retain_s: int, redis_url: str | None,
            redis_password_file: str | None, db_url: str | None, data_dir: str | None,
            as_json: bool) -> None:
    """Bring every charge, ledger entry and account change from the Redis outbox into the
    archive in PostgreSQL: exactly once, resumable after any crash (docs/billing.md)."""
    from billing.archive import Archiver, ArchiveSettings
    from billing.db import DatabaseError

    # Redis first: a data directory where nothing was loaded starts no database either
    services, client = connect_services(redis_url, data_dir, redis_password_file,
                                        create=False)
    conn = open_db(db_url, data_dir, as_json)
    stop = threading.Event()
    before = {sig: signal.signal(sig, lambda *_: stop.set())  # the batch under way commits
              for sig in (signal.SIGTERM, signal.SIGINT)}
    archiver = Archiver(conn, client, prefix=services.prefix,
                        settings=ArchiveSettings(batch=batch, retain_ms=retain_s * 1000))
    started = time.monotonic()
    shown = [started]

    def progress(totals) -> None:
        now = time.monotonic()
        if now - shown[0] >= 2.0:
            shown[0] = now
            rate = totals.charges / (now - started)
            click.echo(f"archive: {totals.entries:,} outbox entries: {totals.charges:,} "
                       f"charges, {totals.ledger:,} ledger entries, "
                       f"{totals.account_changes:,} account changes ({rate:,.0f} charges/s)",
                       err=True)

    try:
        totals = archiver.run(until_idle=until_idle, stop=stop, progress=progress)
    except StoreError as exc:
        fail(as_json, str(exc), 2)
    except DatabaseError as exc:
        fail(as_json, str(exc), 2)
    finally:
        conn.close()
        for sig, handler in before.items():
            signal.signal(sig, handler)
    elapsed = time.monotonic() - started
    doc = {**totals.as_dict(), "seconds": round(elapsed, 3)}
    emit(as_json, doc,
         f"archived {totals.entries:,} outbox entries: {totals.charges:,} charges, "
         f"{totals.ledger:,} ledger entries, {totals.account_changes:,} account changes"
         + (f", {totals.duplicates:,} repeats skipped" if totals.duplicates else "")
         + (f", {totals.rejects:,} unreadable entries kept in archive_rejects"
            if totals.rejects else "") + f" in {elapsed:.1f} s")


@click.group()
def audit() -> None:
    """Check the archive."""


@audit.command("verify")
@click.option("--account", default=None, help="Check this account's chain only.")
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def audit_verify(account: str | None, db_url: str | None, data_dir: str | None,
                 as_json: bool) -> None:
    """Recompute the archive's hash chains; exit 1 naming the first broken record."""
    import psycopg

    from billing.audit import verify

    conn = open_db(db_url, data_dir, as_json)
    try:
        report = verify(conn, account)
    except psycopg.Error as exc:
        fail(as_json, f"cannot read the archive: {str(exc).strip()}", 2)
    finally:
        conn.close()
    if report.broken is not None:
        if as_json:
            emit(True, report.as_dict(), "")
        else:
            click.echo(f"error: the archive's hash chain is broken at {report.broken}",
                       err=True)
        sys.exit(1)
    emit(as_json, report.as_dict(),
         f"archive verified: {report.records:,} records of {report.accounts:,} accounts, "
         f"every chain intact (digest {report.digest[:16]})")
