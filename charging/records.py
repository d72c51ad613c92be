"""What charging decides, typed, and its wire form (CONTRACT §3.1 decisions, §3.2 charges).

The charging rules (``charging.decide``) fill ``Decision`` and ``Charge`` records: a
``Result``, units as ints, money as integer micros with the tariff's decimals beside it. Each
wire format turns them into its own shape at its edge: ``decision_wire`` and ``charge_wire``
build the §3.1/§3.2 objects (decimal strings, field order ``DECISION_FIELDS``/
``CHARGE_FIELDS``) that the Kafka/JSONL encoder writes and the store keeps as a request's
idempotency record; ``decision_from_wire`` and ``charge_from_wire`` read such an object back
(a record stored by this or an earlier version, replayed), exactly: formatting what they
read gives the same object again.

Plain classes with written-out ``__init__``s (compiled by mypyc: a dataclass's generated
``__init__`` stays interpreted Python, and a decision is made per request); ``__eq__`` and
``__repr__`` are the dataclass's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache

from charging.money import MICROS, format_amount


class Result(StrEnum):
    """A decision's result (CONTRACT §3.1), its value the code on the wire."""

    SUCCESS = "SUCCESS"
    CREDIT_LIMIT_REACHED = "CREDIT_LIMIT_REACHED"  # no money or allowance for any unit
    USER_UNKNOWN = "USER_UNKNOWN"  # no such account
    SERVICE_DENIED = "END_USER_SERVICE_DENIED"  # account blocked, or service not in the plan
    RATING_FAILED = "RATING_FAILED"  # no rate matches, or beyond the engine's range
    SESSION_UNKNOWN = "SESSION_UNKNOWN"  # a step of a session the engine does not hold


#: The fields of a decision (CONTRACT §3.1, without latency_us, which the engine adds; a
#: RATING_FAILED decision may carry ``detail`` after them) and of a charge (§3.2), in wire
#: order; the store keeps records in this order (``balances.codec.encode_record``).
DECISION_FIELDS = ("id", "kind", "account", "service", "session", "seq", "result", "granted",
                   "validity_s", "final", "balance", "charged")
CHARGE_FIELDS = ("id", "account", "service", "session", "seq", "ts", "units", "rated_units",
                 "allowance_units", "cost", "currency", "tariff", "rate", "catalog_version",
                 "balance", "uncharged")


@dataclass
class Decision:
    """One request's decision. ``balance`` (micros, after the request) is None for an
    unknown account; ``charged`` (micros) is written with at least ``decimals`` places, the
    tariff's (2 where no tariff applies); ``detail`` says why, for RATING_FAILED."""

    id: str
    kind: str
    account: str
    service: str
    session: str | None
    seq: int | None
    result: Result
    granted: int = 0  # units
    validity_s: int = 0
    final: bool = False
    balance: int | None = None  # micros
    charged: int = 0  # micros
    decimals: int = 2
    detail: str | None = None

    def __init__(self, id: str, kind: str, account: str, service: str, session: str | None,
                 seq: int | None, result: Result, granted: int = 0, validity_s: int = 0,
                 final: bool = False, balance: int | None = None, charged: int = 0,
                 decimals: int = 2, detail: str | None = None) -> None:
        self.id = id
        self.kind = kind
        self.account = account
        self.service = service
        self.session = session
        self.seq = seq
        self.result = result
        self.granted = granted
        self.validity_s = validity_s
        self.final = final
        self.balance = balance
        self.charged = charged
        self.decimals = decimals
        self.detail = detail

    def __reduce__(self) -> tuple:
        # copy and pickle rebuild through __init__ (compiled, there is no other way in)
        return Decision, (self.id, self.kind, self.account, self.service, self.session,
                          self.seq, self.result, self.granted, self.validity_s, self.final,
                          self.balance, self.charged, self.decimals, self.detail)


