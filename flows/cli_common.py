"""What the command modules share: service options, connecting, printing, failing."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import click
import orjson

from charging.catalog import Catalog, load_catalog
from charging.errors import CatalogError, StoreError
from flows.services import Services

BATCH = 4096


def sample_catalog_path() -> Path:
    """The sample catalog of CONTRACT §4, shipped with the package."""
    return Path(str(resources.files("charging") / "samples" / "catalog.yaml"))


def load_catalog_or_exit(path: str, as_json: bool) -> Catalog:
    try:
        return load_catalog(path)
    except CatalogError as exc:
        if as_json:
            click.echo(orjson.dumps({"valid": False, "file": path, "problems": [
                {"path": p.path, "reason": p.reason} for p in exc.problems]}).decode())
        else:
            click.echo(str(exc), err=True)
        sys.exit(1)


def password_file_option(fn):
    """--redis-password-file: the password of --redis from a file (flows/services.py)."""
    return click.option(
        "--redis-password-file", "redis_password_file", default=None, metavar="FILE",
        help="Read the password of --redis from FILE's first line (before "
        "$CHARGEFLOW_REDIS_PASSWORD, before the URL's own).")(fn)


def service_options(fn):
    """--redis, --redis-password-file, --data-dir and --json, as every command of CONTRACT
    §5 takes them."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(fn)
    fn = click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
                      help="Directory of the embedded Redis (default .chargeflow/).")(fn)
    fn = password_file_option(fn)
    fn = click.option("--redis", "redis_url", default=None,
                      help="Redis URL (default: $CHARGEFLOW_REDIS_URL, else embedded).")(fn)
    return fn


def connect_services(redis_url: str | None, data_dir: str | None,
                     password_file: str | None = None, *, create: bool = True):
    """(Services, client); exit 2 with the reason when Redis cannot be reached, 1 when the
    options are wrong: ``--redis`` is not a Redis URL, the password file cannot be read, the
    data directory cannot be used, or (without ``create``: commands that read or change
    existing accounts) it holds no embedded Redis to start."""
    try:
        services = Services.from_options(redis_url, data_dir, password_file=password_file)
        return services, services.redis(create=create)
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ValueError as exc:  # DataDirError too: bad input, not an unreachable service
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def emit(as_json: bool, doc: dict, human: str) -> None:
    click.echo(orjson.dumps(doc).decode() if as_json else human)


def fail(as_json: bool, message: str, code: int = 1, **extra) -> None:
    if as_json:
        click.echo(orjson.dumps({"error": message, **extra}).decode())
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


def fail_problems(as_json: bool, what: str, exc) -> None:
    """Exit 1 listing every problem of an invalid file (``exc.problems``), each with where."""
    if as_json:
        fail(True, what, problems=[{"path": p.path, "reason": p.reason} for p in exc.problems])
    click.echo(str(exc), err=True)
    sys.exit(1)


#: balances.store's DEFAULT_RETENTION_S and DEFAULT_LEDGER_RETENTION_S, written out: importing
#: the store here would put redis-py into the start-up of every command (~0.25 s)
IDEMPOTENCY_RETENTION_S, LEDGER_RETENTION_S = 600, 90 * 86400


def retention_options(fn):
    """What the engine keeps in Redis, as ``run`` and ``serve`` take it."""
    fn = click.option("--ledger-retention-s", "ledger_s", type=click.IntRange(min=0),
                      default=LEDGER_RETENTION_S, show_default=True,
                      help="Seconds ledger entries are kept in Redis (0: forever); older "
                      "ones are trimmed as accounts are charged.")(fn)
    return click.option("--idempotency-retention-s", "idem_s", type=click.IntRange(min=1),
                        default=IDEMPOTENCY_RETENTION_S, show_default=True,
                        help="Seconds a request id's decision is kept at least (replays "
                        "within it are answered with the first decision); older ones are "
                        "dropped as their account is charged again.")(fn)
