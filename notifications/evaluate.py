"""Crossings: whether an observation fires a rule's threshold, given its armed/fired state.

Pure: the notifier loads the states, calls these functions and stores what they return.
Each threshold of a rule is a *slot* with its own state (``Slot``). A slot fires once when
its condition becomes true and is then silent until it re-arms:

* ``below`` (low balance): fires when a decision's balance is below the amount; re-arms when
  a later decision shows the balance at or above it again (after a top-up, say).
* ``allowance`` (use of a bucket): fires when the bucket's used units reach the percentage of
  its size; re-arms when the bucket's period renews (a new period label).
* ``final`` (final grant): fires on a decision with ``final: true``; re-arms on a later
  successful grant that is not final.

A replayed observation must not fire again: the id of the request that fired (and of the one
that re-armed) is kept in the slot and an observation with that id changes nothing; an
allowance slot remembers the period it fired in. Event ids are deterministic from account,
slot and crossing (its number, or the period) so a consumer can drop duplicates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from notifications.rules import Rule

LOW_BALANCE, ALLOWANCE_USED, FINAL_GRANT = "low_balance", "allowance_used", "final_grant"


@dataclass(frozen=True)
class Slot:
    """The state of one threshold of one rule for one account."""

    fired: bool = False
    n: int = 0  # crossings so far
    by: str = ""  # the request that fired last
    rearm_by: str = ""  # the request that re-armed last
    period: str = ""  # allowance: the period label it last fired in

    def encode(self) -> dict:
        return {"fired": self.fired, "n": self.n, "by": self.by, "rearm_by": self.rearm_by,
                "period": self.period}

    @classmethod
    def decode(cls, doc: Mapping) -> Slot:
        return cls(bool(doc.get("fired")), int(doc.get("n", 0)), str(doc.get("by", "")),
                   str(doc.get("rearm_by", "")), str(doc.get("period", "")))


@dataclass(frozen=True)
class Crossing:
    """A threshold crossed: what becomes one event on ``chargeflow.notifications``."""

    id: str
    type: str
    account: str
    rule: str
    threshold: str | int | None  # an amount (decimal string), a percentage, or None
    value: str | int | None  # the balance (decimal string), the percentage used, or units
    request: str
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Bucket:
    """An allowance bucket as the notifier sees it: its size (the plan's units per period),
    units left and its period label."""

    size: int
    left: int
    period: str


def crossing_id(account: str, slot: str, mark: str) -> str:
    """The event id: the same crossing gives the same id, whoever computes it."""
    digest = hashlib.sha256(f"{account}\x1f{slot}\x1f{mark}".encode()).hexdigest()
    return f"ntf_{digest[:32]}"


def balance_slot(rule: Rule, micros: int) -> str:
    return f"{rule.id}|below|{micros}"


def final_slot(rule: Rule) -> str:
    return f"{rule.id}|final"


def allowance_slot(rule: Rule, k: int, percent: int) -> str:
    return f"{rule.id}|use|{rule.service}|{k}|{percent}"


def on_decision(rule: Rule, account: str, request: str, balance: int, final: bool,
                granted: int, states: Mapping[str, Slot], format_amount
                ) -> tuple[dict[str, Slot], list[Crossing]]:
    """A successful or refused decision of ``account`` (its balance in micros after it):
    the slots that change and the crossings. ``format_amount`` turns micros into the
    decimal string of the events."""
    updates: dict[str, Slot] = {}
    out: list[Crossing] = []
    for t in rule.below:
        key = balance_slot(rule, t)
        s = states.get(key, Slot())
        if balance < t:
            if not s.fired and request != s.by:
                s = replace(s, fired=True, n=s.n + 1, by=request)
                updates[key] = s
                out.append(Crossing(crossing_id(account, key, str(s.n)), LOW_BALANCE,
                                    account, rule.id, format_amount(t),
                                    format_amount(balance), request))
        elif s.fired and request not in (s.by, s.rearm_by):
            updates[key] = replace(s, fired=False, rearm_by=request)
    if rule.final:
        key = final_slot(rule)
        s = states.get(key, Slot())
        if final:
            if not s.fired and request != s.by:
                s = replace(s, fired=True, n=s.n + 1, by=request)
                updates[key] = s
                out.append(Crossing(crossing_id(account, key, str(s.n)), FINAL_GRANT,
                                    account, rule.id, None, granted, request,
                                    {"balance": format_amount(balance)}))
        elif granted > 0 and s.fired and request not in (s.by, s.rearm_by):
            updates[key] = replace(s, fired=False, rearm_by=request)
    return updates, out


def on_allowance(rule: Rule, account: str, request: str, buckets: Sequence[Bucket],
                 states: Mapping[str, Slot]) -> tuple[dict[str, Slot], list[Crossing]]:
    """The buckets of ``rule.service`` after a charge that took allowance units: each
    percentage reached fires once per bucket period."""
    updates: dict[str, Slot] = {}
    out: list[Crossing] = []
    for k, b in enumerate(buckets):
        if b.size <= 0:
            continue
        used = min(max(b.size - b.left, 0), b.size)
        for pct in rule.percent:
            key = allowance_slot(rule, k, pct)
            s = states.get(key, Slot())
            if used * 100 >= pct * b.size and s.period != b.period:
                updates[key] = replace(s, fired=True, n=s.n + 1, by=request, period=b.period)
                out.append(Crossing(
                    crossing_id(account, key, b.period), ALLOWANCE_USED, account, rule.id,
                    pct, used * 100 // b.size, request,
                    {"service": rule.service, "bucket": k, "used": used, "units": b.size,
                     "period": b.period}))
    return updates, out
