"""What the data model costs Redis: bytes per account, per open session, per kept record.

    python -m bench.memory [--accounts N] [--json]

On a private embedded redis-server, N accounts of the sample catalog are provisioned and
charged through ``Charger.charge`` in three steps; after each, ``MEMORY USAGE`` of every
account's hash (exact: ``SAMPLES 0``) is summed:

1. provisioned: the account alone;
2. one voice session opened on each (an ``initial``): the session and its request's record;
3. ten SMS events on each: ten more records (and the money fields rewritten).

Per record = (3 − 2) / 10; per open session = (2 − 1) − one record; per account = 1. The
ledger and the outbox, which keep what their own retentions say (``--ledger-retention-s``,
the archive's trim), are measured apart. Records are kept the idempotency retention and
then dropped by the account's next write, its last few whatever their age (docs/decisions.md):
so Redis holds about accounts × (account + 4 records) + open sessions × session +
requests/s × retention × record.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import orjson
import redis

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from balances.accounts import AccountSpec
from balances.charger import Charger
from balances.embedded import EmbeddedRedis
from balances.store import BalanceStore
from bench.harness import run_facts
from charging.catalog import load_catalog
from charging.compiler import compile_catalog
from charging.decide import FixedCatalogs
from charging.requests import Request
from flows.cli_common import sample_catalog_path

TS = 1_795_510_800_000  # a Tuesday, 10:00 in the catalog's zone
PREFIX = "mem"


def _hash_bytes(client: redis.Redis, store: BalanceStore, names: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for a in names:
        pipe.memory_usage(store.keys.account(a), samples=0)
    return sum(pipe.execute())


def _stream_bytes(client: redis.Redis, keys: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return sum(x or 0 for x in pipe.execute())


def measure(n: int, client: redis.Redis, prefix: str = PREFIX) -> dict:
    store = BalanceStore(client, prefix=prefix)
    cc = compile_catalog(load_catalog(sample_catalog_path()))
    names = [f"m{i:06d}" for i in range(n)]
    store.upsert_accounts([AccountSpec(a, "PREPAID_S", 10**12) for a in names])
    charger = Charger(store, FixedCatalogs(cc), lambda: TS)
    accounts = _hash_bytes(client, store, names)
    for start in range(0, n, 1000):
        charger.charge([Request(id=f"{a}:v:0", kind="initial", account=a, service="voice",
                                session=f"{a}:v", seq=0, ts_ms=TS)
                        for a in names[start:start + 1000]])
    with_session = _hash_bytes(client, store, names)
    for k in range(10):
        for start in range(0, n, 1000):
            charger.charge([Request(id=f"{a}:e{k}", kind="event", account=a, service="sms",
                                    used=1, ts_ms=TS + k)
                            for a in names[start:start + 1000]])
    with_records = _hash_bytes(client, store, names)
    record = (with_records - with_session) / (10 * n)
    ledgers = _stream_bytes(client, [store.keys.ledger(a) for a in names])
    outbox = _stream_bytes(client, [k.decode() for k in
                                    client.scan_iter(match=store.keys.outbox_pattern())])
    return {"accounts": n,
            "bytes_per_account": round(accounts / n),
            "bytes_per_open_session": round((with_session - accounts) / n - record),
            "bytes_per_record": round(record),
            "ledger_bytes_per_entry": round(ledgers / (11 * n)),
            "outbox_bytes_per_account_write": round(outbox / (11 * n))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    facts = run_facts()
    with tempfile.TemporaryDirectory(prefix="cf-mem-") as tmp:
        embedded = EmbeddedRedis(Path(tmp), "everysec")
        client = redis.Redis.from_url(embedded.start())
        try:
            result = measure(args.accounts, client) | {"run": facts}
        finally:
            client.close()
            embedded.stop()
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        for k, v in result.items():
            if k != "run":
                print(f"{k:>32}: {v:,}")
    return result


if __name__ == "__main__":
    main()
