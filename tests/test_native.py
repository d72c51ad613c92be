"""chargeflow_native: when compiled extensions would run other code than their sources, and
how ``CHARGEFLOW_PURE=1`` imports the sources where extensions exist."""

from __future__ import annotations

import _bisect
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import chargeflow_native as native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def tree(tmp_path, *, shims=native.MODULES, library=True, built=1_000.0, saved=500.0):
    """A checkout's sources saved at ``saved``, the given shims, and the library dated
    ``built``."""
    (tmp_path / "build_native.py").write_text("")
    for m in native.MODULES:
        src = tmp_path / m
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text("")
        os.utime(src, (saved, saved))
    for m in shims:
        (tmp_path / m).with_suffix(SUFFIX).write_bytes(b"")
    if library:
        package, _, name = native.GROUP.rpartition(".")
        lib = tmp_path / package.replace(".", "/") / f"{name}__mypyc{SUFFIX}"
        lib.write_bytes(b"")
        os.utime(lib, (built, built))
    return tmp_path


def test_nothing_compiled_is_nothing_stale(tmp_path):
    root = tree(tmp_path, shims=(), library=False)
    assert native.stale(root) == [] and native.extensions(root) == []


def test_a_build_after_every_source_is_current(tmp_path):
    root = tree(tmp_path)
    assert native.stale(root) == []
    assert len(native.extensions(root)) == len(native.MODULES) + 1


def test_a_source_saved_after_the_build_is_stale(tmp_path):
    root = tree(tmp_path)
    os.utime(root / "charging/decide.py", (2_000.0, 2_000.0))
    assert native.stale(root) == ["charging/decide.py"]


def test_a_missing_shim_is_stale_while_the_library_runs_its_module(tmp_path):
    root = tree(tmp_path, shims=[m for m in native.MODULES if m != "charging/requests.py"])
    assert native.stale(root) == ["charging/requests.py"]


def test_an_installed_package_is_never_stale(tmp_path):
    """Installed from a wheel, every file is dated by the installation, sources after the
    library as often as not: that is no edit after a build."""
    root = tree(tmp_path, built=500.0, saved=1_000.0)
    assert native.stale(root) == native.MODULES  # in a checkout: all stale
    (root / "build_native.py").unlink()
    assert native.stale(root) == []


def test_shims_without_their_library_are_stale(tmp_path):
    root = tree(tmp_path, shims=["flows/engine.py"], library=False)
    assert native.stale(root) == ["flows/engine.py"]


def _package_with_an_extension(tmp_path, name: str) -> list[str]:
    """A package ``name`` holding ``_bisect`` twice: as a real extension module (a copy of
    the interpreter's own, which any package may hold: its init function is named by the
    last part of the module's name) and as a ``.py`` source beside it."""
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_bisect.py").write_text("FROM_SOURCE = True\n")
    shutil.copy(_bisect.__file__, (package / "_bisect").with_suffix(SUFFIX))
    return [f"{name}/_bisect.py"]


def test_sources_are_imported_ahead_of_the_extension_beside_them(tmp_path):
    modules = _package_with_an_extension(tmp_path, "purepkg")
    sys.path.insert(0, str(tmp_path))
    finder = native.Sources(tmp_path, modules)
    try:
        import purepkg._bisect as compiled  # no finder yet: Python prefers the extension

        assert not hasattr(compiled, "FROM_SOURCE") and native.compiled(modules) == modules
        del sys.modules["purepkg._bisect"]
        sys.meta_path.insert(0, finder)
        import purepkg._bisect as source

        assert source.FROM_SOURCE and native.compiled(modules) == []
    finally:
        sys.path.remove(str(tmp_path))
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        for name in ("purepkg", "purepkg._bisect"):
            sys.modules.pop(name, None)


def test_pure_mode_is_set_by_importing_the_machinery_first():
    """``CHARGEFLOW_PURE=1`` and ``import chargeflow_native`` put the finder of sources
    first; without the variable there is none."""
    probe = ("import sys, chargeflow_native as n; "
             "print(any(isinstance(f, n.Sources) for f in sys.meta_path[:1]))")
    root = str(Path(native.__file__).parent)
    seen = {}
    for pure in ("1", ""):
        env = dict(os.environ, CHARGEFLOW_PURE=pure, PYTHONPATH=root)
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=root,
                             capture_output=True, text=True, check=True)
        seen[pure] = out.stdout.strip()
    assert seen == {"1": "True", "": "False"}


def test_pure_mode_coming_too_late_says_so(tmp_path):
    """A module imported compiled before the machinery stays compiled: that is logged."""
    modules = _package_with_an_extension(tmp_path, "latepkg")
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import latepkg._bisect; "
             "import chargeflow_native as n; n.MODULES[:] = sys.argv[2:]; n.use_sources(); "
             "import latepkg._bisect as m; print(hasattr(m, 'FROM_SOURCE'))")
    root = str(Path(native.__file__).parent)
    env = dict(os.environ, CHARGEFLOW_PURE="", PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path), *modules], env=env,
                         cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert "CHARGEFLOW_PURE=1 came after these modules were imported compiled: " \
           "latepkg/_bisect.py" in out.stderr


def test_state_and_outcomes_copy_and_pickle_compiled_or_not():
    """Compiled, a class with an __init__ written out cannot be made without its arguments:
    copy and pickle must still rebuild accounts, sessions and outcomes."""
    import copy
    import dataclasses
    import pickle

    from charging.decide import Change, Outcome
    from charging.records import Charge, Decision, Result, Stored
    from charging.requests import Request
    from charging.state import Account, Bucket, Session

    session = Session("s1", "voice", "v1", "VOICE", "mobile_peak", chargeable=60,
                      allowance_reserved=[5], seq=3)
    acct = Account("a", "PREPAID_S", 1_000, allowances={"sms": [Bucket(10, 5, "2026-11")]},
                   sessions={"s1": session})
    decision = Decision("r1", "event", "a", "sms", None, None, Result.SUCCESS, balance=910_000,
                        charged=90_000, decimals=4)
    charge = Charge("r1", "a", "sms", None, None, 0, 1, 1, 0, 90_000, "EUR", "SMS", "sms", "v1",
                    910_000, 0, 4)
    out = Outcome(Request("r1", "event", "a", "sms", 0), decision, charge,
                  ledger=[{"delta": -1}])
    out.record()  # its wire form made (and carried along)
    for obj in (session, acct, out, decision, charge, Stored(decision, charge), Change()):
        assert copy.deepcopy(obj) == obj
        assert copy.copy(obj) == obj
        assert pickle.loads(pickle.dumps(obj)) == obj
    twin = copy.deepcopy(acct)
    twin.sessions["s1"].allowance_reserved.append(1)
    assert session.allowance_reserved == [5]  # deep: nothing shared
    assert dataclasses.replace(session, seq=4).seq == 4
