"""``chargeflow demo --rating-only``: rating with the kernels, on show, with no services.

It rates the contract's worked examples next to the exact reference, then a generated week
of traffic in batches of 1,024 with a live progress bar, and closes with a summary: rated
requests per second, results, and revenue by tariff and rate.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from charging import kernels, reference
from charging.catalog import Catalog
from charging.compiler import compile_catalog
from charging.errors import RatingError
from charging.money import MICROS, format_micros
from charging.rating import rate_requests
from charging.requests import parse
from flows.workload import generate

BATCH = 1024
_STATUS = {kernels.OK: "SUCCESS", kernels.NO_RATE: "RATING_FAILED",
           kernels.OVER_LIMIT: "RATING_FAILED (over limit)",
           kernels.NOT_IN_PLAN: "END_USER_SERVICE_DENIED"}

#: CONTRACT §4.1 worked examples: (label, request, expected cost).
WORKED = [
    ("voice 4917… Tue 10:00 u=30", {"service": "voice", "destination": "4917612345",
                                    "ts": "2026-11-24T10:00:00+01:00", "used": 30}, "0.1500"),
    ("same, u=61", {"service": "voice", "destination": "4917612345",
                    "ts": "2026-11-24T10:00:00+01:00", "used": 61}, "0.1515"),
    ("same, u=0", {"service": "voice", "destination": "4917612345",
                   "ts": "2026-11-24T10:00:00+01:00", "used": 0}, "0.0000"),
    ("voice 4917… Sat 10:00 u=61", {"service": "voice", "destination": "4917612345",
                                    "ts": "2026-11-28T10:00:00+01:00", "used": 61}, "0.1220"),
    ("voice 4930… Tue 10:00 u=1", {"service": "voice", "destination": "4930123",
                                   "ts": "2026-11-24T10:00:00+01:00", "used": 1}, "0.2000"),
    ("data u=1500", {"service": "data", "ts": "2026-11-24T10:00:00+01:00", "used": 1500},
     "0.0001"),
    ("voice peak u=100000 (capped)", {"service": "voice", "destination": "4917612345",
                                      "ts": "2026-11-24T10:00:00+01:00", "used": 100000},
     "5.0000"),
]


def run_rating_demo(cat: Catalog, n: int, seed: int, as_json: bool) -> None:
    console = Console(stderr=as_json)
    compiled = compile_catalog(cat)
    summary: dict = {"catalog": cat.version, "requests": n}
    if "PREPAID_S" in cat.plans:
        summary["worked_examples"] = _worked_examples(cat, compiled, console, as_json)

    rng = np.random.default_rng(seed)
    kernels.rate_batch(compiled.tables, *generate(compiled, 8, rng).args())  # compile first
    revenue = np.zeros(len(compiled.rate_ids), dtype=np.int64)
    results: Counter[str] = Counter()
    kernel_s = 0.0
    with Progress(TextColumn("rating"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                  console=console, disable=as_json) as progress:
        task = progress.add_task("rate", total=n, rate="")
        done = 0
        while done < n:
            batch = generate(compiled, min(BATCH, n - done), rng)
            t0 = time.perf_counter()
            status, rate, cost, _ = kernels.rate_batch(compiled.tables, *batch.args())
            kernel_s += time.perf_counter() - t0
            ok = status == kernels.OK
            np.add.at(revenue, rate[ok], cost[ok])  # int64 micros, exact
            for code, count in zip(*np.unique(status, return_counts=True)):
                results[_STATUS[int(code)]] += int(count)
            done += len(batch)
            progress.update(task, advance=len(batch),
                            rate=f"{done / kernel_s:,.0f} rated/s in the kernel")
    summary["kernel_rated_per_s"] = round(n / kernel_s) if kernel_s else None
    summary["results"] = dict(results)
    summary["revenue"] = {
        f"{compiled.tariff_names[compiled.rate_tariff[r]]}/{compiled.rate_ids[r]}":
            format_micros(int(v)) for r, v in enumerate(revenue) if v}
    summary["revenue_total"] = format_micros(int(revenue.sum()))
    summary["currency"] = cat.currency
    if as_json:
        print(orjson.dumps(summary).decode())
        return
    table = Table(title=f"{n:,} generated usages, catalog {cat.version}")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("kernel throughput", f"{summary['kernel_rated_per_s']:,} rated/s (1 thread)")
    for code, count in sorted(results.items()):
        table.add_row(code, f"{count:,}")
    for key, value in summary["revenue"].items():
        table.add_row(f"revenue {key}", f"{value} {cat.currency}")
    table.add_row("revenue total", f"{summary['revenue_total']} {cat.currency}")
    console.print(table)


def _worked_examples(cat: Catalog, compiled, console: Console, as_json: bool) -> list[dict]:
    reqs = [parse({"id": str(i), **req}, rating_only=True)
            for i, (_, req, _) in enumerate(WORKED)]
    rated = rate_requests(compiled, reqs, "PREPAID_S")
    table = Table(title="CONTRACT §4.1 worked examples: numba kernels vs exact reference")
    for col in ("request", "rate", "kernel", "reference", "contract", ""):
        table.add_column(col)
    rows = []
    for (label, _, expected), req, out in zip(WORKED, reqs, rated):
        try:
            ref = reference.rate_usage(cat, "PREPAID_S", req.service, req.ts_ms,
                                       req.destination, req.used)
            ref_text = format_micros(int(ref.cost * MICROS), 4)
            exact = str(ref.cost) if ref.cost.denominator != 1 else str(int(ref.cost))
        except RatingError as exc:
            ref_text, exact = exc.code, ""
        got = out.as_json().get("cost", out.error)
        ok = got == ref_text == expected
        table.add_row(label, out.rate or "-", got, f"{ref_text} (= {exact})", expected,
                      "✓" if ok else "✗")
        rows.append({"request": label, "kernel": got, "reference": ref_text,
                     "expected": expected, "ok": ok})
    if not as_json:
        console.print(table)
    return rows

