"""``chargeflow notify``: a wrong rules file exits 1 naming the path; --check validates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def notify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "notify", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_wrong_rules_file_exits_1_naming_each_path(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - {id: low, below: 5}\nwebhooks:\n"
                 "  - {url: 'http://x', secret: hush-hush, secert: y}\n")
    res = notify("--rules", str(f), "--check")
    assert res.returncode == 1
    assert "rules[0].below" in res.stderr and "webhooks[0].secert" in res.stderr
    assert "did you mean 'secret'" in res.stderr
    assert "hush-hush" not in res.stderr + res.stdout


def test_check_accepts_a_good_file(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - {id: low, below: '5.00'}\n  - {id: last, final: true}\n")
    res = notify("--rules", str(f), "--check")
    assert res.returncode == 0, res.stderr
    assert "2 rules, 0 webhooks" in res.stdout
