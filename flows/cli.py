"""The ``chargeflow`` command line (CONTRACT §5).

Exit codes: 0 success, 1 the input or request was wrong (the message says what and where),
2 a service could not be reached. Every command that prints a result takes ``--json``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import TextIO

import click
import orjson

from charging.catalog import Catalog, load_catalog
from charging.errors import BrokerError, CatalogError, RequestError, StoreError
from flows.services import Services

BATCH = 4096


def sample_catalog_path() -> Path:
    """The sample catalog of CONTRACT §4, shipped with the package."""
    return Path(str(resources.files("charging") / "samples" / "catalog.yaml"))


def _load_or_exit(path: str, as_json: bool) -> Catalog:
    try:
        return load_catalog(path)
    except CatalogError as exc:
        if as_json:
            click.echo(orjson.dumps({"valid": False, "file": path, "problems": [
                {"path": p.path, "reason": p.reason} for p in exc.problems]}).decode())
        else:
            click.echo(str(exc), err=True)
        sys.exit(1)


class _Group(click.Group):
    """click exits 2 on a usage error; CONTRACT §5 keeps 2 for unreachable services, so a
    wrong command line exits 1 like any other wrong input."""

    def main(self, *args, **kwargs):
        kwargs.pop("standalone_mode", None)
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            exc.show()
            sys.exit(1)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chargeflow")
def main() -> None:
    """chargeflow: a real-time online charging engine (rating, balances, quota grants)."""


def service_options(fn):
    """--redis, --data-dir and --json, as every command of CONTRACT §5 takes them."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(fn)
    fn = click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
                      help="Directory of the embedded Redis (default .chargeflow/).")(fn)
    fn = click.option("--redis", "redis_url", default=None,
                      help="Redis URL (default: $CHARGEFLOW_REDIS_URL, else embedded).")(fn)
    return fn


def _connect(redis_url: str | None, data_dir: str | None):
    """(Services, client), or exit 2 with the reason when Redis cannot be reached."""
    services = Services.from_options(redis_url, data_dir)
    try:
        return services, services.redis()
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _emit(as_json: bool, doc: dict, human: str) -> None:
    click.echo(orjson.dumps(doc).decode() if as_json else human)


def _fail(as_json: bool, message: str, code: int = 1, **extra) -> None:
    if as_json:
        click.echo(orjson.dumps({"error": message, **extra}).decode())
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


@main.group()
def catalog() -> None:
    """Validate and load product catalogs."""


@catalog.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@service_options
def catalog_load(file: str, redis_url: str | None, data_dir: str | None, as_json: bool) -> None:
    """Validate FILE and make it the active catalog version in Redis (atomically)."""
    from catalog_cache.store import load_catalog_text

    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(as_json, f"cannot read {file}: {exc}")
    services, client = _connect(redis_url, data_dir)
    try:
        cat = load_catalog_text(client, text, prefix=services.prefix, source=file)
    except CatalogError as exc:
        if as_json:
            _fail(True, "catalog invalid", problems=[{"path": p.path, "reason": p.reason}
                                                     for p in exc.problems])
        click.echo(str(exc), err=True)
        sys.exit(1)
    except StoreError as exc:
        _fail(as_json, str(exc), 2)
    _emit(as_json, {"loaded": True, "version": cat.version, "content_hash": cat.content_hash},
          f"catalog {cat.version!r} loaded and active ({cat.content_hash[:16]})")


