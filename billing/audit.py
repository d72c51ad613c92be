"""``chargeflow audit verify``: recompute every account's hash chain from the archived rows.

The three archived tables are read in (account, chain_seq) order through server-side
cursors and merged, so memory stays flat however large the archive. For each account the
records must number 1, 2, 3, ... with no gap, each ``prev_hash`` must be the hash before it
(zeros for the first), each ``hash`` must be SHA-256 over that and the record's canonical
form (``billing.chain``), and the last must be the one ``chain_heads`` names. The first
record that fails is reported; nothing is changed.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from billing.chain import COLUMNS, TABLES, ZERO, link


@dataclass(frozen=True)
class Broken:
    """The first record whose chain does not hold."""

    table: str
    account: str
    chain_seq: int
    key: str  # the record's own id: a charge's id, a ledger entry's id, an account change's
    reason: str

    def __str__(self) -> str:
        return (f"{self.table} record {self.key!r} of account {self.account!r} (chain_seq "
                f"{self.chain_seq}): {self.reason}")


@dataclass
class Report:
    accounts: int = 0
    records: int = 0
    broken: Broken | None = None
    digest: str = ""  # SHA-256 over every account's head, in account order

    def as_dict(self) -> dict:
        return {"ok": self.broken is None, "accounts": self.accounts, "records": self.records,
                "digest": self.digest,
                "broken": None if self.broken is None else {
                    "table": self.broken.table, "account": self.broken.account,
                    "chain_seq": self.broken.chain_seq, "id": self.broken.key,
                    "reason": self.broken.reason}}


_KEY = {"account": "stream_id", "ledger": "entry_id", "charge": "id"}


def _rows(conn: psycopg.Connection, kind: str, account: str | None) -> Iterator[tuple]:
    cols = dict.fromkeys(COLUMNS[kind] + ("prev_hash", "hash"))
    where = "WHERE account = %s" if account is not None else ""
    with conn.cursor(name=f"verify_{kind}") as cur:
        cur.itersize = 5000
        cur.execute(f"SELECT {', '.join(cols)} FROM {TABLES[kind]} {where} "
                    "ORDER BY account, chain_seq", (account,) if account is not None else None)
        names = list(cols)
        for values in cur:
            row = dict(zip(names, values))
            yield row["account"], row["chain_seq"], kind, row


def verify(conn: psycopg.Connection, account: str | None = None) -> Report:
    """Check the chains (of ``account`` only, if given); the report names the first broken
    record, if any."""
    report = Report()
    digest = hashlib.sha256()
    heads: dict[str, tuple[int, bytes]] = {}
    merged = heapq.merge(*(_rows(conn, kind, account) for kind in COLUMNS),
                         key=lambda t: (t[0], t[1]))
    current: str | None = None
    seq, prev = 0, ZERO

    def close(name: str) -> Broken | None:
        want = heads.pop(name, None)
        if want is None:
            return Broken("chain_heads", name, seq, name, "the account has records but no "
                          "chain head")
        if want != (seq, prev):
            return Broken("chain_heads", name, want[0], name,
                          f"the chain ends at chain_seq {seq}, its head says {want[0]}: "
                          "records were removed or the head was changed")
        digest.update(name.encode() + b"\x00" + prev)
        return None

    with conn.transaction():  # one snapshot for every cursor
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for name, seq_, hash_ in conn.execute(
                "SELECT account, seq, hash FROM chain_heads"
                + (" WHERE account = %s" if account is not None else ""),
                (account,) if account is not None else None):
            heads[name] = (seq_, bytes(hash_))
        for name, chain_seq, kind, row in merged:
            if name != current:
                if current is not None and (broken := close(current)):
                    report.broken = broken
                    return report
                current, seq, prev = name, 0, ZERO
                report.accounts += 1
            report.records += 1
            key = str(row[_KEY[kind]])
            table = TABLES[kind]
            if chain_seq != seq + 1:
                report.broken = Broken(table, name, chain_seq, key,
                                       f"expected chain_seq {seq + 1}: records are missing "
                                       "or repeated")
                return report
            if bytes(row["prev_hash"]) != prev:
                report.broken = Broken(table, name, chain_seq, key,
                                       "prev_hash is not the previous record's hash")
                return report
            if link(prev, kind, row) != bytes(row["hash"]):
                report.broken = Broken(table, name, chain_seq, key,
                                       "its hash does not match its content: the record was "
                                       "changed after it was archived")
                return report
            seq, prev = chain_seq, bytes(row["hash"])
        if current is not None and (broken := close(current)):
            report.broken = broken
            return report
    if heads:
        name = min(heads)
        report.broken = Broken("chain_heads", name, heads[name][0], name,
                               "the head names records that are not in the archive")
        return report
    report.digest = digest.hexdigest()
    return report
