"""bench/locustfile.py in a tiny headless run on embedded services: decisions come back, locust
produces its figures, and the run leaves no engine, broker or Redis behind. Speed is never
asserted."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_tiny_headless_run(tmp_path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CHARGEFLOW_REDIS_URL", "CHARGEFLOW_DATA_DIR")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(REPO / "bench" / "locustfile.py"),
         "--headless", "-u", "5", "-r", "5", "-t", "8s", "--csv", str(tmp_path / "l"),
         "--only-summary", "--data-dir", str(data), "--accounts", "200"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # the embedded services' pids, read while they run (their pid files go when they stop)
    pids: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while proc.poll() is None and len(pids) < 2 and time.monotonic() < deadline:
        for name in ("redis.pid", "broker.pid"):
            try:
                pids[name] = int((data / name).read_text().strip())
            except (OSError, ValueError):
                pass
        time.sleep(0.05)
    try:
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    log = out.decode(errors="replace")
    assert proc.returncode == 0, log[-6000:]  # 1 would mean failures: missing decisions

    with open(tmp_path / "l_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0, log[-4000:]
    assert int(total["Failure Count"]) == 0, log[-4000:]
    kinds = {r["Type"] for r in rows if r["Name"] != "Aggregated" and int(r["Request Count"])}
    assert len(kinds) >= 2, rows
    assert "decisions by result: " in log

    engine = re.search(r"engine started \(pid (\d+)\)", log)
    assert engine, log[-4000:]
    pids["engine"] = int(engine.group(1))
    assert set(pids) == {"redis.pid", "broker.pid", "engine"}, (pids, log[-4000:])
    left = {name: pid for name, pid in pids.items() if _alive(pid)}
    assert not left, f"still running after the run: {left}"
