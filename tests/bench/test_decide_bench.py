"""``python -m bench.decide``: both engines timed on the same batches, all of them on the
kernel, and the columnar phases accounted for."""

from __future__ import annotations

from bench import decide


def test_a_tiny_run_times_both_engines_over_batches_the_kernel_covers(capsys):
    report = decide.main(["--accounts", "50", "--batches", "2", "--batch", "64",
                          "--repeats", "1"])
    assert set(report["us_per_request"]) == {"decide_batch", "decide_columnar"}
    assert all(v > 0 for v in report["us_per_request"].values())
    assert report["fast_share_first_batch"] == 1.0
    phases = report["columnar_phases_us_per_request"]
    assert set(phases) == {"rows", "arrays+rates", "kernel", "outcomes", "write_back"}
    assert "decide_columnar" in capsys.readouterr().out