@catalog.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def catalog_validate(file: str, as_json: bool) -> None:
    """Validate FILE; list every problem with its YAML path (exit 1), or print a summary."""
    cat = _load_or_exit(file, as_json)
    n_rates = sum(len(t.rates) for t in cat.tariffs.values())
    n_prefixes = sum(len(p) for p in cat.destinations.values())
    summary = {
        "valid": True, "file": file, "version": cat.version, "currency": cat.currency,
        "timezone": cat.timezone, "content_hash": cat.content_hash,
        "services": len(cat.services), "destination_groups": len(cat.destinations),
        "prefixes": n_prefixes, "bands": len(cat.bands), "tariffs": len(cat.tariffs),
        "rates": n_rates, "plans": len(cat.plans), "warnings": list(cat.warnings),
    }
    if as_json:
        click.echo(orjson.dumps(summary).decode())
        return
    click.echo(f"{file}: valid — version {cat.version!r}, {cat.currency}, {cat.timezone}")
    click.echo(f"  {len(cat.services)} services, {len(cat.destinations)} destination groups "
               f"({n_prefixes} prefixes), {len(cat.bands)} bands, {len(cat.tariffs)} tariffs "
               f"({n_rates} rates), {len(cat.plans)} plans")
    click.echo(f"  content hash {cat.content_hash[:16]}")
    for w in cat.warnings:
        click.echo(f"  warning: {w}")


@main.group()
def accounts() -> None:
    """Account administration."""


@accounts.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@service_options
def accounts_load(file: str, redis_url: str | None, data_dir: str | None, as_json: bool) -> None:
    """Load accounts from FILE (YAML list or JSONL), all or nothing.

    New accounts get their balance (ledgered as "open"); existing ones keep balance and
    sessions and take the file's plan, status and allow_negative.
    """
    from balances.accounts import AccountsFileError, read_accounts
    from balances.store import BalanceStore
    from catalog_cache.store import CatalogCache

    services, client = _connect(redis_url, data_dir)
    try:
        cache = CatalogCache(client, prefix=services.prefix)
        active = cache.refresh()
        cat = cache.current.catalog if active else None
        specs = read_accounts(file, cat)
        created, updated = BalanceStore(client, prefix=services.prefix).upsert_accounts(specs)
    except AccountsFileError as exc:
        if as_json:
            _fail(True, "accounts invalid", problems=[{"path": p.path, "reason": p.reason}
                                                      for p in exc.problems])
        click.echo(str(exc), err=True)
        sys.exit(1)
    except StoreError as exc:
        _fail(as_json, str(exc), 2)
    _emit(as_json, {"created": created, "updated": updated},
          f"{created} accounts created, {updated} updated")


@main.command("balance")
@click.argument("account")
@service_options
def balance(account: str, redis_url: str | None, data_dir: str | None, as_json: bool) -> None:
    """Show an account: balance, reserved money, allowances and open sessions."""
    from balances.store import BalanceStore
    from charging.decide import format_balance

    services, client = _connect(redis_url, data_dir)
    try:
        acct = BalanceStore(client, prefix=services.prefix).view(account)
    except StoreError as exc:
        _fail(as_json, str(exc), 2)
    if acct is None:
        _fail(as_json, f"no account {account!r}", 1, id=account)
    allowances = {svc: sum(b.units for b in bs) for svc, bs in acct.allowances.items()}
    from catalog_cache.store import CatalogCache

    cache = CatalogCache(client, prefix=services.prefix)
    if cache.refresh() and acct.plan in cache.current.catalog.plans:
        for a in cache.current.catalog.plans[acct.plan].allowances:
            if a.service not in acct.allowances:  # untouched yet: the plan's full units
                allowances[a.service] = allowances.get(a.service, 0) + a.units
    doc = {
        "id": acct.id, "plan": acct.plan, "status": acct.status,
        "allow_negative": acct.allow_negative, "balance": format_balance(acct.balance),
        "reserved": format_balance(acct.reserved),
        "available": format_balance(acct.balance - acct.reserved),
        "allowances": allowances,
        "allowances_reserved": {svc: sum(b.reserved for b in acct.allowances.get(svc, []))
                                for svc in allowances},
        "sessions": [{"session": s.id, "service": s.service, "tariff": s.tariff,
                      "rate": s.rate_id, "used": s.used, "granted": s.granted,
                      "reserved": format_balance(s.money_reserved),
                      "allowance_reserved": sum(s.allowance_reserved),
                      "last_seen_ms": s.last_seen_ms} for s in acct.sessions.values()],
    }
    if as_json:
        _emit(True, doc, "")
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


