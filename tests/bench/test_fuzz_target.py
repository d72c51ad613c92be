"""``python -m bench.fuzz`` runs: a short run over its seeds (valid requests and the poisons
of issue 14) and mutations of them ends with libFuzzer's summary and no crash."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytest.importorskip("atheris")


def test_a_short_fuzz_run_ends_without_a_crash(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--minutes", "0.5", "--corpus",
         str(tmp_path / "corpus"), "--artifacts", str(tmp_path / "crashes"), "--",
         "-runs=30000"], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    done = re.search(r"Done (\d+) runs", res.stderr)
    assert done and int(done.group(1)) == 30000, res.stderr[-2000:]
    assert not list((tmp_path / "crashes").iterdir())
    assert len(list((tmp_path / "corpus").iterdir())) > 7  # the seeds and what it found
