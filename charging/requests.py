"""Decoding and validation of charging requests (CONTRACT §2); pure, no I/O.

``decode`` turns one message (JSON or MessagePack bytes) into a field dict, ``parse``
checks the fields and returns a ``Request``. Both raise ``RequestError`` with a stable
reject code and a detail that names the field and what to send instead:

    TOO_LARGE       payload over 64 KiB
    MALFORMED       not JSON / MessagePack, not UTF-8, not an object, a key given twice,
                    or a value nested more than 32 levels deep
    MISSING_FIELD   a required field is absent
    INVALID_FIELD   a field has the wrong type or an out-of-range value

``reject_record`` is the message a rejected payload becomes (``chargeflow.rejects``).
Every step from bytes to reject is total: no input makes them raise anything but
``RequestError`` (details describe untrusted values with ``charging.untrusted``, never with
``repr`` of a container or ``str`` of a huge integer).
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple, overload

import msgpack
import orjson

from charging.errors import RequestError
from charging.timezones import MAX_TS_MS, MIN_TS_MS
from charging.untrusted import describe, duplicate_problem, nesting_problem, safe_text

MAX_PAYLOAD = 64 * 1024
RAW_LIMIT = 64 * 1024  # bytes of a rejected payload carried in its reject
MAX_UNITS = 2**40
MAX_SEQ = 2**53
KINDS = ("event", "initial", "update", "terminate")
SESSION_KINDS = ("initial", "update", "terminate")
# used with fullmatch: "$" would also match before a trailing newline
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_DESTINATION = re.compile(r"\+?[0-9]{1,32}")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Request(NamedTuple):
    """A validated request (immutable; a NamedTuple because the engine builds one per
    message, three times faster than a frozen dataclass)."""

    id: str
    kind: str
    account: str
    service: str
    ts_ms: int
    used: int = 0
    requested: int = 0
    session: str | None = None
    seq: int | None = None
    destination: str | None = None  # digits only, '+' removed
    plan: str | None = None  # only read by offline rating (`chargeflow rate`)
    reply_to: str | None = None  # a topic that also gets the decision (CONTRACT §6.5)


def decode(payload: object, fmt: str = "json") -> dict:
    """One message's fields; ``payload`` is bytes or str (anything else is MALFORMED, also
    compiled: typed ``object`` so that mypyc does not raise TypeError at the call), ``fmt``
    is ``json`` or ``msgpack``."""
    if isinstance(payload, bytes):
        size = len(payload)
    elif isinstance(payload, str):
        size = len(payload.encode("utf-8", "surrogatepass"))
    else:
        raise RequestError("MALFORMED", f"expected bytes, got {type(payload).__name__}")
    if size > MAX_PAYLOAD:
        raise RequestError("TOO_LARGE", f"payload is {size} bytes; the limit is {MAX_PAYLOAD}")
    if fmt == "msgpack":
        try:
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as exc:  # noqa: BLE001 - whatever the decoder refuses is malformed
            raise RequestError("MALFORMED", f"not valid msgpack: {_reason(exc)}") from exc
        if not isinstance(obj, dict):
            raise RequestError("MALFORMED", f"expected a msgpack map, got {_kind(obj)}")
        # a flat map whose header counts as many keys as it holds gave none twice
        plain = _flat(obj) and _map_size(payload) == len(obj)
    else:
        try:
            obj = orjson.loads(payload)  # nests at most 1,024 levels, or raises
        except orjson.JSONDecodeError as exc:
            raise RequestError("MALFORMED", f"not valid json: {_reason(exc)}") from exc
        if not isinstance(obj, dict):
            raise RequestError("MALFORMED", f"expected a json object, got {_kind(obj)}")
        plain = _json_plain(payload, obj)
    if not plain:
        _check_structure(payload, fmt, obj)
    return obj


def _json_plain(payload: bytes | str, obj: dict) -> bool:
    """True when ``obj``, decoded from ``payload``, is flat and gave no key twice, known
    from one count: every '"' of a JSON text delimits a string or is escaped inside one,
    so the text holds at least twice as many as the strings ``obj`` kept (its keys and
    string values), and more exactly when something is gone from ``obj`` — the earlier
    value of a key given twice, and that key itself — or a string holds an escaped '"'.
    False sends the request to the exact, slower checks (``_check_structure``)."""
    strings = len(obj)
    for val in obj.values():
        if type(val) is str:
            strings += 1
        elif type(val) is dict or type(val) is list:
            return False
    if isinstance(payload, bytes):
        return payload.count(b'"') == 2 * strings
    return payload.count('"') == 2 * strings


def _flat(obj: dict) -> bool:
    for val in obj.values():
        if type(val) is dict or type(val) is list:
            return False
    return True


def _map_size(payload: bytes | str) -> int:
    """The key count in the header of the msgpack map that starts ``payload``."""
    if not isinstance(payload, bytes):
        return -1
    head = payload[0]
    if 0x80 <= head <= 0x8F:
        return head & 0x0F
    if head == 0xDE:
        return int.from_bytes(payload[1:3], "big")
    if head == 0xDF:
        return int.from_bytes(payload[1:5], "big")
    return -1


def _check_structure(payload: bytes | str, fmt: str, obj: dict) -> None:
    """The exact checks for a request the cheap ones could not clear: nesting first (the
    duplicate check decodes again, recursively), then keys given twice."""
    problem = nesting_problem(obj)
    key: object = None
    if problem is None:
        found = duplicate_problem(payload, fmt)
        if found is None:
            return
        problem, key = found
    rid = obj.get("id")
    known = type(rid) is str and 0 < len(rid) <= 128 and key != "id"
    raise RequestError("MALFORMED", problem, rid if known else None)


def _reason(exc: Exception) -> str:
    """A decoder's own words for what is wrong (some say nothing: msgpack's StackError)."""
    return safe_text(str(exc) or type(exc).__name__, 300)


def _kind(obj: object) -> str:
    return "null" if obj is None else type(obj).__name__


def parse(obj: dict, *, rating_only: bool = False) -> Request:
    """Validate a decoded request. ``rating_only`` (offline ``rate``) needs only what rating
    reads: id, service, ts, destination, used; kind and account are checked if present."""
    if not rating_only:
        req = _parse_common(obj)
        if req is not None:
            return req
    return _parse_checked(obj, rating_only)


def _parse_common(obj: dict) -> Request | None:
    """The common shape of a valid request (epoch-ms ``ts``), checked in one expression; None
    for anything else — every invalid request among it — which ``_parse_checked`` then
    checks field by field and names the problem of. Accepts nothing ``_parse_checked``
    refuses, and builds the same ``Request`` (tests/charging/test_requests.py); it saves
    the engine ~1 µs of function calls per message."""
    get = obj.get
    rid, kind, account, service, ts = get("id"), get("kind"), get("account"), \
        get("service"), get("ts")
    used, requested, destination, plan = get("used"), get("requested"), \
        get("destination"), get("plan")
    session, seq, reply_to = get("session"), get("seq"), get("reply_to")
    if not (type(rid) is str and 0 < len(rid) <= 128 and type(kind) is str and kind in KINDS
            and type(account) is str and 0 < len(account) <= 128
            and "{" not in account and "}" not in account
            and type(service) is str and 0 < len(service) <= 64
            and type(ts) is int and MIN_TS_MS <= ts < MAX_TS_MS
            and (used is None or type(used) is int and 0 <= used <= MAX_UNITS)
            and (requested is None or type(requested) is int and 0 <= requested <= MAX_UNITS)
            and (plan is None or type(plan) is str and 0 < len(plan) <= 64)):
        return None
    if session is None:
        if kind != "event":
            return None
    elif not (type(session) is str and 0 < len(session) <= 128):
        return None
    if seq is None:
        if kind != "event":
            return None
    elif not (type(seq) is int and 0 <= seq <= MAX_SEQ):
        return None
    if destination is not None:
        if type(destination) is not str or not _DESTINATION.fullmatch(destination):
            return None
        destination = destination.lstrip("+")
    if reply_to is not None and (type(reply_to) is not str or not _TOPIC.fullmatch(reply_to)):
        return None
    return Request(rid, kind, account, service, ts, used or 0, requested or 0, session, seq,
                   destination, plan, reply_to)


def _parse_checked(obj: dict, rating_only: bool) -> Request:
    rid = _text(obj, "id", None, 128, required=True)
    kind = obj.get("kind")
    if kind is None and not rating_only:
        raise RequestError("MISSING_FIELD", "field 'kind' is required (event, initial, update "
                           "or terminate)", rid)
    if kind is not None and kind not in KINDS:
        raise RequestError("INVALID_FIELD", f"field 'kind' must be one of {', '.join(KINDS)}, "
                           f"got {describe(kind)}", rid)
    account = _text(obj, "account", rid, 128, required=not rating_only)
    if account is not None and ("{" in account or "}" in account):
        # an account's Redis keys carry it as their hash tag, {account}
        raise RequestError("INVALID_FIELD", "field 'account' must not contain '{' or '}', got "
                           f"{describe(account)}", rid)
    service = _text(obj, "service", rid, 64, required=True)
    session = _text(obj, "session", rid, 128, required=kind in SESSION_KINDS)
    seq = _units(obj, "seq", rid, required=kind in SESSION_KINDS, limit=MAX_SEQ)
    return Request(
        id=rid, kind=kind or "event", account=account or "", service=service,
        ts_ms=_timestamp(obj, rid), used=_units(obj, "used", rid) or 0,
        requested=_units(obj, "requested", rid) or 0, session=session, seq=seq,
        destination=_destination(obj, rid), plan=_text(obj, "plan", rid, 64, required=False),
        reply_to=_reply_to(obj, rid),
    )


def _reply_to(obj: dict, rid: str | None) -> str | None:
    val = obj.get("reply_to")
    if val is None:
        return None
    if not isinstance(val, str) or not _TOPIC.fullmatch(val):
        raise RequestError("INVALID_FIELD", "field 'reply_to' must be a Kafka topic name (1-249 "
                           f"of A-Z a-z 0-9 . _ -), got {describe(val)}", rid)
    return val


@overload
def _text(obj: dict, key: str, rid: str | None, limit: int, *, required: Literal[True]
          ) -> str: ...
@overload
def _text(obj: dict, key: str, rid: str | None, limit: int, *, required: bool
          ) -> str | None: ...
def _text(obj: dict, key: str, rid: str | None, limit: int, *, required: bool) -> str | None:
    val = obj.get(key)
    if val is None:
        if required:
            raise RequestError("MISSING_FIELD", f"field {key!r} is required", rid)
        return None
    if not isinstance(val, str) or not 1 <= len(val) <= limit:
        raise RequestError("INVALID_FIELD", f"field {key!r} must be a string of 1-{limit} "
                           f"characters, got {describe(val)}", rid)
    return val


def _units(obj: dict, key: str, rid: str | None, *, required: bool = False,
           limit: int = MAX_UNITS) -> int | None:
    val = obj.get(key)
    if val is None:
        if required:
            raise RequestError("MISSING_FIELD", f"field {key!r} is required", rid)
        return None
    if isinstance(val, bool) or not isinstance(val, int) or not 0 <= val <= limit:
        raise RequestError("INVALID_FIELD", f"field {key!r} must be a whole number from 0 to "
                           f"{limit}, got {describe(val)}", rid)
    return val


def _timestamp(obj: dict, rid: str | None) -> int:
    val = obj.get("ts")
    if val is None:
        raise RequestError("MISSING_FIELD", "field 'ts' is required (RFC 3339 or epoch ms)", rid)
    if isinstance(val, bool):
        ms = None
    elif isinstance(val, int):
        ms = val
    elif isinstance(val, str):
        ms = parse_rfc3339(val)
    else:
        ms = None
    if ms is None:
        raise RequestError("INVALID_FIELD", "field 'ts' must be an RFC 3339 time with an offset "
                           "(2026-11-24T10:00:00+01:00) or epoch milliseconds, got "
                           f"{describe(val)}", rid)
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise RequestError("INVALID_FIELD", f"field 'ts' {describe(val)} is outside the supported "
                           "range 1970-01-01 to 2099-12-31", rid)
    return ms


def parse_rfc3339(text: str) -> int | None:
    """Epoch milliseconds (floored) of an RFC 3339 timestamp with an offset, else None."""
    m = _RFC3339.fullmatch(text)
    if not m:
        return None
    base, frac, zone = m.groups()
    try:
        dt = datetime.fromisoformat(base.replace("t", "T").replace(" ", "T") +
                                    ("+00:00" if zone in "Zz" else zone))
    except ValueError:
        return None
    seconds = (dt - _EPOCH) // timedelta(seconds=1)
    return seconds * 1000 + int((frac or "0").ljust(3, "0")[:3])


def _destination(obj: dict, rid: str | None) -> str | None:
    val = obj.get("destination")
    if val is None:
        return None
    if not isinstance(val, str) or not _DESTINATION.fullmatch(val):
        raise RequestError("INVALID_FIELD", "field 'destination' must be digits with an optional "
                           f"leading '+' (E.164), got {describe(val)}", rid)
    return val.lstrip("+")




def reject_record(exc: RequestError, payload: object) -> dict:
    """A reject: ``{error, detail, id, raw}``, ``raw`` being the payload as UTF-8 text, or
    base64 with ``raw_encoding: "base64"``. A reject must fit a Kafka message: payloads past
    ``RAW_LIMIT`` keep their head only and say ``raw_truncated_from``. Total: whatever the
    payload and the error hold, the record serialises with orjson."""
    if isinstance(payload, bytes):
        raw = payload
    elif isinstance(payload, str):
        raw = payload.encode("utf-8", "surrogatepass")
    else:
        raw = b""  # not a message at all (a Kafka tombstone reaches here as b"")
    rid = exc.request_id
    doc: dict = {"error": safe_text(str(exc.code), 64), "detail": safe_text(str(exc.detail)),
                 "id": safe_text(rid, 128) if isinstance(rid, str) else None}
    head = raw[:RAW_LIMIT]
    try:
        doc["raw"] = head.decode("utf-8")
    except UnicodeDecodeError:
        doc["raw"] = base64.b64encode(head).decode()
        doc["raw_encoding"] = "base64"
    if len(raw) > RAW_LIMIT:
        doc["raw_truncated_from"] = len(raw)
    return doc
