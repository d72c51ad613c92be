"""A bill run over many accounts: time and memory (bench/README.md, "Bill run").

    python -m bench.billrun --accounts 100000 --charges 100 [--processes 1,2] [--finalize N]

Fills a fresh database (``--db URL``, else an embedded PostgreSQL in a temporary directory)
with a month of archived usage generated inside PostgreSQL (``generate_series``: the archive's
own tables and indexes, charges spread over three services and five rates, one account in
ten a business of another member state, one in five opened mid-month), then times
``bill_run`` for November 2026 — once, then again (re-runs replacing every draft) for each
count of ``--processes`` (several processes split the accounts by ``--shard``), and reports
the peak resident memory of the bill-run processes (PostgreSQL's own is not counted).
``--finalize N`` also times finalization: N/2 invoices one at a time (``invoice finalize
ID``), then every other draft of the period (``invoice finalize --period``, 200 a
transaction). Prints one JSON object; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psycopg

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from billing.billrun import RunOptions, bill_run, drafts_of, finalize, finalize_period
from billing.db import Database, EmbeddedPostgres
from billing.proration import Period
from billing.settings import billing_settings
from charging.catalog import load_catalog

PERIOD = Period.parse("2026-11")
CATALOG = Path(__file__).resolve().parent.parent / "billing" / "samples" / "catalog.yaml"

_FILL = """
SELECT archive_partition('charges', '2026-11-15T00:00Z');
INSERT INTO accounts (account, plan, status, allow_negative, name, country, vat_id, customer,
                      opened_at, updated_at)
SELECT 'b' || lpad(a::text, 7, '0'), 'PREPAID_S', 'active', false, 'Customer ' || a,
       CASE WHEN a % 10 = 0 THEN 'AT' WHEN a % 10 = 1 THEN 'FR' ELSE 'DE' END,
       CASE WHEN a % 10 = 0 THEN 'ATU13585627' END,
       CASE WHEN a % 10 = 0 THEN 'business' ELSE 'consumer' END,
       CASE WHEN a % 5 = 0 THEN timestamptz '2026-11-16T08:00Z'
            ELSE timestamptz '2026-01-01T00:00Z' END, now()
FROM generate_series(1, %(accounts)s) a;
INSERT INTO charges (id, account, ts, chain_seq, service, session, seq, charged_at, units,
                     rated_units, allowance_units, cost, uncharged, currency, tariff, rate,
                     catalog_version, balance, stream_id, prev_hash, hash)
SELECT 'r' || a || '-' || k, 'b' || lpad(a::text, 7, '0'),
       timestamptz '2026-11-01T00:00Z' + (k * 25920 + a %% 997) * interval '1 second',
       k + 1, (ARRAY['voice', 'data', 'sms'])[1 + k %% 3], NULL, NULL,
       timestamptz '2026-11-01T00:00Z' + (k * 25920 + a %% 997) * interval '1 second',
       60 + k %% 7, 60 + k %% 7, 0, 1000 + (a * 7919 + k * 104729) %% 250000, 0, 'EUR',
       (ARRAY['VOICE_STD', 'DATA_STD', 'SMS_STD'])[1 + k %% 3],
       (ARRAY['mobile_peak', 'data', 'sms', 'mobile', 'other'])[1 + (k * 7 + a) %% 5],
       '2026-11-a-billing', 0, '0-0', '\\x00', '\\x00'
FROM generate_series(1, %(accounts)s) a, generate_series(0, %(charges)s - 1) k;
INSERT INTO chain_heads (account, seq, hash)
SELECT 'b' || lpad(a::text, 7, '0'), %(charges)s, '\\x00' FROM generate_series(1, %(accounts)s) a;
ANALYZE;
"""


def _shard(args: tuple) -> dict:
    url, shard, batch = args
    settings = billing_settings(load_catalog(CATALOG))
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        report = bill_run(conn, settings, RunOptions(PERIOD, shard=shard, batch=batch))
        seconds = time.perf_counter() - started
    return {"drafts": report.drafts, "seconds": seconds,
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _run(url: str, processes: int, batch: int) -> dict:
    started = time.perf_counter()
    if processes == 1:
        parts = [_shard((url, None, batch))]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes) as pool:
            parts = pool.map(_shard, [(url, (i, processes), batch) for i in range(processes)])
    wall = time.perf_counter() - started
    drafts = sum(p["drafts"] for p in parts)
    return {"drafts": drafts, "seconds": round(wall, 2),
            "accounts_per_s": round(drafts / wall), "processes": processes,
            "max_rss_mib_per_process": round(max(p["max_rss_mib"] for p in parts), 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--charges", type=int, default=100, help="charges per account")
    ap.add_argument("--processes", default="1",
                    help="comma-separated process counts: the first drafts, each re-runs")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--finalize", type=int, default=0, metavar="N")
    ap.add_argument("--db", default=None, help="an empty database's URL (default: embedded)")
    args = ap.parse_args(argv)
    tmp = None
    server = None
    if args.db is None:
        tmp = tempfile.mkdtemp(prefix="cfbill", dir="/tmp")
        server = EmbeddedPostgres(Path(tmp))
        url = server.start()
    else:
        url = args.db
    try:
        conn = Database.from_options(url, tmp).connect()
        started = time.perf_counter()
        conn.execute(_FILL.replace("%(accounts)s", str(args.accounts))
                     .replace("%(charges)s", str(args.charges)).replace("%%", "%"))
        conn.commit()
        fill = time.perf_counter() - started
        out = {"accounts": args.accounts, "charges": args.accounts * args.charges,
               "fill_seconds": round(fill, 1), "batch": args.batch,
               "cpus": os.cpu_count(), "python": sys.version.split()[0]}
        counts = [int(x) for x in args.processes.split(",")]
        out["first_run"] = _run(url, counts[0], args.batch)
        out["re_runs"] = [_run(url, n, args.batch) for n in counts]
        if args.finalize:
            settings = billing_settings(load_catalog(CATALOG))
            ids = drafts_of(conn, PERIOD)[:args.finalize]
            started = time.perf_counter()
            for i in ids[:len(ids) // 2]:  # one at a time: invoice finalize ID
                finalize(conn, settings, i)
            one = time.perf_counter() - started
            started = time.perf_counter()
            numbers, _ = finalize_period(conn, settings, PERIOD)  # the rest, by period
            took = time.perf_counter() - started
            out["finalize"] = {"one_by_one": len(ids) // 2, "seconds": round(one, 2),
                               "per_s": round(len(ids) // 2 / one) if one else None,
                               "by_period": len(numbers), "period_seconds": round(took, 2),
                               "period_per_s": round(len(numbers) / took) if took else None}
        conn.close()
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