@main.command("topup", context_settings={"ignore_unknown_options": True})
@click.argument("account")
@click.argument("amount")
@click.option("--id", "topup_id", default=None, help="Idempotency key: the same id applies once.")
@service_options
def topup(account: str, amount: str, topup_id: str | None, redis_url: str | None,
          data_dir: str | None, as_json: bool) -> None:
    """Credit AMOUNT (a decimal, e.g. 10.00; negative to debit) to ACCOUNT, ledgered."""
    from balances.store import BalanceStore
    from charging.decide import format_balance
    from charging.money import MICROS, parse_decimal

    try:
        micros = parse_decimal(amount) * MICROS
    except ValueError as exc:
        _fail(as_json, f"AMOUNT: {exc}")
    if micros.denominator != 1 or micros == 0:
        _fail(as_json, f"AMOUNT {amount!r} must be non-zero with at most 6 decimals")
    services, client = _connect(redis_url, data_dir)
    try:
        status, bal = BalanceStore(client, prefix=services.prefix).topup(
            account, micros.numerator, topup_id=topup_id)
    except StoreError as exc:
        _fail(as_json, str(exc), 2)
    if status == "unknown":
        _fail(as_json, f"no account {account!r}", 1, id=account)
    if status == "limit":
        _fail(as_json, f"top-up of {amount} refused: the balance would leave the supported "
              "range, or a debit would take money reserved by open sessions", 1, id=account)
    doc = {"id": account, "applied": status == "ok", "balance": format_balance(bal or 0),
           "topup_id": topup_id}
    what = "applied" if status == "ok" else f"already applied earlier (id {topup_id!r})"
    _emit(as_json, doc, f"top-up {what}; balance {doc['balance']}")


@main.command("sweep")
@service_options
def sweep_cmd(redis_url: str | None, data_dir: str | None, as_json: bool) -> None:
    """Release the reservations of sessions silent for 2 × their validity."""
    import time

    from balances.store import BalanceStore
    from balances.sweeper import sweep

    services, client = _connect(redis_url, data_dir)
    try:
        n = sweep(BalanceStore(client, prefix=services.prefix), int(time.time() * 1000))
    except StoreError as exc:
        _fail(as_json, str(exc), 2)
    _emit(as_json, {"released": n}, f"{n} silent sessions released")


@main.command("stop")
@click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
              help="Directory of the embedded services (default .chargeflow/).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stop(data_dir: str | None, as_json: bool) -> None:
    """Stop the embedded services started for --data-dir."""
    from flows.broker import EmbeddedBroker

    services = Services.from_options(None, data_dir)
    stopped = {"redis": services.embedded.stop(),
               "broker": EmbeddedBroker(services.data_dir).stop()}
    what = [name for name, done in stopped.items() if done]
    _emit(as_json, {"stopped": stopped},
          f"stopped embedded {' and '.join(what)}" if what else "no embedded service was running")


@main.command("run")
@click.option("--kafka", "kafka", default=None, metavar="HOST:PORT",
              help="Kafka bootstrap servers (default: an embedded broker in --data-dir).")
@click.option("--input", "input_file", default=None, metavar="FILE|-",
              help="Decide the requests of a JSONL file (or stdin) with no broker, then exit.")
@click.option("--output", "output_dir", default=None, type=click.Path(file_okay=False),
              help="With --input: directory for decisions/charges/rejects.jsonl.")
@click.option("--workers", default=1, show_default=True,
              help="Bytewax worker threads (per process).")
@click.option("--process-id", "-i", type=int, default=None,
              help="This process's index in a multi-process cluster (with --addresses).")
@click.option("--addresses", "-a", default=None,
              help="HOST:PORT of every process of the cluster, separated by ';'.")
@click.option("--recovery", "recovery_dir", default=None, type=click.Path(file_okay=False),
              help="Bytewax recovery directory: resume from the last snapshot after a crash.")
@click.option("--snapshot-s", default=2.0, show_default=True,
              help="Seconds between recovery snapshots (and output flushes).")
