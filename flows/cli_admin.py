"""Catalog, account and offline-rating commands (CONTRACT §5)."""

from __future__ import annotations

import codecs
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import orjson

from balances.topups import MAX_ID_RETENTION_S
from charging.errors import CatalogError, CorruptAccountError, StoreError
from flows.cli_common import (
    connect_services,
    emit,
    fail,
    fail_problems,
    load_catalog_or_exit,
    service_options,
)
from flows.services import Services

RATE_BLOCK = 8192  # lines rated as one block by `chargeflow rate`
RATE_READ = 1 << 22  # bytes read at a time


@click.group()
def catalog() -> None:
    """Validate and load product catalogs."""


@catalog.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@service_options
def catalog_load(file: str, redis_url: str | None, redis_password_file: str | None,
                 data_dir: str | None, as_json: bool) -> None:
    """Validate FILE and make it the active catalog version in Redis (atomically)."""
    from catalog_cache.store import load_catalog_text

    try:
        text = Path(file).read_text(encoding="utf-8-sig")  # a byte-order mark is not content
    except (OSError, UnicodeDecodeError) as exc:
        fail(as_json, f"cannot read {file}: {exc}")
    services, client = connect_services(redis_url, data_dir, redis_password_file)
    try:
        cat = load_catalog_text(client, text, prefix=services.prefix, source=file)
    except CatalogError as exc:
        fail_problems(as_json, "catalog invalid", exc)
    except StoreError as exc:
        fail(as_json, str(exc), 2)
    emit(as_json, {"loaded": True, "version": cat.version, "content_hash": cat.content_hash},
          f"catalog {cat.version!r} loaded and active ({cat.content_hash[:16]})")


@catalog.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def catalog_validate(file: str, as_json: bool) -> None:
    """Validate FILE; list every problem with its YAML path (exit 1), or print a summary."""
    cat = load_catalog_or_exit(file, as_json)
    n_rates = sum(len(t.rates) for t in cat.tariffs.values())
    n_prefixes = sum(len(p) for p in cat.destinations.values())
    summary = {
        "valid": True, "file": file, "version": cat.version, "currency": cat.currency,
        "timezone": cat.timezone, "content_hash": cat.content_hash,
        "services": len(cat.services), "destination_groups": len(cat.destinations),
        "prefixes": n_prefixes, "bands": len(cat.bands), "tariffs": len(cat.tariffs),
        "rates": n_rates, "plans": len(cat.plans),
    }
    if as_json:
        click.echo(orjson.dumps(summary).decode())
        return
    click.echo(f"{file}: valid — version {cat.version!r}, {cat.currency}, {cat.timezone}")
    click.echo(f"  {len(cat.services)} services, {len(cat.destinations)} destination groups "
               f"({n_prefixes} prefixes), {len(cat.bands)} bands, {len(cat.tariffs)} tariffs "
               f"({n_rates} rates), {len(cat.plans)} plans")
    click.echo(f"  content hash {cat.content_hash[:16]}")


@click.group()
def accounts() -> None:
    """Account administration."""


@accounts.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@service_options
def accounts_load(file: str, redis_url: str | None, redis_password_file: str | None,
                  data_dir: str | None, as_json: bool) -> None:
    """Load accounts from FILE (YAML list or JSONL), all or nothing.

    New accounts get their balance (ledgered as "open"); existing ones keep balance and
    sessions and take the file's plan, status and allow_negative.
    """
    from balances.accounts import AccountsFileError, read_accounts
    from balances.store import BalanceStore
    from catalog_cache.store import CatalogCache

    services, client = connect_services(redis_url, data_dir, redis_password_file)
    try:
        cache = CatalogCache(client, prefix=services.prefix)
        active = cache.refresh()
        cat = cache.current.catalog if active else None
        specs = read_accounts(file, cat)
        created, updated = BalanceStore(client, prefix=services.prefix).upsert_accounts(specs)
    except AccountsFileError as exc:
        fail_problems(as_json, "accounts invalid", exc)
    except StoreError as exc:
        fail(as_json, str(exc), 2)
    emit(as_json, {"created": created, "updated": updated},
          f"{created} accounts created, {updated} updated")


