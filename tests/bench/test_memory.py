"""bench.memory measures the hashes as the store writes them: a record is a field of its
account's hash, a session another, and the steps tell them apart."""

from __future__ import annotations

from bench.memory import measure


def test_memory_tells_accounts_sessions_and_records_apart(redis_client, prefix):
    r = measure(40, redis_client, prefix=prefix)
    assert r["accounts"] == 40
    # a record holds a decision of ~110-200 bytes; a session's blob and a hash field more
    assert 100 <= r["bytes_per_record"] <= 400
    assert r["bytes_per_open_session"] > 0 and r["bytes_per_account"] > 0
    assert r["ledger_bytes_per_entry"] > 0
    keys = [k for k in redis_client.scan_iter(match=f"{prefix}:*:idem:*")]
    assert keys == []  # no key per request: every record is in its account's hash
