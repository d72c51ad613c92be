"""Archive records written straight into the real PostgreSQL archive, hash-chained as
``chargeflow archive`` writes them (billing.chain), for the bill-run tests: a test names the
usage time and amount of each charge instead of driving the engine for a past month."""

from __future__ import annotations

import datetime as dt
import itertools

import psycopg
from psycopg.types.json import Jsonb

from billing.chain import ZERO, link

_ids = itertools.count(1)


class ArchiveRows:
    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def _chain(self, account: str) -> tuple[int, bytes]:
        row = self.conn.execute("SELECT seq, hash FROM chain_heads WHERE account = %s",
                                (account,)).fetchone()
        return (row[0], bytes(row[1])) if row else (0, ZERO)

    def _append(self, kind: str, table: str, row: dict) -> None:
        seq, prev = self._chain(row["account"])
        row = {**row, "chain_seq": seq + 1, "stream_id": f"{next(_ids)}-0"}
        h = link(prev, kind, row)
        if table in ("charges", "ledger"):
            self.conn.execute("SELECT archive_partition(%s, %s)", (table, row["ts"]))
        cols = list(row) + ["prev_hash", "hash"]
        values = [Jsonb(v) if isinstance(v, dict) else v for v in row.values()] + [prev, h]
        self.conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                          f"({', '.join(['%s'] * len(cols))})", values)
        self.conn.execute("INSERT INTO chain_heads (account, seq, hash) VALUES (%s, %s, %s) "
                          "ON CONFLICT (account) DO UPDATE SET seq = EXCLUDED.seq, "
                          "hash = EXCLUDED.hash", (row["account"], seq + 1, h))
        self.conn.commit()

    def account(self, account: str, opened_at: dt.datetime, *, plan: str = "PREPAID_S",
                **attrs) -> None:
        fields = {"plan": plan, "status": "active", "allow_negative": False, **attrs}
        self.conn.execute(
            "INSERT INTO accounts (account, plan, status, allow_negative, name, country, "
            "vat_id, customer, opened_at, updated_at) VALUES (%s, %s, 'active', false, %s, "
            "%s, %s, %s, %s, %s)",
            (account, plan, attrs.get("name"), attrs.get("country"), attrs.get("vat_id"),
             attrs.get("customer"), opened_at, opened_at))
        self._append("account", "account_changes", {"account": account, "ts": opened_at,
                                                    "attrs": fields, "opened": True})

    def charge(self, account: str, ts: dt.datetime, cost: int, *, service: str = "voice",
               tariff: str = "VOICE_STD", rate: str = "mobile", units: int = 60,
               uncharged: int = 0) -> str:
        cid = f"c{next(_ids)}"
        self._append("charge", "charges", {
            "id": cid, "account": account, "ts": ts, "service": service, "session": None,
            "seq": None, "charged_at": ts, "units": units, "rated_units": units,
            "allowance_units": 0, "cost": cost, "uncharged": uncharged, "currency": "EUR",
            "tariff": tariff, "rate": rate, "catalog_version": "2026-12-test", "balance": 0})
        return cid

    def adjustment(self, account: str, ts: dt.datetime, delta: int, note: str) -> None:
        self._append("ledger", "ledger", {
            "account": account, "entry_id": f"adj-{next(_ids)}", "ts": ts,
            "reason": "adjustment", "delta": delta, "balance": 0, "released": None,
            "actor": "cli", "note": note, "catalog_version": None})