@click.command("balance")
@click.argument("account")
@service_options
def balance(account: str, redis_url: str | None, redis_password_file: str | None,
            data_dir: str | None, as_json: bool) -> None:
    """Show an account: balance, reserved money, allowances and open sessions."""
    from balances.store import BalanceStore

    services, client = connect_services(redis_url, data_dir, redis_password_file,
                                        create=False)
    try:
        acct = BalanceStore(client, prefix=services.prefix).view(account)
    except StoreError as exc:
        fail(as_json, str(exc), 2)
    except CorruptAccountError as exc:
        fail(as_json, f"{exc}; its hash needs repair", 1, id=account)
    if acct is None:
        fail(as_json, f"no account {account!r}", 1, id=account)
    from balances.views import account_json
    from catalog_cache.store import CatalogCache

    cache = CatalogCache(client, prefix=services.prefix)
    doc = account_json(acct, cache.current.catalog if cache.refresh() else None)
    if as_json:
        emit(True, doc, "")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"account {acct.id} — plan {acct.plan}, {acct.status}")
    table.add_column("")
    table.add_column("", justify="right")
    for key in ("balance", "reserved", "available"):
        table.add_row(key, doc[key])
    for svc, units in doc["allowances"].items():
        table.add_row(f"allowance {svc}", f"{units:,} ({doc['allowances_reserved'][svc]:,} held)")
    for s in doc["sessions"]:
        table.add_row(f"session {s['session']}", f"{s['service']} {s['rate']}: used "
                      f"{s['used']:,}, granted {s['granted']:,}, {s['reserved']} held")
    Console().print(table)


@click.command("topup", context_settings={"ignore_unknown_options": True})
@click.argument("account")
@click.argument("amount")
@click.option("--id", "topup_id", default=None, help="Idempotency key: the same id applies once.")
@click.option("--id-retention-s", type=click.IntRange(min=0, max=MAX_ID_RETENTION_S),
              default=90 * 86400, show_default=True,
              help="Seconds the --id is remembered (0: for ever).")
@service_options
def topup(account: str, amount: str, topup_id: str | None, id_retention_s: int,
          redis_url: str | None, redis_password_file: str | None, data_dir: str | None,
          as_json: bool) -> None:
    """Credit AMOUNT (a decimal, e.g. 10.00; negative to debit) to ACCOUNT, ledgered."""
    from balances.store import BalanceStore
    from balances.topups import check_topup_id, refusal
    from charging.decide import BALANCE_LIMIT
    from charging.money import MICROS, parse_decimal
    from charging.records import format_balance

    try:
        micros = parse_decimal(amount) * MICROS
    except ValueError as exc:
        fail(as_json, f"AMOUNT: {exc}")
    if micros.denominator != 1 or micros == 0:
        fail(as_json, f"AMOUNT {amount!r} must be non-zero with at most 6 decimals")
    if abs(micros) > BALANCE_LIMIT:
        fail(as_json, f"AMOUNT {amount!r} is beyond the supported range of balances, "
             f"±{format_balance(BALANCE_LIMIT)}")
    try:
        check_topup_id(topup_id)
    except ValueError as exc:
        fail(as_json, f"--id: {exc}")
    services, client = connect_services(redis_url, data_dir, redis_password_file,
                                        create=False)
    try:
        done = BalanceStore(client, prefix=services.prefix).topup(
            account, micros.numerator, topup_id=topup_id, id_retention_s=id_retention_s)
    except StoreError as exc:
        fail(as_json, str(exc), 2)
    refused = refusal(done, account, micros.numerator, topup_id)
    if refused is not None:
        extra = {"reason": done.status}
        if done.id_amount is not None:
            extra["applied_amount"] = format_balance(done.id_amount)
        fail(as_json, refused, 1, id=account, **extra)
    doc = {"id": account, "applied": done.status == "ok",
           "balance": format_balance(done.balance or 0), "topup_id": topup_id}
    what = "applied" if done.status == "ok" else f"already applied earlier (id {topup_id!r})"
    emit(as_json, doc, f"top-up {what}; balance {doc['balance']}")


