"""The baseline's account state: what its store keeps per account, as one JSON document.

Plain data, no rules: the balance (micros), the allowance buckets of each service and the
open sessions with what they hold. ``dump_state`` is deterministic (equal state, equal bytes),
so the store can tell an unchanged account by its bytes and skip writing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson


@dataclass(slots=True)
class Bucket:
    """One allowance of the plan: units left in the current period and units held."""

    units: int
    reserved: int = 0
    period: str = "-"  # label of the period the units belong to; labels sort in time order

    @property
    def free(self) -> int:
        return max(0, self.units - self.reserved)


@dataclass(slots=True)
class Session:
    """An open session: the rate chosen at its initial, usage so far and its reservation."""

    service: str
    tariff: str
    rate: str  # the rate's id within the tariff
    catalog_version: str
    chargeable: int = 0  # C: cumulative units rated with money
    used: int = 0  # cumulative units reported
    granted: int = 0  # units of the current grant
    money: int = 0  # micros held for the current grant
    held: list[int] = field(default_factory=list)  # allowance units held, per bucket
    validity_s: int = 600
    last_seen_ms: int = 0  # baseline clock at the last step (for a sweeper)
    seq: int = 0


@dataclass(slots=True)
class AccountState:
    plan: str
    balance: int  # micros
    status: str = "active"
    allow_negative: bool = False
    buckets: dict[str, list[Bucket]] = field(default_factory=dict)  # service -> buckets
    sessions: dict[str, Session] = field(default_factory=dict)

    @property
    def reserved(self) -> int:
        """Micros held by the open sessions."""
        return sum(s.money for s in self.sessions.values())

    def available(self) -> int | None:
        """Micros that may be taken or reserved now; None when negative balances are allowed."""
        return None if self.allow_negative else self.balance - self.reserved

    def free_units(self, service: str) -> int:
        return sum(b.free for b in self.buckets.get(service, ()))


def dump_state(acct: AccountState) -> bytes:
    """The account as the JSON document the store keeps."""
    return orjson.dumps({
        "plan": acct.plan, "status": acct.status, "neg": acct.allow_negative,
        "bal": acct.balance,
        "b": {svc: [[b.units, b.reserved, b.period] for b in bs]
              for svc, bs in acct.buckets.items()},
        "s": {sid: [s.service, s.tariff, s.rate, s.catalog_version, s.chargeable, s.used,
                    s.granted, s.money, s.held, s.validity_s, s.last_seen_ms, s.seq]
              for sid, s in acct.sessions.items()},
    })


def load_state(blob: bytes | None) -> AccountState | None:
    if blob is None:
        return None
    doc = orjson.loads(blob)
    return AccountState(
        plan=doc["plan"], balance=doc["bal"], status=doc["status"], allow_negative=doc["neg"],
        buckets={svc: [Bucket(u, r, p) for u, r, p in bs] for svc, bs in doc["b"].items()},
        sessions={sid: Session(*row) for sid, row in doc["s"].items()},
    )
