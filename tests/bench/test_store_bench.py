"""The store benchmark (issue 3): its floor script does the writes it claims to measure, and
the command runs end to end in a tiny configuration and reports every figure (never
asserting a speed)."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import orjson

from bench.store import FLOOR_LUA


def _run_floor(client, prefix: str, ops: list[tuple[str, str]], ledger: bool) -> int:
    script = client.register_script(FLOOR_LUA)
    blob = msgpack.packb([x for account, rid in ops for x in (account, rid, b"r" * 114)],
                         use_bin_type=False)
    return script(args=[blob, prefix, 60, "1" if ledger else "0"])


def test_floor_claims_ids_writes_state_and_ledger_once(redis_client, prefix):
    ops = [("a1", "r1"), ("a2", "r2"), ("a1", "r3")]
    assert _run_floor(redis_client, prefix, ops, ledger=True) == 3
    for account, rid in ops:  # the record in the account's hash, as the engine keeps it
        assert redis_client.hget(f"{prefix}:{{{account}}}:acct", f"fi:{rid}") == b"r" * 114
    assert redis_client.hget(f"{prefix}:{{a1}}:acct", "fv") == b"2"
    assert redis_client.xlen(f"{prefix}:{{a1}}:ledger") == 2
    assert redis_client.xlen(f"{prefix}:{{a2}}:ledger") == 1
    # the same ids again: every claim fails, nothing more is written
    assert _run_floor(redis_client, prefix, ops, ledger=True) == 0
    assert redis_client.hget(f"{prefix}:{{a1}}:acct", "fv") == b"2"
    assert redis_client.xlen(f"{prefix}:{{a1}}:ledger") == 2


def test_floor_without_ledger_appends_nothing(redis_client, prefix):
    assert _run_floor(redis_client, prefix, [("a1", "r1"), ("a1", "r2")], ledger=False) == 2
    assert redis_client.hget(f"{prefix}:{{a1}}:acct", "fv") == b"2"
    assert not redis_client.exists(f"{prefix}:{{a1}}:ledger")


def test_store_benchmark_reports_every_figure(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench.store", "--accounts", "300", "--seconds", "0.3",
         "--repeats", "1", "--batches", "1,64", "--json", "--out", str(tmp_path)],
        capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    r = orjson.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert set(r["charger"]) == {"1", "64"}
    assert all(v["ops_per_s"] > 0 for v in r["charger"].values())
    assert r["speedup_vs_batch_1"]["1"] == 1.0
    assert r["write_only_ops_per_s"]["64"] > 0
    assert set(r["floor_ops_per_s"]["64"]) == {"with_ledger", "without_ledger"}
    assert all(v > 0 for v in r["floor_ops_per_s"]["64"].values())
    assert r["aof"] is True
    saved = list(tmp_path.glob("store-*.json"))
    assert len(saved) == 1 and orjson.loads(saved[0].read_bytes())["floor_ops_per_s"]
