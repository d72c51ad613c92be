"""The speed ships: ``pip install .`` builds a wheel whose per-request modules are compiled
(setup.py), and an installation of it runs them compiled, none reported stale.

The wheel is built from a copy of the tracked files (so the checkout's own extensions of
``make native`` cannot slip in) with this environment's mypy and setuptools, then installed
into a directory of its own and imported from there by a fresh interpreter. About a minute:
mypyc translates and gcc compiles the modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import chargeflow_native as native

ROOT = Path(native.__file__).resolve().parent


def _tracked_copy(dest: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine: the wheel would hold the sources")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    src = _tracked_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheels")
    env = dict(os.environ, CHARGEFLOW_NATIVE="1")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "--wheel-dir", str(out), "."], cwd=src,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return next(out.glob("chargeflow-*.whl"))


def test_the_wheel_holds_every_per_request_module_compiled(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    compiled = {n for n in names if n.endswith(".so")}
    for module in native.MODULES:
        assert any(n.startswith(module[:-3] + ".") for n in compiled), module
        assert module in names  # the source beside it, for CHARGEFLOW_PURE=1
    package, _, name = native.GROUP.rpartition(".")
    assert any(n.startswith(f"{package}/{name}__mypyc") for n in compiled)  # the library
    assert "chargeflow_native.py" in names and "build_native.py" not in names


def test_an_installation_runs_them_compiled_and_none_stale(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(wheel)], check=True, timeout=300)
    probe = ("import chargeflow_native as n, charging.decide as d; "
             "print(n.ROOT); print(d.__file__); print(n.describe()); print(n.stale())")
    seen = {}
    for pure in ("", "1"):
        env = dict(os.environ, PYTHONPATH=str(site), CHARGEFLOW_PURE=pure)
        done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        seen[pure] = done.stdout.splitlines()
    root, decide, described, stale = seen[""]
    assert Path(root) == site and Path(decide).parent == site / "charging"
    assert decide.endswith(".so")
    n = len(native.MODULES)
    assert described == f"{n} of {n} per-request modules compiled"
    assert stale == "[]"
    # the same installation, asked for its sources
    assert seen["1"][1].endswith("charging/decide.py") and seen["1"][2].startswith("0 of ")
