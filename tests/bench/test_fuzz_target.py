"""``python -m bench.fuzz`` runs: for each target (engine requests, with their seeds of
valid requests and known poisons; Diameter CCRs; Nchf bodies) a short run over its seeds
and mutations of them ends with libFuzzer's summary and no crash."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytest.importorskip("atheris")


@pytest.mark.parametrize("target, seeds", [("request", 7), ("diameter", 3), ("nchf", 2)])
def test_a_short_fuzz_run_ends_without_a_crash(tmp_path, target, seeds):
    res = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--target", target, "--minutes", "0.5", "--corpus",
         str(tmp_path / "corpus"), "--artifacts", str(tmp_path / "crashes"), "--",
         "-runs=30000"], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", res.stderr)
    assert done and int(done.group(1)) == 30000, res.stderr[-2000:]
    assert not list((tmp_path / "crashes").iterdir())
    assert re.search(r"\d+ accepted, \d+ refused, no crash", res.stderr), res.stderr[-2000:]
    assert len(list((tmp_path / "corpus").iterdir())) > seeds  # the seeds and what it found