@dataclass
class Charge:
    """What one request charged (money, allowance, or money owed): units as ints, ``cost``,
    ``balance`` (after) and ``uncharged`` in micros written with at least ``decimals``
    places (the tariff's), ``ts_ms`` the request's time (epoch ms)."""

    id: str
    account: str
    service: str
    session: str | None
    seq: int | None
    ts_ms: int
    units: int
    rated_units: int
    allowance_units: int
    cost: int  # micros taken
    currency: str
    tariff: str
    rate: str
    catalog_version: str
    balance: int  # micros, after
    uncharged: int  # micros owed that the balance could not pay
    decimals: int

    def __init__(self, id: str, account: str, service: str, session: str | None,
                 seq: int | None, ts_ms: int, units: int, rated_units: int,
                 allowance_units: int, cost: int, currency: str, tariff: str, rate: str,
                 catalog_version: str, balance: int, uncharged: int, decimals: int) -> None:
        self.id = id
        self.account = account
        self.service = service
        self.session = session
        self.seq = seq
        self.ts_ms = ts_ms
        self.units = units
        self.rated_units = rated_units
        self.allowance_units = allowance_units
        self.cost = cost
        self.currency = currency
        self.tariff = tariff
        self.rate = rate
        self.catalog_version = catalog_version
        self.balance = balance
        self.uncharged = uncharged
        self.decimals = decimals

    def __reduce__(self) -> tuple:
        return Charge, (self.id, self.account, self.service, self.session, self.seq,
                        self.ts_ms, self.units, self.rated_units, self.allowance_units,
                        self.cost, self.currency, self.tariff, self.rate,
                        self.catalog_version, self.balance, self.uncharged, self.decimals)


class Stored:
    """A request's first outputs, as a replay returns them: typed, and — when read from
    the store — the wire record they were read from (``wire``: {"decision", "charge"}),
    which a replay then emits as it was stored, byte for byte."""

    def __init__(self, decision: Decision, charge: Charge | None,
                 wire: dict | None = None) -> None:
        self.decision = decision
        self.charge = charge
        self.wire = wire

    def __reduce__(self) -> tuple:
        return Stored, (self.decision, self.charge, self.wire)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Stored) and self.decision == other.decision
                and self.charge == other.charge)

    def __repr__(self) -> str:
        return f"Stored({self.decision!r}, {self.charge!r})"


# -- to the wire --------------------------------------------------------------------------

