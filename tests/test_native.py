"""charging.native: when compiled extensions would run other code than their sources."""

from __future__ import annotations

import importlib.machinery
import os

from charging import native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def tree(tmp_path, *, shims=native.MODULES, library=True, built=1_000.0, saved=500.0):
    """Sources saved at ``saved``, the given shims, and the library dated ``built``."""
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


def test_shims_without_their_library_are_stale(tmp_path):
    root = tree(tmp_path, shims=["flows/engine.py"], library=False)
    assert native.stale(root) == ["flows/engine.py"]


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
