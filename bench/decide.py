"""Decision benchmark: ``decide_batch`` vs ``decide_columnar`` in process, no Redis.

    python -m bench.decide [--accounts N] [--batches K] [--batch 512] [--repeats 5]

The same batches of ``bench.store``'s mix (70 % update, 15 % initial, 10 % terminate, 5 %
event; voice and sms on PREPAID_S, balances of 1,000.00) decided by each engine from the
same account state, with the garbage collector tuned as in an engine
(``flows.runtime.tune_gc``): a warm-up batch per engine first (numba compiles, or loads its cache,
outside the timing; sessions open), then K batches timed, per repeat from a fresh copy of
the state; the figure is the median of the repeats, in microseconds per request. The
columnar path's time is also split into its phases (the coverage checks and rows, the
arrays and rate selection, the kernel, the outcome objects, the write-back), timed
separately on the same batches.

Measured 2026-12-04 (2 vCPUs, CHARGEFLOW_PURE=1, commit 4e468de): decide_batch 8.2-10.2
us/request, decide_columnar 6.0-8.1 (1.25-1.39x); of the columnar time the kernel is
~0.45 us/request, the rest is Python: the coverage checks and rows (2.5 at 1,000 accounts,
3.9-4.1 at 100,000, where nearly every request is an account of its own), the outcome
objects (1.4-1.7), arrays and rate selection (~1.0), the write-back (0.6-1.2). The rules
were never the cost; carrying Python objects in and out is. Both compiled (make native,
``charging/columnar.py`` among the compiled modules, commit 4e468de plus its type fixes,
100,000 accounts, two runs while a CI run shared the machine): decide_batch 4.99 and 5.13
us/request, decide_columnar 5.44 and 5.20 (0.92x, 0.99x): rows 2.4, arrays and rates 1.0-1.2,
kernel 0.5, outcomes 0.8-0.9, write-back 0.8.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from bench.store import Workload
from charging.catalog import load_catalog
from charging.columnar import _Columns, decide_columnar
from charging.compiler import compile_catalog
from charging.decide import FixedCatalogs, decide_batch
from charging.state import Account
from flows.cli import sample_catalog_path
from flows.runtime import tune_gc

NOW = 1_795_510_800_000


def _state(accounts: int) -> dict[str, Account | None]:
    return {f"a{k}": Account(f"a{k}", "PREPAID_S", 1_000_000_000) for k in range(accounts)}


def _time(engines: dict, batches, state, catalogs, repeats: int) -> dict[str, list[float]]:
    """Seconds per repeat for each engine to decide all batches, each from a copy of
    ``state``; the engines take turns, so that a slower moment of the machine is shared."""
    runs: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            working = copy.deepcopy(state)
            gc.collect()
            spent = 0.0
            for reqs in batches:
                t0 = time.perf_counter()
                engine(reqs, working, catalogs, NOW)
                spent += time.perf_counter() - t0
            runs[name].append(spent)
    return runs


def _phases(batches, state, catalogs) -> dict[str, float]:
    """Seconds per phase of ``decide_columnar`` over the batches (covered accounts only:
    the mix has none that are not, once warm)."""
    working = copy.deepcopy(state)
    gc.collect()
    spent = dict.fromkeys(("rows", "arrays+rates", "kernel", "outcomes", "write_back"), 0.0)
    for reqs in batches:
        t0 = time.perf_counter()
        cols = _Columns(catalogs.current, NOW)
        by_account: dict[str, list[int]] = {}
        for i, req in enumerate(reqs):
            by_account.setdefault(req.account, []).append(i)
        for name, idx in by_account.items():
            if not cols.add(name, working.get(name), [reqs[i] for i in idx], idx, {}):
                raise SystemExit(f"account {name} is not covered: the phases need all")
        t1 = time.perf_counter()
        rows, arrays = cols.arrays(reqs)
        t2 = time.perf_counter()
        out = cols.kernel(arrays)
        t3 = time.perf_counter()
        cols.outcomes(rows, arrays, out, [None] * len(reqs))
        t4 = time.perf_counter()
        cols.write_back(rows, arrays)
        t5 = time.perf_counter()
        for name, t in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            spent[name] += t
    return spent


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per repeat")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    catalogs = FixedCatalogs(compile_catalog(load_catalog(sample_catalog_path())))
    state = _state(args.accounts)
    work = Workload(args.accounts)
    # warm-up: compile (or load) every kernel, and open sessions as a running engine has
    for _ in range(4):
        reqs = [work.next() for _ in range(args.batch)]
        decide_columnar(reqs, copy.deepcopy(state), catalogs, NOW)
        decide_batch(reqs, state, catalogs, NOW)
    tune_gc()  # as bench.store and a running engine
    batches = [[work.next() for _ in range(args.batch)] for _ in range(args.batches)]
    stats: dict[str, int] = {}
    decide_columnar(batches[0], copy.deepcopy(state), catalogs, NOW, stats=stats)
    n = args.batches * args.batch
    runs = _time({"decide_batch": decide_batch, "decide_columnar": decide_columnar}, batches,
                 state, catalogs, args.repeats)
    per = {name: statistics.median(r) / n * 1e6 for name, r in runs.items()}
    phases = _phases(batches, state, catalogs)
    report = {"us_per_request": {k: round(v, 2) for k, v in per.items()},
              "ratio": round(per["decide_batch"] / per["decide_columnar"], 2),
              "fast_share_first_batch": round(stats["fast"] / args.batch, 3),
              "columnar_phases_us_per_request": {k: round(v / n * 1e6, 2)
                                                 for k, v in phases.items()}}
    print(f"{args.batches} batches of {args.batch} requests over {args.accounts} accounts, "
          f"median of {args.repeats}")
    print(f"  decide_batch     {per['decide_batch']:8.2f} us/request")
    print(f"  decide_columnar  {per['decide_columnar']:8.2f} us/request"
          f"   ({report['ratio']}x)")
    print("  columnar phases: " + ", ".join(
        f"{k} {v}" for k, v in report["columnar_phases_us_per_request"].items()) + " us/req")
    return report


if __name__ == "__main__":
    main()