def format_balance(micros: int) -> str:
    """A balance as a decimal string with at least two decimals: ``12.3456``, ``10.00``."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    if frac % 10_000 == 0:
        return f"{sign}{whole}.{frac // 10_000:02d}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def format_ts(ts_ms: int) -> str:
    """Epoch ms as RFC 3339 UTC with milliseconds: ``2026-12-03T10:00:00.250Z``."""
    return f"{_second(ts_ms // 1000)}.{ts_ms % 1000:03d}Z"


def decision_wire(d: Decision) -> dict:
    """The decision as CONTRACT §3.1 has it (without latency_us), in ``DECISION_FIELDS``
    order, ``detail`` last when there is one."""
    doc = {
        "id": d.id, "kind": d.kind, "account": d.account, "service": d.service,
        # str(), not .value: the same string (a StrEnum), and no property call per request
        "session": d.session, "seq": d.seq, "result": str(d.result), "granted": d.granted,
        "validity_s": d.validity_s, "final": d.final,
        "balance": format_balance(d.balance) if d.balance is not None else None,
        "charged": format_amount(d.charged, d.decimals),
    }
    if d.detail is not None:
        doc["detail"] = d.detail
    return doc


def charge_wire(c: Charge, decision: Decision | None = None,
                decision_doc: dict | None = None) -> dict:
    """The charge as CONTRACT §3.2 has it, in ``CHARGE_FIELDS`` order. Given its decision
    and that decision's wire form, the strings they share (a charge's cost is its
    decision's ``charged``, its balance the decision's) are taken from there rather than
    formatted again: the same strings, made once per request."""
    if decision is not None and decision_doc is not None and c.cost == decision.charged \
            and c.decimals == decision.decimals:
        cost = decision_doc["charged"]
    else:
        cost = format_amount(c.cost, c.decimals)
    if decision is not None and decision_doc is not None and c.balance == decision.balance:
        balance = decision_doc["balance"]
    else:
        balance = format_balance(c.balance)
    return {
        "id": c.id, "account": c.account, "service": c.service, "session": c.session,
        "seq": c.seq, "ts": format_ts(c.ts_ms), "units": c.units,
        "rated_units": c.rated_units, "allowance_units": c.allowance_units,
        "cost": cost, "currency": c.currency, "tariff": c.tariff, "rate": c.rate,
        "catalog_version": c.catalog_version, "balance": balance,
        "uncharged": format_amount(c.uncharged, c.decimals) if c.uncharged else "0",
    }


# -- from the wire (stored records) ---------------------------------------------------------

def parse_amount(text: object, field: str) -> tuple[int, int]:
    """A decimal string the formatters above wrote, as (micros, decimal places). Raises
    ``ValueError`` naming ``field`` for anything else."""
    if not isinstance(text, str):
        raise ValueError(f"{field}: {text!r} is not a decimal string")
    body = text[1:] if text[:1] == "-" else text
    whole, dot, frac = body.partition(".")
    if not whole.isdigit() or not whole.isascii() or len(frac) > 6 or \
            (dot and not (frac.isdigit() and frac.isascii())):
        raise ValueError(f"{field}: {text!r} is not a decimal string of at most 6 places")
    micros = int(whole) * MICROS + (int(frac.ljust(6, "0")) if frac else 0)
    return (-micros if text[:1] == "-" else micros), len(frac)


def _int(doc: dict, field: str, optional: bool = False) -> int | None:
    value = doc.get(field)
    if value is None and optional:
        return None
    if type(value) is not int:
        raise ValueError(f"{field}: {value!r} is not an integer")
    return value


def _str(doc: dict, field: str, optional: bool = False) -> str | None:
    value = doc.get(field)
    if value is None and optional:
        return None
    if type(value) is not str:
        raise ValueError(f"{field}: {value!r} is not a string")
    return value


def decision_from_wire(doc: dict) -> Decision:
    """A §3.1 decision (as ``decision_wire`` wrote it) read back; ``ValueError`` if it is
    not one. ``decision_wire`` of the result gives ``doc`` again."""
    balance = doc.get("balance")
    charged, decimals = parse_amount(doc.get("charged"), "charged")
    final = doc.get("final")
    if type(final) is not bool:
        raise ValueError(f"final: {final!r} is not a boolean")
    return Decision(
        id=_str(doc, "id") or "", kind=_str(doc, "kind") or "",
        account=_str(doc, "account") or "", service=_str(doc, "service") or "",
        session=_str(doc, "session", True), seq=_int(doc, "seq", True),
        result=Result(_str(doc, "result") or ""), granted=_int(doc, "granted") or 0,
        validity_s=_int(doc, "validity_s") or 0, final=final,
        balance=None if balance is None else parse_amount(balance, "balance")[0],
        charged=charged, decimals=decimals, detail=_str(doc, "detail", True))


def charge_from_wire(doc: dict) -> Charge:
    """A §3.2 charge (as ``charge_wire`` wrote it) read back; ``ValueError`` if it is not
    one. ``charge_wire`` of the result gives ``doc`` again: the decimals are the fewest
    places of ``cost`` and ``uncharged``, with which both are written as they are."""
    cost, places = parse_amount(doc.get("cost"), "cost")
    uncharged, owed_places = parse_amount(doc.get("uncharged"), "uncharged")
    if uncharged:
        places = min(places, owed_places)
    ts = _str(doc, "ts") or ""
    try:
        when = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"ts: {ts!r} is not an RFC 3339 UTC time with milliseconds") from exc
    ts_ms = (when - _EPOCH) // timedelta(milliseconds=1)
    return Charge(
        id=_str(doc, "id") or "", account=_str(doc, "account") or "",
        service=_str(doc, "service") or "", session=_str(doc, "session", True),
        seq=_int(doc, "seq", True), ts_ms=ts_ms, units=_int(doc, "units") or 0,
        rated_units=_int(doc, "rated_units") or 0,
        allowance_units=_int(doc, "allowance_units") or 0, cost=cost,
        currency=_str(doc, "currency") or "", tariff=_str(doc, "tariff") or "",
        rate=_str(doc, "rate") or "", catalog_version=_str(doc, "catalog_version") or "",
        balance=parse_amount(doc.get("balance"), "balance")[0], uncharged=uncharged,
        decimals=places)


def stored_from_wire(record: dict) -> Stored:
    """A stored idempotency record ({"decision", "charge"} in wire form) as its typed
    outputs, keeping the record to replay as it is."""
    charge = record.get("charge")
    return Stored(decision_from_wire(record["decision"]),
                  None if charge is None else charge_from_wire(charge), record)
