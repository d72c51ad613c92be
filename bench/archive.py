"""Archive benchmark: charges per second from the Redis outbox into PostgreSQL.

    python -m bench.archive [--accounts N] [--charges N] [--engine-batch N]
                            [--batches 500,2000] [--redis URL] [--db URL] [--json]

Fills the outbox the way the engine does — ``Charger.charge`` over batches of sms events
spread over N prepaid accounts, so each outbox entry carries an account's charges of one
engine batch and their ledger entries — on a private embedded redis-server and a private
embedded PostgreSQL (unless ``--redis`` / ``--db`` name others), then times
``Archiver.run(until_idle=True)`` draining it at each archive batch size (entries per
transaction; a fresh database and a refilled outbox for each), and ``audit verify`` over
the result. Filling is not timed. Reports, asserts nothing (bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psycopg
import redis

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from balances.accounts import AccountSpec
from balances.charger import Charger
from balances.embedded import EmbeddedRedis
from balances.store import BalanceStore
from billing.archive import Archiver, ArchiveSettings
from billing.audit import verify
from billing.db import Database, EmbeddedPostgres
from charging.catalog import load_catalog
from charging.compiler import compile_catalog
from charging.decide import FixedCatalogs
from charging.requests import parse
from flows.cli_common import sample_catalog_path


def fill(store: BalanceStore, accounts: int, charges: int, engine_batch: int,
         tag: str) -> int:
    """Charge ``charges`` sms events through the charging path; the outbox entries made."""
    cc = compile_catalog(load_catalog(sample_catalog_path()))
    charger = Charger(store, FixedCatalogs(cc), lambda: int(time.time() * 1000))
    stream = store.keys.outbox("")
    before = store.r.xlen(stream)
    for start in range(0, charges, engine_batch):
        charger.charge([parse({"id": f"{tag}-{k}", "kind": "event", "account":
                               f"a{(k * 7919) % accounts}", "service": "sms",
                               "ts": "2026-11-24T10:00:00+01:00", "used": 1})
                        for k in range(start, min(start + engine_batch, charges))])
    return store.r.xlen(stream) - before


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def backend_cpu_s(conn: psycopg.Connection) -> float | None:
    """CPU seconds of the connection's server process (None when it is not on this host)."""
    (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
    conn.commit()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--charges", type=int, default=200_000)
    ap.add_argument("--engine-batch", type=int, default=512,
                    help="requests per Charger.charge call while filling")
    ap.add_argument("--batches", default="500,2000", help="archive batch sizes to time")
    ap.add_argument("--redis", default=None, help="Redis URL (default: embedded)")
    ap.add_argument("--db", default=None, help="PostgreSQL admin URL (default: embedded); "
                    "a database is created in it per run and dropped")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="cfb")
    embedded_redis = embedded_pg = None
    if args.redis:
        client = redis.Redis.from_url(args.redis)
    else:
        embedded_redis = EmbeddedRedis(Path(tmp.name), "everysec")
        client = redis.Redis.from_url(embedded_redis.start())
    if args.db:
        admin = args.db
    else:
        embedded_pg = EmbeddedPostgres(Path(tmp.name))
        embedded_pg.start()
        admin = embedded_pg.admin_url()
    prefix = f"benchar{os.getpid()}"
    runs = []
    try:
        store = BalanceStore(client, prefix=prefix, ledger_retention_s=0)
        for start in range(0, args.accounts, 10_000):
            store.upsert_accounts([AccountSpec(f"a{i}", "PREPAID_S", 10**12)
                                   for i in range(start, min(start + 10_000, args.accounts))])
        for n, batch in enumerate(int(b) for b in args.batches.split(",")):
            client.xtrim(store.keys.outbox(""), maxlen=0)  # this run's entries only
            entries = fill(store, args.accounts, args.charges, args.engine_batch, f"r{n}")
            name = f"bench_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            params = psycopg.conninfo.conninfo_to_dict(admin) | {"dbname": name}
            try:
                with Database(psycopg.conninfo.make_conninfo(**params),
                              Path(tmp.name)).connect() as conn:
                    archiver = Archiver(conn, client, prefix=prefix,
                                        settings=ArchiveSettings(batch=batch))
                    s0, c0, t0 = backend_cpu_s(conn), cpu_s(), time.perf_counter()
                    totals = archiver.run(until_idle=True)
                    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
                    s1 = backend_cpu_s(conn)
                    server = None if s0 is None or s1 is None else s1 - s0
                    t1 = time.perf_counter()
                    report = verify(conn)
                    verify_s = time.perf_counter() - t1
                    (size,) = conn.execute("SELECT pg_database_size(current_database())"
                                           ).fetchone()
            finally:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            runs.append({
                "archive_batch": batch, "outbox_entries": entries, "charges": totals.charges,
                "ledger": totals.ledger, "seconds": round(wall, 3),
                "charges_per_s": round(totals.charges / wall),
                "records_per_s": round((totals.charges + totals.ledger) / wall),
                "archiver_cpu_s": round(cpu, 3),
                "server_cpu_s": None if server is None else round(server, 3),
                "charges_per_cpu_s": round(totals.charges / (cpu + (server or 0))),
                "verify_s": round(verify_s, 3),
                "verify_records_per_s": round(report.records / verify_s),
                "verified": report.broken is None, "db_bytes": size})
            if not args.json:
                r = runs[-1]
                print(f"batch {batch:>6}: {r['charges']:,} charges + {r['ledger']:,} ledger "
                      f"entries from {entries:,} outbox entries in {r['seconds']:.2f} s = "
                      f"{r['charges_per_s']:,} charges/s; CPU: archiver "
                      f"{r['archiver_cpu_s']:.2f} s, PostgreSQL {r['server_cpu_s']} s = "
                      f"{r['charges_per_cpu_s']:,} charges per CPU second; audit verify "
                      f"{r['verify_records_per_s']:,} records/s; {size / 2**20:.0f} MiB")
    finally:
        client.delete(*[k for k in client.scan_iter(match=f"{prefix}:*", count=10_000)] or
                      ["-"])
        if embedded_pg is not None:
            embedded_pg.stop()
        if embedded_redis is not None:
            embedded_redis.stop()
        tmp.cleanup()
    doc = {"benchmark": "archive", "machine": platform.node(), "cpus": os.cpu_count(),
           "python": platform.python_version(), "accounts": args.accounts,
           "engine_batch": args.engine_batch,
           "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "runs": runs}
    if args.json:
        print(orjson.dumps(doc).decode())
    return doc


if __name__ == "__main__":
    main()
