"""``chargeflow bench api`` end to end in a tiny configuration: locust's reads and top-ups
answered (no failures), the engine's requests answered alone and beside the API load, and
the figures reported — never their speed."""

from __future__ import annotations

import pytest

from tests.bench.test_bench_commands import _no_leftovers, _run


@pytest.mark.parametrize("via", ["kafka", "gy"])
def test_api_bench_reports_reads_topups_and_the_engine_beside_them(via):
    r = _run(["api", "--engine-via", via, "--engine-rate", "50", "--read-rate", "40",
              "--topup-rate", "4", "--seconds", "3", "--warm", "1", "--accounts", "20",
              "--readers", "4", "--payers", "2", "--json"], 600)
    assert r["engine_via"] == via and r["api_server"] == "hypercorn" and r["commit"]
    for phase in ("api", "engine+api"):
        for name in ("read", "topup"):
            s = r["api"][phase][name]
            assert s["requests"] > 0 and s["failures"] == 0, (phase, name, s)
            assert s["rps"] > 0 and 0 < s["p50_ms"] <= s["p99_ms"], (phase, name, s)
    labels = [p["label"] for p in r["phases"]]
    assert labels == ["engine 50/s", "engine 50/s + api"]
    for p in r["phases"]:  # every engine request of both phases answered
        assert p["complete"] and p["received"] == p["sent"] >= 149, p
    assert r["engine_p99_ratio"] == round(r["engine_p99_with_api_ms"] / r["engine_p99_ms"], 2)
    if via == "gy":  # every CCR answered 2001 (warm-up included)
        assert set(r["gy_answers"]) == {"2001"}
    _no_leftovers("cf-bench-api-")