@click.command("sweep")
@service_options
def sweep_cmd(redis_url: str | None, redis_password_file: str | None, data_dir: str | None,
              as_json: bool) -> None:
    """Release the reservations of sessions silent for 2 × their validity."""
    import time

    from balances.store import BalanceStore
    from balances.sweeper import sweep

    services, client = connect_services(redis_url, data_dir, redis_password_file,
                                        create=False)
    try:
        n = sweep(BalanceStore(client, prefix=services.prefix), int(time.time() * 1000))
    except StoreError as exc:
        fail(as_json, str(exc), 2)
    emit(as_json, {"released": n}, f"{n} silent sessions released")


@click.command("stop")
@click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
              help="Directory of the embedded services (default .chargeflow/).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stop(data_dir: str | None, as_json: bool) -> None:
    """Stop the embedded services started for --data-dir."""
    from billing.db import EmbeddedPostgres
    from flows.broker import EmbeddedBroker

    services = Services.from_options(None, data_dir)
    stopped = {"redis": services.embedded.stop(),
               "broker": EmbeddedBroker(services.data_dir).stop(),
               "postgres": EmbeddedPostgres(services.data_dir).stop()}
    what = [name for name, done in stopped.items() if done]
    emit(as_json, {"stopped": stopped},
          f"stopped embedded {' and '.join(what)}" if what else "no embedded service was running")


@click.command("rate")
@click.option("--catalog", "catalog_file", required=True, type=click.Path(dir_okay=False),
              help="Catalog YAML file.")
@click.option("--plan", default=None, help="Plan for requests without a 'plan' field "
              "(default: the catalog's first plan).")
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: output is JSONL.")
@click.argument("infile", required=False, type=click.File("rb"), default="-")
def rate(catalog_file: str, plan: str | None, as_json: bool, infile) -> None:
    """Rate each JSONL request's `used` units offline: no balances, allowances or sessions.

    One JSON line out per request, in order: {"id", "cost", "rated_units", "tariff", "rate"}
    or {"id", "error", "detail"}.
    """
    from charging.compiler import compile_catalog
    from charging.offline import OfflineRater

    cat = load_catalog_or_exit(catalog_file, False)
    if plan is not None and plan not in cat.plans:
        click.echo(f"--plan {plan!r} is not in the catalog (plans: {', '.join(cat.plans)})",
                   err=True)
        sys.exit(1)
    compiled = compile_catalog(cat)
    rater = OfflineRater(compiled, plan)
    out = sys.stdout
    utf8 = codecs.lookup(getattr(out, "encoding", None) or "ascii").name == "utf-8"
    raw = getattr(out, "buffer", None) if utf8 else None
    out.flush()
    for first, block in _blocks(infile, RATE_BLOCK):
        rated = rater.rate_block(block, first)  # UTF-8
        if raw is not None:  # the bytes the text would be written as, without a re-encode
            raw.write(rated)
        else:
            out.write(rated.decode())
    if raw is not None:
        raw.flush()
    out.flush()


def _blocks(stream, size: int) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, the text of up to ``size`` whole lines) of a binary
    stream read in large pieces; a piece's unfinished last line waits for the next."""
    import numpy as np

    first, rest = 1, b""
    while piece := stream.read(RATE_READ):
        data = rest + piece
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
        cut = 0
        for k in range(0, len(ends), size):
            end = int(ends[min(k + size, len(ends)) - 1])
            yield first, data[cut:end]
            first += min(size, len(ends) - k)
            cut = end
        rest = data[cut:]
    if rest:
        yield first, rest
