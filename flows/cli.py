"""The ``chargeflow`` command line (CONTRACT §5).

Exit codes: 0 success, 1 the input or request was wrong (the message says what and where),
2 a service could not be reached. Every command that prints a result takes ``--json``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import TextIO

import click
import orjson

from charging.catalog import Catalog, load_catalog
from charging.errors import CatalogError, RequestError

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chargeflow")
def main() -> None:
    """chargeflow: a real-time online charging engine (rating, balances, quota grants)."""


@main.group()
def catalog() -> None:
    """Validate and load product catalogs."""


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


@main.command("demo")
@click.option("--requests", "n", default=1_000_000, show_default=True,
              help="How many generated usages to rate.")
@click.option("--catalog", "catalog_file", default=None, type=click.Path(dir_okay=False),
              help="Catalog (default: the sample catalog).")
@click.option("--seed", default=7, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def demo(n: int, catalog_file: str | None, seed: int, as_json: bool) -> None:
    """Rate the contract's worked examples and a generated day of traffic with the kernels."""
    from flows.demo import run_rating_demo

    path = catalog_file or str(sample_catalog_path())
    run_rating_demo(_load_or_exit(path, as_json), n, seed, as_json)


if __name__ == "__main__":
    main()
