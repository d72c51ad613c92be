"""An outbox entry as the records it archives (pure: no Redis, no database).

The scripts that change accounts append, in the same atomic step, one entry to the outbox
stream (``balances/codec.py``, ``lua/write.lua``, ``topup.lua``, ``upsert.lua``):

* ``r``: MessagePack ``{account, ledger: [[field, value, ...], ...], account_attrs?}``: the
  account, its ledger entries as their stream fields (``balances.codec.ledger_fields``;
  top-ups add ``actor`` and ``note``), and for ``accounts load`` / the API the attributes
  it set (with an ``open`` ledger entry when it created the account);
* ``c1``, ``c2``, ...: the idempotency records of the requests that charged
  (``balances.codec.decode_record``), whose ``charge`` is CONTRACT §3.2's.

``decode_entry`` turns one into ``(kind, row)`` records, in the order they are chained:
the account change, then the ledger entries, then the charges. Amounts become integer
micros, times ``datetime``s in UTC; the entry's time (its stream id's milliseconds, the
Redis server's clock) is when the ledger entries and charges were written. Anything that
is not what the scripts write raises ``OutboxError`` (the archive keeps such an entry in
``archive_rejects``, it does not guess).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgpack

from balances.codec import decode_record

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ATTRIBUTES = ("plan", "status", "allow_negative", "name", "country", "vat_id", "customer",
              "msisdn", "imsi")
BIGINT = 2**63  # PostgreSQL's bigint holds what is below this in magnitude
_AMOUNT = re.compile(r"(-?)([0-9]{1,19})(?:\.([0-9]{1,6}))?")
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_STREAM_ID = re.compile(rb"([0-9]+)-([0-9]+)")


class OutboxError(ValueError):
    """An outbox entry that is not what the scripts write."""


@dataclass
class Entry:
    """One outbox entry: its account and records (kind, row), in chain order."""

    stream_id: str
    ts: datetime
    account: str
    records: list[tuple[str, dict]]
    attrs: dict | None  # the attributes an upsert set (None for other writes)
    opened: bool


def stream_time(stream_id: bytes | str) -> datetime:
    """The time of a stream entry id ``<ms>-<seq>`` (the server's clock when it was added)."""
    raw = stream_id.encode() if isinstance(stream_id, str) else stream_id
    m = _STREAM_ID.fullmatch(raw)
    if not m:
        raise OutboxError(f"{raw!r} is not a stream entry id")
    return EPOCH + timedelta(milliseconds=int(m[1]))


def id_key(stream_id: bytes | str) -> tuple[int, int]:
    """A stream id as (ms, seq), which compares as Redis orders them."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def micros(text: object, what: str, name: str = "") -> int:
    """Integer micros of a decimal string of at most 6 places (``"-1.50"`` → -1500000)."""
    m = _AMOUNT.fullmatch(text) if isinstance(text, str) else None
    if m:
        value = int(m[2]) * 1_000_000 + int((m[3] or "").ljust(6, "0"))
        if value < BIGINT:
            return -value if m[1] else value
    raise OutboxError(f"{_what(what, name)} {text!r} is not a decimal amount of whole micros "
                      "(of 64 bits)")


def _what(where: str, name: str) -> str:
    # messages are made when needed only: the fields of every record pass through here
    return f"{where}: {name}" if name else where


def _whole(value: object, what: str, name: str = "") -> int:
    """An integer, or the decimal digits of one (a ledger field: micros)."""
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and -BIGINT < value < BIGINT:
        return value
    raise OutboxError(f"{_what(what, name)} {value!r} is not an integer (of 64 bits)")


def _text(value: object, what: str, name: str = "", *, optional: bool = False) -> str | None:
    if type(value) is str or (value is None and optional):
        return value
    raise OutboxError(f"{_what(what, name)} {value!r} is not a string")


def _time(value: object, what: str, name: str = "") -> datetime:
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            ts = None
        if ts is not None and ts.tzinfo is not None:
            return ts.astimezone(UTC)
    raise OutboxError(f"{_what(what, name)} {value!r} is not an RFC 3339 time with an offset")


def _ledger_row(account: str, fields: object, ts: datetime, stream_id: str) -> dict:
    if not isinstance(fields, list) or len(fields) % 2:
        raise OutboxError(f"ledger entry {fields!r} is not a flat list of fields")
    f = dict(zip(fields[::2], fields[1::2]))
    # the usual shape at once (as for charges); else field by field, naming what is wrong
    entry_id, reason, delta, balance = (f.get("id"), f.get("reason"), f.get("delta"),
                                        f.get("balance"))
    if type(entry_id) is str and type(reason) is str and type(delta) is str \
            and type(balance) is str and _INTEGER.fullmatch(delta) \
            and _INTEGER.fullmatch(balance) and "released" not in f \
            and type(f.get("actor", "")) is str and type(f.get("note", "")) is str \
            and type(f.get("catalog_version", "")) is str:
        d, b = int(delta), int(balance)
        if -BIGINT < d < BIGINT and -BIGINT < b < BIGINT:
            return {"account": account, "entry_id": entry_id, "ts": ts, "reason": reason,
                    "delta": d, "balance": b, "released": None,
                    "actor": f.get("actor", "engine"), "note": f.get("note") or None,
                    "catalog_version": f.get("catalog_version") or None,
                    "stream_id": stream_id}
    where = f"ledger entry {f.get('id')!r}"
    released = f.get("released")
    return {
        "account": account, "entry_id": _text(f.get("id"), where, "id"), "ts": ts,
        "reason": _text(f.get("reason"), where, "reason"),
        "delta": _whole(f.get("delta"), where, "delta"),  # micros already
        "balance": _whole(f.get("balance"), where, "balance"),
        "released": None if released is None else _whole(released, where, "released"),
        "actor": _text(f.get("actor", "engine"), where, "actor"),
        "note": _text(f.get("note"), where, "note", optional=True) or None,
        "catalog_version": _text(f.get("catalog_version"), where, "catalog_version",
                                 optional=True) or None,
        "stream_id": stream_id,
    }


_CHARGE_TEXT = ("id", "service", "currency", "tariff", "rate", "catalog_version")
_CHARGE_UNITS = ("units", "rated_units", "allowance_units")


def _charge_row(account: str, blob: bytes, ts: datetime, stream_id: str) -> dict:
    try:
        record = decode_record(blob)
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise OutboxError(f"unreadable charge record: {exc}") from exc
    c = record["charge"]
    # the usual shape, checked at once; anything else goes the field-by-field way below,
    # which names what is wrong (a third of the archive's time went to checking, before)
    if type(c) is dict and c.get("account") == account \
            and all(type(c.get(k)) is str for k in _CHARGE_TEXT) \
            and all(type(c.get(k)) is int and 0 <= c[k] < BIGINT for k in _CHARGE_UNITS) \
            and type(c.get("session", 0)) in (str, type(None)) \
            and type(c.get("seq", 0)) in (int, type(None)) \
            and type(c.get("ts")) is str:
        try:
            row = {"id": c["id"], "account": account, "ts": _time(c["ts"], ""),
                   "service": c["service"], "session": c["session"], "seq": c["seq"],
                   "charged_at": ts, "units": c["units"], "rated_units": c["rated_units"],
                   "allowance_units": c["allowance_units"], "cost": micros(c.get("cost"), ""),
                   "uncharged": micros(c.get("uncharged", "0"), ""),
                   "currency": c["currency"], "tariff": c["tariff"], "rate": c["rate"],
                   "catalog_version": c["catalog_version"],
                   "balance": micros(c.get("balance"), ""), "stream_id": stream_id}
        except (OutboxError, KeyError):
            pass
        else:
            if row["seq"] is None or -BIGINT < row["seq"] < BIGINT:
                return row
    return _checked_charge_row(account, record, c, ts, stream_id)


def _checked_charge_row(account: str, record: dict, c: object, ts: datetime,
                        stream_id: str) -> dict:
    if not isinstance(c, dict):
        raise OutboxError(f"record of request {record['decision'].get('id')!r} has no charge")
    cid = _text(c.get("id"), "charge id")
    where = f"charge {cid!r}"
    if c.get("account") != account:
        raise OutboxError(f"{where} is of account {c.get('account')!r}, its entry of "
                          f"{account!r}")
    seq = c.get("seq")
    return {
        "id": cid, "account": account, "ts": _time(c.get("ts"), where, "ts"),
        "service": _text(c.get("service"), where, "service"),
        "session": _text(c.get("session"), where, "session", optional=True),
        "seq": None if seq is None else _whole(seq, where, "seq"),
        "charged_at": ts,
        "units": _whole(c.get("units"), where, "units"),
        "rated_units": _whole(c.get("rated_units"), where, "rated_units"),
        "allowance_units": _whole(c.get("allowance_units"), where, "allowance_units"),
        "cost": micros(c.get("cost"), where, "cost"),
        "uncharged": micros(c.get("uncharged", "0"), where, "uncharged"),
        "currency": _text(c.get("currency"), where, "currency"),
        "tariff": _text(c.get("tariff"), where, "tariff"),
        "rate": _text(c.get("rate"), where, "rate"),
        "catalog_version": _text(c.get("catalog_version"), where, "catalog_version"),
        "balance": micros(c.get("balance"), where, "balance"),
        "stream_id": stream_id,
    }


def decode_entry(stream_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    """The records of one outbox entry (``OutboxError`` when it is not one)."""
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ts = stream_time(sid)
    try:
        doc = msgpack.unpackb(fields[b"r"], raw=False)
    except KeyError:
        raise OutboxError("no field 'r'") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise OutboxError(f"field 'r' is not MessagePack: {exc}") from exc
    if not isinstance(doc, dict):
        raise OutboxError(f"field 'r' is {type(doc).__name__}, not a map")
    account = _text(doc.get("account"), "account")
    if not account:
        raise OutboxError("empty account")
    ledger = doc.get("ledger") or []  # Lua packs an empty table as a map or a list
    if not isinstance(ledger, list):
        raise OutboxError(f"ledger {ledger!r} is not a list")
    records: list[tuple[str, dict]] = []
    attrs = doc.get("account_attrs")
    entries = [_ledger_row(account, f, ts, sid) for f in ledger]
    opened = any(e["reason"] == "open" for e in entries)
    if attrs is not None:
        if not isinstance(attrs, dict) or not all(isinstance(k, str) for k in attrs):
            raise OutboxError(f"account_attrs {attrs!r} is not a map of names")
        records.append(("account", {"account": account, "ts": ts, "attrs": attrs,
                                    "opened": opened, "stream_id": sid}))
    records += [("ledger", e) for e in entries]
    k = 1
    while (blob := fields.get(b"c%d" % k)) is not None:
        records.append(("charge", _charge_row(account, blob, ts, sid)))
        k += 1
    if len(fields) != k:  # r, c1 .. c(k-1): nothing else
        raise OutboxError(f"unexpected fields {sorted(fields)!r}")
    return Entry(sid, ts, account, records, attrs, opened)
