"""Account, allowance and session state as the charging logic sees it (pure data).

The balances layer loads these from Redis and writes back what the charging logic changed;
the charging logic (``charging.decide``) reads and mutates them in memory. Money is integer
micros, units are integers, times are epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

ACTIVE, BLOCKED = "active", "blocked"


@dataclass
class Bucket:
    """One allowance of the plan: free units left in the current period, and those held."""

    units: int  # left in this period
    reserved: int = 0  # held by open sessions
    period: str = "-"  # label of the period the units belong to (see ``period_label``)

    @property
    def free(self) -> int:
        return max(0, self.units - self.reserved)


@dataclass
class Session:
    """An open charging session (CONTRACT §4.2): its fixed rate, usage so far and grant."""

    id: str
    service: str
    catalog_version: str
    tariff: str
    rate_id: str
    chargeable: int = 0  # C: cumulative units rated with money
    used: int = 0  # cumulative units reported
    granted: int = 0  # units of the current grant
    money_reserved: int = 0  # micros held for the current grant
    allowance_reserved: list[int] = field(default_factory=list)  # units held, per bucket
    validity_s: int = 600
    last_seen_ms: int = 0  # engine clock at the last step
    seq: int = 0

    # Written out, not generated: compiled (mypyc), a dataclass's generated __init__ stays
    # interpreted Python. __eq__ and __repr__ are the dataclass's.
    def __init__(self, id: str, service: str, catalog_version: str, tariff: str,
                 rate_id: str, chargeable: int = 0, used: int = 0, granted: int = 0,
                 money_reserved: int = 0, allowance_reserved: list[int] | None = None,
                 validity_s: int = 600, last_seen_ms: int = 0, seq: int = 0) -> None:
        self.id = id
        self.service = service
        self.catalog_version = catalog_version
        self.tariff = tariff
        self.rate_id = rate_id
        self.chargeable = chargeable
        self.used = used
        self.granted = granted
        self.money_reserved = money_reserved
        self.allowance_reserved = [] if allowance_reserved is None else allowance_reserved
        self.validity_s = validity_s
        self.last_seen_ms = last_seen_ms
        self.seq = seq

    def __reduce__(self) -> tuple:
        # copy and pickle rebuild through __init__: compiled, an object cannot be made
        # without its __init__'s arguments
        return Session, (self.id, self.service, self.catalog_version, self.tariff,
                         self.rate_id, self.chargeable, self.used, self.granted,
                         self.money_reserved, self.allowance_reserved, self.validity_s,
                         self.last_seen_ms, self.seq)

    @property
    def deadline_ms(self) -> int:
        """Engine time after which the session is released as silent (2 × validity)."""
        return self.last_seen_ms + 2 * self.validity_s * 1000


@dataclass
class Account:
    id: str
    plan: str
    balance: int  # micros
    status: str = ACTIVE
    allow_negative: bool = False
    reserved: int = 0  # micros held by all open sessions
    version: int = 0  # bumped by every change; the store's optimistic-concurrency token
    allowances: dict[str, list[Bucket]] = field(default_factory=dict)  # service -> buckets
    sessions: dict[str, Session] = field(default_factory=dict)
    #: the store's idempotency records of the account's recent requests, request id ->
    #: bytes only the store reads (balances.codec), oldest first: a repeated id is found here
    records: dict[str, bytes] = field(default_factory=dict)

    def available(self) -> int | None:
        """Money that may be taken or reserved now, or None when negative balances are allowed."""
        return None if self.allow_negative else self.balance - self.reserved


def period_label(period: str, ts_ms: int, zone: ZoneInfo) -> str:
    """The allowance period holding ``ts_ms`` in the catalog zone; labels sort in time order."""
    if period == "none":
        return "-"
    return _label(period, datetime.fromtimestamp(ts_ms // 1000, tz=zone).date())


def _label(period: str, day: date) -> str:
    """The label of the ``period`` (day, week or month) holding ``day``."""
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if period == "month":
        return f"{day.year:04d}-{day.month:02d}"
    raise ValueError(f"unknown allowance period {period!r}")


#: The length of each period's labels ("-", "2026-11", "2026-W48", "2026-11-24").
LABEL_LENGTH = {"none": 1, "month": 7, "week": 8, "day": 10}


def label_as(label: str, period: str) -> str:
    """The ``period`` label of the day on which the allowance period ``label`` (of another
    kind) began, for a bucket whose catalog changed its period: "" for a bucket that had no
    period (it began before any)."""
    if label == "-":
        return "-" if period == "none" else ""
    if "W" in label:
        year, week = label.split("-W")
        day = date.fromisocalendar(int(year), int(week), 1)
    elif len(label) == LABEL_LENGTH["month"]:
        day = date(int(label[:4]), int(label[5:7]), 1)
    else:
        day = date.fromisoformat(label)
    return "-" if period == "none" else _label(period, day)
