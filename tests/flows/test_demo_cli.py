"""`chargeflow demo --duration 5`: the engine on embedded services, and a summary that
reconciles (CONTRACT §5)."""

from __future__ import annotations

import subprocess
import sys

import orjson


def test_demo_runs_and_its_summary_reconciles(tmp_path):
    data = tmp_path / "data"
    try:
        res = subprocess.run(
            [sys.executable, "-m", "flows.cli", "demo", "--duration", "5", "--rate", "300",
             "--accounts", "300", "--data-dir", str(data), "--json"],
            capture_output=True, text=True, timeout=240, check=False)
    finally:
        subprocess.run([sys.executable, "-m", "flows.cli", "stop", "--data-dir", str(data)],
                       capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = orjson.loads(res.stdout.strip().splitlines()[-1])
    assert summary["sent"] >= 1000  # 5 s at 300/s, less what the pacing rounds off
    assert summary["decided"] == summary["sent"]
    assert sum(summary["results"].values()) == summary["decided"]
    assert summary["results"].get("SUCCESS", 0) > summary["decided"] // 2
    assert summary["ledger_mismatches"] == 0
    assert summary["revenue_matches_ledger"] is True
    assert summary["revenue"] != "0.000000"
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]
