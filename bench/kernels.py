"""Kernel benchmark: rated requests per second, kernels vs the exact reference.

    python -m bench.kernels [--seconds S] [--repeats K] [--json]

On the realistic catalog of ``bench.catalogs`` (1,050 prefixes in 50 groups, 3 bands,
3-step tariffs), single thread, batches of 1,024: the numba batch kernel's requests/s
(median of K timed runs), the reference rater's requests/s on a sample, their ratio, and
the first-call compile time of the kernels with an empty numba cache and with a warm one
(each measured in a fresh interpreter).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from bench.catalogs import realistic_catalog
from charging import kernels, reference
from charging.catalog import parse_catalog
from charging.compiler import compile_catalog
from charging.errors import RatingError
from flows.workload import generate

BATCH = 1024

_FIRST_CALL = """
import time, numpy as np
t0 = time.perf_counter()
from bench.catalogs import realistic_catalog
from flows.workload import generate
from charging import kernels
from charging.catalog import parse_catalog
from charging.compiler import compile_catalog
cc = compile_catalog(parse_catalog(realistic_catalog()))
b = generate(cc, 16, np.random.default_rng(0))
t1 = time.perf_counter()
kernels.rate_batch(cc.tables, *b.args())
t2 = time.perf_counter()
print(t2 - t1)
"""


def first_call_seconds(cache_dir: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def kernel_rps(cc, batches, seconds: float) -> float:
    """Rated requests per second over repeated passes of the batches for ``seconds``."""
    T = cc.tables
    n = 0
    t0 = time.perf_counter()
    while True:
        for b in batches:
            kernels.rate_batch(T, *b.args())
        n += sum(len(b) for b in batches)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


def reference_rps(cat, cc, batch, limit: int = 3000) -> float:
    """The reference rater over the first ``limit`` requests of a batch."""
    plan = cat.first_plan()
    services = list(cc.service_index)
    rows = []
    for i in range(min(limit, len(batch))):
        digits = "".join(str(d) for d in batch.digits[i, : batch.ndigits[i]])
        rows.append((services[batch.service[i]], int(batch.ts_ms[i]), digits,
                     int(batch.used[i])))
    t0 = time.perf_counter()
    for service, ts, digits, used in rows:
        try:
            reference.rate_usage(cat, plan, service, ts, digits, used)
        except RatingError:
            pass
    return len(rows) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per timed run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=None, help="also write the figures as JSON into DIR")
    args = ap.parse_args(argv)

    cat = parse_catalog(realistic_catalog())
    cc = compile_catalog(cat)
    rng = np.random.default_rng(42)
    batches = [generate(cc, BATCH, rng) for _ in range(64)]
    kernels.rate_batch(cc.tables, *batches[0].args())  # compile / load from cache
    runs = [kernel_rps(cc, batches, args.seconds) for _ in range(args.repeats)]
    ref = reference_rps(cat, cc, batches[1])
    with tempfile.TemporaryDirectory() as cold:
        compile_cold = first_call_seconds(cold)
        compile_warm = first_call_seconds(cold)
    result = {
        "catalog": {"prefixes": sum(len(p) for p in cat.destinations.values()),
                    "groups": len(cat.destinations), "bands": len(cat.bands),
                    "rates": sum(len(t.rates) for t in cat.tariffs.values())},
        "batch": BATCH,
        "kernel_rps_median": round(statistics.median(runs)),
        "kernel_rps_runs": [round(r) for r in runs],
        "reference_rps": round(ref),
        "ratio": round(statistics.median(runs) / ref, 1),
        "first_call_s_cold_cache": round(compile_cold, 2),
        "first_call_s_warm_cache": round(compile_warm, 3),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.machine()},
    }
    if args.out:
        from bench.harness import save_result

        save_result(Path(args.out), "kernels", result)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        c = result["catalog"]
        print(f"catalog: {c['prefixes']} prefixes in {c['groups']} groups, {c['bands']} bands, "
              f"{c['rates']} rates; batches of {BATCH}, 1 thread")
        print(f"kernel:    {result['kernel_rps_median']:>12,} rated/s (median of {args.repeats}: "
              f"{', '.join(f'{r:,}' for r in result['kernel_rps_runs'])})")
        print(f"reference: {result['reference_rps']:>12,} rated/s")
        print(f"ratio:     {result['ratio']:>12,}x")
        print(f"first call: {result['first_call_s_cold_cache']} s with an empty numba cache, "
              f"{result['first_call_s_warm_cache']} s with a warm one")
    return result


if __name__ == "__main__":
    main()