@click.option("--partitions", default=4, show_default=True,
              help="Partitions of the topics this command creates when missing.")
@click.option("--format", "fmt", type=click.Choice(["json", "msgpack"]), default="json",
              show_default=True, help="Encoding of request messages.")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus metrics on HOST:PORT/metrics.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics endpoint listens on.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines as text or one JSON object each.")
@click.option("--redis", "redis_url", default=None,
              help="Redis URL (default: $CHARGEFLOW_REDIS_URL, else embedded).")
@click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
              help="Directory of the embedded services (default .chargeflow/).")
def run(kafka: str | None, input_file: str | None, output_dir: str | None, workers: int,
        process_id: int | None, addresses: str | None, recovery_dir: str | None,
        snapshot_s: float, partitions: int, fmt: str,
        metrics_port: int | None, metrics_host: str, log_format: str, redis_url: str | None,
        data_dir: str | None) -> None:
    """Run the charging engine: requests from Kafka (or a JSONL file) to decisions."""
    from catalog_cache.store import CatalogCache
    from flows.observe import EngineMetrics, serve, setup_logging
    from flows.runtime import EngineConfig, make_engine, run_jsonl

    setup_logging(log_format)
    metrics = EngineMetrics()
    if metrics_port is not None:
        serve(metrics_port, metrics_host)

    if (input_file is None) != (output_dir is None):
        _fail(False, "--input and --output go together (a JSONL run writes into a directory)")
    services, client = _connect(redis_url, data_dir)
    if CatalogCache(client, prefix=services.prefix).refresh() is None:
        _fail(False, "no catalog is loaded: run `chargeflow catalog load FILE` first")
    url = services.redis_url or services.embedded.url
    config = EngineConfig(redis_url=url, prefix=services.prefix, fmt=fmt)
    if input_file is not None:
        try:
            stream = sys.stdin.buffer if input_file == "-" else open(input_file, "rb")  # noqa: SIM115
        except OSError as exc:
            _fail(False, f"cannot read --input {input_file}: {exc.strerror}")
        try:
            run_jsonl(make_engine(config, metrics), stream, Path(output_dir))
        except OSError as exc:
            _fail(False, f"cannot read or write: {exc}")
        finally:
            stream.close()
        return
    if (process_id is None) != (addresses is None):
        _fail(False, "--process-id and --addresses go together (a multi-process cluster)")
    cluster = (process_id, addresses.split(";")) if addresses else None
    _run_kafka(config, services, kafka, workers, recovery_dir, snapshot_s, partitions, metrics,
               cluster)


def _run_kafka(config, services: Services, kafka: str | None, workers: int,
               recovery_dir: str | None, snapshot_s: float, partitions: int, metrics,
               cluster: tuple[int, list[str]] | None) -> None:
    from datetime import timedelta
    from functools import partial

    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.run import cli_main

    from charging.errors import BrokerError
    from flows.broker import EmbeddedBroker, ensure_topics
    from flows.dataflow import Topics, kafka_flow
    from flows.runtime import make_engine

    topics = Topics()
    try:
        brokers = kafka or EmbeddedBroker(services.data_dir).start()
        ensure_topics(brokers, {topics.requests: partitions, topics.decisions: partitions,
                                topics.charges: partitions, topics.rejects: 1})
    except BrokerError as exc:
        _fail(False, str(exc), 2)
    recovery = None
    if recovery_dir is not None:
        rdir = Path(recovery_dir)
        if not any(rdir.glob("part-*.sqlite3")):
            rdir.mkdir(parents=True, exist_ok=True)
            init_db_dir(rdir, max(1, workers * (len(cluster[1]) if cluster else 1)))
        recovery = RecoveryConfig(str(rdir))
    log = logging.getLogger("chargeflow.engine")
    log.info("starting: kafka %s, redis %s, %d worker(s)%s", brokers, config.redis_url, workers,
             f", recovery {recovery_dir}" if recovery_dir else "")
    stop = threading.Event()
    flow = kafka_flow(brokers, partial(make_engine, config, metrics), topics, stop=stop)

    def drain(signum, frame):  # SIGTERM / SIGINT: stop reading, finish what was read, flush
        log.info("stopping: finishing the batches read, flushing outputs")
        stop.set()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    cli_main(flow, workers_per_process=workers, epoch_interval=timedelta(seconds=snapshot_s),
             recovery_config=recovery, process_id=cluster[0] if cluster else None,
             addresses=cluster[1] if cluster else None)
    log.info("stopped")


