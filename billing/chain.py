"""The archive's hash chain: one per account, over its account changes, ledger entries and
charges in the order they were archived (``chain_seq`` 1, 2, 3, ...).

Each record's ``hash`` is SHA-256 over the previous record's hash (32 zero bytes for an
account's first) followed by the record's canonical form: the UTF-8 JSON object of its
archived columns (``COLUMNS``) and ``"kind"``, keys sorted, no whitespace, timestamps as
integer microseconds since 1970 UTC, NULL as null. An edited column, a removed, inserted or
reordered record, each breaks the chain at that record; ``chain_heads`` holds each chain's
last link, so that records cut off at the end are found too (unless that row is edited in
step: keep ``audit verify``'s printed digest elsewhere to rule that out).

Pure: no database here (``billing.audit`` reads the rows, ``billing.archive`` writes them).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import orjson

ZERO = bytes(32)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

#: the archived columns of each kind, as hashed (table: account_changes, ledger, charges)
COLUMNS: dict[str, tuple[str, ...]] = {
    "account": ("account", "chain_seq", "ts", "attrs", "opened", "stream_id"),
    "ledger": ("account", "chain_seq", "entry_id", "ts", "reason", "delta", "balance",
               "released", "actor", "note", "catalog_version", "stream_id"),
    "charge": ("id", "account", "chain_seq", "ts", "service", "session", "seq", "charged_at",
               "units", "rated_units", "allowance_units", "cost", "uncharged", "currency",
               "tariff", "rate", "catalog_version", "balance", "stream_id"),
}
TABLES = {"account": "account_changes", "ledger": "ledger", "charge": "charges"}


def micros_since_epoch(ts: datetime) -> int:
    return (ts - EPOCH) // _US


def canonical(kind: str, row: dict) -> bytes:
    """The canonical form of a record of ``kind`` (``row`` holds at least its COLUMNS)."""
    doc: dict = {"kind": kind}
    for name in COLUMNS[kind]:
        value = row[name]
        doc[name] = micros_since_epoch(value) if isinstance(value, datetime) else value
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def link(prev: bytes, kind: str, row: dict) -> bytes:
    """The hash of a record that follows ``prev``."""
    return hashlib.sha256(prev + canonical(kind, row)).digest()
