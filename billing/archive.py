"""The archive: the Redis outbox into PostgreSQL, exactly once, resumable after any crash.

Every script that moves money, charges or changes an account appends its entry to the
outbox stream in the same atomic step (``billing.outbox``): the outbox is the one source,
there is no second write that could be lost. The archiver reads each outbox stream from
the position stored in ``archive_streams`` and writes a batch of entries — their account
changes, ledger entries and charges, each linked into its account's hash chain
(``billing.chain``) — *and the new position* in one transaction. A crash (SIGKILL included)
before the commit leaves neither; after it, both: the next run resumes where the last
commit stopped, and no entry is archived twice or skipped. The position row is locked
(``FOR UPDATE``) before the stream is read, so two archivers on one database take turns.

Charges are kept once per (id, ts) and ledger entries once per (account, id, ts) even if the
outbox held one twice (the primary keys refuse the second; such a batch is redone with the
repeats left out and counted as ``duplicates``).

Trimming: after a batch commits, entries up to its position are trimmed from the stream
(XTRIM MINID: what is committed only), except those younger than ``retain_ms`` (0: none),
which a restore of the database from a backup could then re-read. The engine's writes also
trim entries older than the ledger retention (90 days by default): an archive that stops
for longer loses what was trimmed (``docs/billing.md``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgpack
import psycopg
import redis
from psycopg.types.json import Jsonb
from redis.cluster import RedisCluster

from balances.codec import Keys
from balances.redis_errors import store_errors
from billing.chain import ZERO, link
from billing.db import DatabaseError
from billing.outbox import ATTRIBUTES, Entry, OutboxError, decode_entry, id_key

DEFAULT_BATCH = 2000  # outbox entries per transaction

_ACCOUNT_COLS = ("account", "chain_seq", "ts", "attrs", "opened", "stream_id", "prev_hash",
                 "hash")
_LEDGER_COLS = ("account", "entry_id", "ts", "chain_seq", "reason", "delta", "balance",
                "released", "actor", "note", "catalog_version", "stream_id", "prev_hash",
                "hash")
_CHARGE_COLS = ("id", "account", "ts", "chain_seq", "service", "session", "seq", "charged_at",
                "units", "rated_units", "allowance_units", "cost", "uncharged", "currency",
                "tariff", "rate", "catalog_version", "balance", "stream_id", "prev_hash",
                "hash")


@dataclass
class Totals:
    """What an archiver wrote (cumulative)."""

    entries: int = 0
    charges: int = 0
    ledger: int = 0
    account_changes: int = 0
    rejects: int = 0
    duplicates: int = 0
    batches: int = 0

    def add(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class ArchiveSettings:
    batch: int = DEFAULT_BATCH
    retain_ms: int = 0  # outbox entries younger than this stay in Redis after archiving
    idle_sleep_s: float = 0.2  # between polls when caught up (not --until-idle)


class _Duplicate(Exception):
    """A primary key refused a row: the batch is redone checking each row first."""


@dataclass
class Archiver:
    conn: psycopg.Connection
    client: redis.Redis | RedisCluster
    prefix: str = "cf"
    settings: ArchiveSettings = field(default_factory=ArchiveSettings)
    totals: Totals = field(default_factory=Totals)
    _partitions: set[tuple[str, int, int]] = field(default_factory=set)

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix, cluster=isinstance(self.client, RedisCluster))

    def streams(self) -> list[str]:
        """The outbox streams: one on a single Redis, one per slot tag in use on a cluster."""
        if not isinstance(self.client, RedisCluster):
            return [self.keys.outbox("")]
        with store_errors("cannot list the outbox streams"):
            found = {k.decode() if isinstance(k, bytes) else k
                     for k in self.client.scan_iter(match=self.keys.outbox_pattern(),
                                                    count=1000, _type="STREAM")}
        return sorted(found)

    def run(self, *, until_idle: bool = False, stop: threading.Event | None = None,
            progress: Callable[[Totals], None] | None = None) -> Totals:
        """Archive until ``stop`` is set, or (``until_idle``) until every stream is caught
        up. ``progress`` is called after each batch."""
        stop = stop or threading.Event()
        while not stop.is_set():
            moved = 0
            for stream in self.streams():
                while not stop.is_set():
                    n = self.archive_batch(stream)
                    moved += n
                    if n and progress is not None:
                        progress(self.totals)
                    if n < self.settings.batch:
                        break
            if not moved:
                if until_idle:
                    break
                stop.wait(self.settings.idle_sleep_s)
        return self.totals

    def archive_batch(self, stream: str) -> int:
        """Archive the next batch of ``stream`` (one transaction); the entries it took."""
        try:
            done, last = self._batch(stream, careful=False)
        except _Duplicate:
            done, last = self._batch(stream, careful=True)
        if last is not None:
            self._trim(stream, last)
        return done

    # -- one batch -------------------------------------------------------------------------
    def _batch(self, stream: str, careful: bool) -> tuple[int, str | None]:
        created: set[tuple[str, int, int]] = set()
        batch = Totals(batches=1)
        try:
            with self.conn.transaction():
                self.conn.execute("INSERT INTO archive_streams (stream, last_id) VALUES "
                                  "(%s, '0-0') ON CONFLICT DO NOTHING", (stream,))
                (last,) = self.conn.execute("SELECT last_id FROM archive_streams WHERE "
                                            "stream = %s FOR UPDATE", (stream,)).fetchone()
                with store_errors(f"cannot read the outbox {stream}"):
                    raw = self.client.xrange(stream, min=f"({last}", count=self.settings.batch)
                if not raw:
                    return 0, None
                entries, rejects = _decode(raw)
                self._write(stream, entries, rejects, created, careful, batch)
                new_last = raw[-1][0].decode()
                self.conn.execute("UPDATE archive_streams SET last_id = %s, entries = "
                                  "entries + %s, updated_at = now() WHERE stream = %s",
                                  (new_last, len(raw), stream))
        except psycopg.errors.UniqueViolation as exc:
            if careful:
                raise DatabaseError(f"the archive refused a batch of {stream}: {exc}") from exc
            raise _Duplicate from exc
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot write the archive: {str(exc).strip()}") from exc
        self._partitions |= created  # only once committed
        batch.entries = len(raw)
        self.totals.add(batch)
        return len(raw), new_last

    def _write(self, stream: str, entries: list[Entry], rejects: list[tuple], created: set,
               careful: bool, batch: Totals) -> None:
        cur = self.conn.cursor()
        seen_charges: set[tuple] = set()
        seen_ledger: set[tuple] = set()
        kept: list[tuple[str, dict]] = []
        for e in entries:
            for kind, row in e.records:
                if kind == "charge":
                    key = (row["id"], row["ts"])
                    if key in seen_charges or (careful and _exists(
                            cur, "SELECT 1 FROM charges WHERE id = %s AND ts = %s", key)):
                        batch.duplicates += 1
                        continue
                    seen_charges.add(key)
                elif kind == "ledger":
                    key = (row["account"], row["entry_id"], row["ts"])
                    if key in seen_ledger or (careful and _exists(
                            cur, "SELECT 1 FROM ledger WHERE account = %s AND entry_id = %s "
                                 "AND ts = %s", key)):
                        batch.duplicates += 1
                        continue
                    seen_ledger.add(key)
                kept.append((kind, row))
        self._partitions_for(cur, kept, created)
        heads = self._heads(cur, {row["account"] for _, row in kept})
        by_kind: dict[str, list[dict]] = {"account": [], "ledger": [], "charge": []}
        for kind, row in kept:
            seq, prev = heads.get(row["account"], (0, ZERO))
            row["chain_seq"] = seq + 1
            row["prev_hash"] = prev
            row["hash"] = link(prev, kind, row)
            heads[row["account"]] = (seq + 1, row["hash"])
            by_kind[kind].append(row)
        _copy(cur, "account_changes", _ACCOUNT_COLS, by_kind["account"], jsonb="attrs")
        _copy(cur, "ledger", _LEDGER_COLS, by_kind["ledger"])
        _copy(cur, "charges", _CHARGE_COLS, by_kind["charge"])
        if heads:
            names = list(heads)
            cur.execute("INSERT INTO chain_heads (account, seq, hash) SELECT * FROM "
                        "unnest(%s::text[], %s::bigint[], %s::bytea[]) ON CONFLICT (account) "
                        "DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
                        (names, [heads[a][0] for a in names], [heads[a][1] for a in names]))
        self._accounts(cur, entries)
        for stream_id, error, fields in rejects:
            cur.execute("INSERT INTO archive_rejects (stream, stream_id, error, fields) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (stream, stream_id, error, fields))
        batch.charges += len(by_kind["charge"])
        batch.ledger += len(by_kind["ledger"])
        batch.account_changes += len(by_kind["account"])
        batch.rejects += len(rejects)

    def _partitions_for(self, cur: psycopg.Cursor, records: Iterable[tuple[str, dict]],
                        created: set) -> None:
        """The monthly partitions the rows go to, made where missing (in this transaction:
        a batch that rolls back takes its new partitions with it)."""
        for kind, row in records:
            if kind == "account":
                continue
            table = "charges" if kind == "charge" else "ledger"
            ts = row["ts"]
            month = (table, ts.year, ts.month)
            if month not in self._partitions and month not in created:
                cur.execute("SELECT archive_partition(%s, %s)", (table, ts))
                created.add(month)

    def _heads(self, cur: psycopg.Cursor, accounts: set[str]) -> dict[str, tuple[int, bytes]]:
        if not accounts:
            return {}
        rows = cur.execute("SELECT account, seq, hash FROM chain_heads WHERE account = "
                           "ANY(%s) ORDER BY account FOR UPDATE", (sorted(accounts),))
        return {a: (s, bytes(h)) for a, s, h in rows}

    def _accounts(self, cur: psycopg.Cursor, entries: list[Entry]) -> None:
        """The accounts' current attributes: the last change of each (attributes it did not
        name are kept), opened_at from the first."""
        latest: dict[str, dict] = {}
        for e in entries:
            if e.attrs is None:
                continue
            now = latest.setdefault(e.account, {"opened_at": e.ts})
            now.update({k: e.attrs[k] for k in ATTRIBUTES if k in e.attrs})
            now["updated_at"] = e.ts
        if not latest:
            return
        names = list(latest)

        def column(name: str) -> list:
            values = [latest[a].get(name) for a in names]
            if name == "allow_negative":
                return [None if v is None else bool(v) for v in values]
            return [None if v is None else str(v) for v in values]

        sets = ", ".join(f"{c} = COALESCE(EXCLUDED.{c}, accounts.{c})" for c in ATTRIBUTES)
        types = ["text"] + ["boolean" if c == "allow_negative" else "text" for c in ATTRIBUTES]
        cur.execute(
            f"INSERT INTO accounts (account, {', '.join(ATTRIBUTES)}, opened_at, updated_at) "
            f"SELECT * FROM unnest({', '.join(f'%s::{t}[]' for t in types)}, "
            f"%s::timestamptz[], %s::timestamptz[]) "
            f"ON CONFLICT (account) DO UPDATE SET {sets}, updated_at = EXCLUDED.updated_at",
            [names] + [column(c) for c in ATTRIBUTES]
            + [[latest[a]["opened_at"] for a in names], [latest[a]["updated_at"] for a in names]])

    def _trim(self, stream: str, last: str) -> None:
        """Trim what is committed (below ``last``, which stays as the resume mark), except
        entries younger than the retention."""
        minid = last
        if self.settings.retain_ms:
            with store_errors("cannot read the Redis clock"):
                seconds, micro = self.client.time()
            keep_from = int(seconds) * 1000 + int(micro) // 1000 - self.settings.retain_ms
            if (keep_from, 0) < id_key(last):
                minid = f"{keep_from}-0"
        with store_errors(f"cannot trim the outbox {stream}"):
            self.client.xtrim(stream, minid=minid, approximate=False)


def _decode(raw: list) -> tuple[list[Entry], list[tuple]]:
    entries: list[Entry] = []
    rejects: list[tuple] = []
    for stream_id, fields in raw:
        try:
            entries.append(decode_entry(stream_id, fields))
        except OutboxError as exc:
            rejects.append((stream_id.decode(), str(exc), msgpack.packb(fields)))
    return entries, rejects


def _exists(cur: psycopg.Cursor, sql: str, key: tuple) -> bool:
    return cur.execute(sql, key).fetchone() is not None


#: column types, for binary COPY (cheaper to write and to read than text)
_TYPES = {"account": "text", "entry_id": "text", "id": "text", "ts": "timestamptz",
          "charged_at": "timestamptz", "chain_seq": "int8", "attrs": "jsonb",
          "opened": "bool", "stream_id": "text", "prev_hash": "bytea", "hash": "bytea",
          "reason": "text", "delta": "int8", "balance": "int8", "released": "int8",
          "actor": "text", "note": "text", "catalog_version": "text", "service": "text",
          "session": "text", "seq": "int8", "units": "int8", "rated_units": "int8",
          "allowance_units": "int8", "cost": "int8", "uncharged": "int8", "currency": "text",
          "tariff": "text", "rate": "text"}


def _copy(cur: psycopg.Cursor, table: str, cols: tuple[str, ...], rows: list[dict],
          jsonb: str | None = None) -> None:
    if not rows:
        return
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([_TYPES[c] for c in cols])
        for row in rows:
            if jsonb is not None:
                row = {**row, jsonb: Jsonb(row[jsonb])}
            copy.write_row([row[c] for c in cols])

