"""Offline rating benchmark: `chargeflow rate` end to end, JSONL in, JSONL out.

    python -m bench.rate [--lines N] [--repeats K] [--bad F] [--commits A B] [--json] [--out DIR]

Writes N request lines (default 500,000) against the sample catalog: voice, data and SMS
usage from ``flows.workload.generate``, RFC 3339 times with an offset over one week, E.164
destinations, a leading '+' on half of them. Runs ``chargeflow rate --catalog ... FILE >
out`` as a fresh process K times, so start-up (imports, catalog compile, kernel load) is
included, and over the file's first 10 lines, the start-up alone. ``--bad`` makes that
fraction of lines malformed or invalid. With ``--commits`` it runs each commit's checkout
(a git worktree made for the run) alternately, and says whether their outputs are
byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from charging.catalog import parse_catalog
from charging.compiler import compile_catalog
from flows.cli import sample_catalog_path
from flows.workload import generate

ROOT = Path(__file__).resolve().parent.parent
BERLIN_WINTER = timedelta(hours=1)
BAD_LINES = (b'{"id":"bad-json", "service": "voice"', b'{"id":"neg","service":"voice",'
             b'"ts":1795856400000,"used":-1}', b'not json at all',
             b'{"id":"fax","service":"fax","ts":1795856400000,"used":3}')


def write_workload(path: Path, n: int, bad: float, seed: int = 7) -> None:
    """``n`` JSONL request lines for the sample catalog, ``bad`` of them rejected ones."""
    compiled = compile_catalog(parse_catalog(sample_catalog_path().read_text()))
    rng = np.random.default_rng(seed)
    arrays = generate(compiled, n, rng)
    names = {i: s for s, i in compiled.service_index.items()}
    plus = rng.random(n) < 0.5
    broken = rng.random(n) < bad
    with path.open("wb") as f:
        for i in range(n):
            if broken[i]:
                f.write(BAD_LINES[i % len(BAD_LINES)] + b"\n")
                continue
            local = datetime.fromtimestamp(arrays.ts_ms[i] / 1000, UTC) + BERLIN_WINTER
            req = {"id": f"r{i}", "service": names[int(arrays.service[i])],
                   "ts": local.strftime("%Y-%m-%dT%H:%M:%S") + "+01:00",
                   "used": int(arrays.used[i])}
            if req["service"] == "voice":
                digits = "".join(map(str, arrays.digits[i, : arrays.ndigits[i]]))
                req["destination"] = ("+" if plus[i] else "") + digits
            f.write(orjson.dumps(req) + b"\n")


def run_once(checkout: Path, infile: Path, outfile: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one ``chargeflow rate`` process over
    ``infile``; CPU time says less about the machine's other load than wall time."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cmd = [sys.executable, "-m", "flows.cli", "rate", "--catalog",
           str(checkout / "charging/samples/catalog.yaml"), str(infile)]
    with outfile.open("wb") as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=checkout, env=env, stdout=out, check=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def worktree(commit: str, base: Path) -> Path:
    path = base / commit
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit],
                   check=True, capture_output=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bad", type=float, default=0.0)
    ap.add_argument("--commits", nargs="*", default=None,
                    help="commits to compare (each in a temporary git worktree)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=None, help="also write the figures as JSON to this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        infile, few = base / "in.jsonl", base / "few.jsonl"
        write_workload(infile, args.lines, args.bad)
        with infile.open("rb") as f:  # start-up: imports, catalog, every kernel loaded
            few.write_bytes(b"".join(f.readline() for _ in range(10)))
        checkouts = {"this": ROOT} if not args.commits else {
            c: worktree(c, base / "wt") for c in args.commits}
        try:
            runs: dict[str, list[float]] = {c: [] for c in checkouts}
            cpus: dict[str, list[float]] = {c: [] for c in checkouts}
            starts: dict[str, list[float]] = {c: [] for c in checkouts}
            digests: dict[str, str] = {}
            for path in checkouts.values():  # fill each checkout's numba cache
                run_once(path, few, base / "out")
            for _ in range(args.repeats):  # alternating: commit A, B, A, B ...
                for name, path in checkouts.items():
                    out = base / f"out-{len(digests)}"
                    wall, cpu = run_once(path, infile, out)
                    runs[name].append(wall)
                    cpus[name].append(cpu)
                    starts[name].append(run_once(path, few, base / "out")[0])
                    digests[name] = digest(out)
                    out.unlink()
        finally:
            if args.commits:
                for path in checkouts.values():
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(path)], capture_output=True)
    result = {"machine": f"{cpu_model()}, "
                         f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
              "lines": args.lines, "bad": args.bad, "repeats": args.repeats,
              "checkouts": {name: {"seconds": [round(s, 3) for s in runs[name]],
                                   "median_s": round(statistics.median(runs[name]), 3),
                                   "lines_per_s": round(args.lines /
                                                        statistics.median(runs[name])),
                                   "cpu_s": [round(s, 3) for s in cpus[name]],
                                   "cpu_median_s": round(statistics.median(cpus[name]), 3),
                                   "startup_median_s": round(statistics.median(starts[name]), 3),
                                   "output_sha256": digests[name]}
                            for name in checkouts}}
    result["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if args.out:
        name = f"rate-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
        (Path(args.out) / name).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    print(f"{args.lines:,} lines ({args.bad:.1%} bad), {result['machine']}")
    for name, r in result["checkouts"].items():
        print(f"{name:>12}: {r['median_s']:.2f} s median of {args.repeats} {r['seconds']} = "
              f"{r['lines_per_s']:,} lines/s; CPU {r['cpu_median_s']:.2f} s; "
              f"start-up (10 lines) {r['startup_median_s']:.2f} s; "
              f"output {r['output_sha256']}")


if __name__ == "__main__":
    main()
