"""The offline-rating benchmark measures what it says: its workload takes the columnar path,
and a tiny run produces its figures and the output's hash (never asserting speed)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from bench.rate import write_workload
from charging.catalog import parse_catalog
from charging.compiler import compile_catalog
from charging.offline import OfflineRater, rate_lines
from flows.cli import sample_catalog_path


def test_the_workload_takes_the_fast_path_and_rates_as_the_reference(tmp_path):
    path = tmp_path / "in.jsonl"
    write_workload(path, 3000, 0.0)
    compiled = compile_catalog(parse_catalog(sample_catalog_path().read_text()))
    rater = OfflineRater(compiled, None)
    got = rater.rate_block(path.read_bytes(), 1)
    lines = path.read_bytes().split(b"\n")
    want = "".join(line + "\n" for line in rate_lines(compiled, list(enumerate(lines, 1)), None))
    assert got == want.encode()
    assert (rater.fast_lines, rater.slow_lines) == (3000, 0)
    assert b'"rate":"mobile_peak"' in got and b'"tariff":"DATA_STD"' in got


def test_a_tiny_run_reports_its_figures(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.rate", "--lines", "500", "--repeats",
                           "1", "--bad", "0.05", "--json", "--out", str(tmp_path)],
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    result = orjson.loads(proc.stdout)
    run = result["checkouts"]["this"]
    assert result["lines"] == 500 and run["lines_per_s"] > 0 and len(run["seconds"]) == 1
    assert len(run["output_sha256"]) == 16
    assert [p.name.startswith("rate-") for p in tmp_path.iterdir()] == [True]