@main.command("rate")
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

    cat = _load_or_exit(catalog_file, False)
    if plan is not None and plan not in cat.plans:
        click.echo(f"--plan {plan!r} is not in the catalog (plans: {', '.join(cat.plans)})",
                   err=True)
        sys.exit(1)
    compiled = compile_catalog(cat)
    out = sys.stdout
    for chunk in _chunks(infile, BATCH):
        _rate_chunk(compiled, chunk, plan, out)
    out.flush()


def _chunks(stream: Iterable[bytes], size: int) -> Iterator[list[tuple[int, bytes]]]:
    numbered = ((n, line) for n, line in enumerate(stream, 1) if line.strip())
    while chunk := list(islice(numbered, size)):
        yield chunk


def _rate_chunk(compiled, chunk: list[tuple[int, bytes]], plan: str | None, out: TextIO) -> None:
    from charging.rating import rate_requests
    from charging.requests import decode, parse

    rows: list[dict | None] = []
    valid = []
    for lineno, line in chunk:
        try:
            valid.append(parse(decode(line.rstrip(b"\r\n")), rating_only=True))
            rows.append(None)
        except RequestError as exc:
            rows.append({"id": exc.request_id, "error": exc.code,
                         "detail": f"line {lineno}: {exc.detail}"})
    rated = iter(rate_requests(compiled, valid, plan))
    lines = [orjson.dumps(row if row is not None else next(rated).as_json()) for row in rows]
    out.write(b"\n".join(lines).decode() + "\n")


@main.group("bench")
def bench_group() -> None:
    """Benchmarks (figures are reported, never asserted)."""


@bench_group.command("e2e", context_settings={"ignore_unknown_options": True,
                                              "allow_extra_args": True})
@click.pass_context
def bench_e2e(ctx: click.Context) -> None:
    """Engine and echo floor through a real broker and Redis (see bench/e2e.py --help)."""
    from bench.e2e import main as e2e_main

    e2e_main(ctx.args)


@main.command("demo")
@click.option("--duration", default=30.0, show_default=True, help="Seconds of load.")
@click.option("--rate", default=2000.0, show_default=True, help="Requests per second offered.")
@click.option("--accounts", "n_accounts", default=10_000, show_default=True)
@click.option("--catalog", "catalog_file", default=None, type=click.Path(dir_okay=False),
              help="Catalog (default: the sample catalog).")
@click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
              help="Directory of the embedded services (default .chargeflow/).")
@click.option("--rating-only", is_flag=True,
              help="Only rate generated usage with the kernels (no services, no engine).")
@click.option("--requests", "n", default=1_000_000, show_default=True,
              help="With --rating-only: how many usages to rate.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def demo(duration: float, rate: float, n_accounts: int, catalog_file: str | None,
         data_dir: str | None, rating_only: bool, n: int, as_json: bool) -> None:
    """The engine live on embedded Redis and broker: load, progress, summary."""
    path = catalog_file or str(sample_catalog_path())
    cat = _load_or_exit(path, as_json)
    if rating_only:
        from flows.demo import run_rating_demo

        run_rating_demo(cat, n, 7, as_json)
        return
    from flows.live_demo import run_engine_demo

    try:
        run_engine_demo(Path(path), Path(data_dir or ".chargeflow"), duration, rate,
                        n_accounts, as_json)
    except (StoreError, RuntimeError) as exc:
        _fail(as_json, str(exc), 2)
    except BrokerError as exc:
        _fail(as_json, str(exc), 2)


if __name__ == "__main__":
    main()
