"""The allowance buckets of CONTRACT §4.2: free units of a service, used before money.

An account keeps per service a list of ``Bucket``s matching its plan's allowances of that
service by position: the units left in the bucket's current period and the units open
sessions hold. ``Buckets`` (one per batch, caching the plan's allowances and the period
labels) creates and refills them; the functions below take, hold and return units. Each
says whether it changed a bucket, so that the charging rules (``charging.decide``) mark the
service's buckets for the store to write.
"""

from __future__ import annotations

from charging.catalog import MAX_ALLOWANCE_UNITS
from charging.compiler import CompiledCatalog
from charging.state import LABEL_LENGTH, Account, Bucket, Session, label_as, period_label


def free_units(acct: Account, service: str) -> int:
    """Units of the service's buckets not held by sessions, capped where the kernels'
    int64 ends: a catalog's allowances of a service add up to at most 2**62, but buckets
    kept from an older catalog may add to more."""
    buckets = acct.allowances.get(service)
    return min(sum(b.free for b in buckets), MAX_ALLOWANCE_UNITS) if buckets else 0


def consume(acct: Account, service: str, units: int) -> bool:
    """Take ``units`` free units (at most ``free_units``), first bucket first."""
    if not units:
        return False
    for bucket in acct.allowances.get(service, []):
        part = min(units, bucket.free)
        bucket.units -= part
        units -= part
    return True


def hold(acct: Account, session: Session, units: int) -> bool:
    """Hold ``units`` free units of the session's service for its grant, first bucket
    first; ``session.allowance_reserved`` says how many per bucket."""
    buckets = acct.allowances.get(session.service, [])
    session.allowance_reserved = [0] * len(buckets)
    held = units
    for k, bucket in enumerate(buckets):
        part = min(held, bucket.free)
        bucket.reserved += part
        session.allowance_reserved[k] = part
        held -= part
    return units > 0


def unhold(acct: Account, session: Session) -> bool:
    """Return the units a session holds to its buckets (``allowance_reserved`` is left as
    it was: the caller clears it, or drops the session)."""
    held = session.allowance_reserved
    if not any(held):
        return False
    for bucket, units in zip(acct.allowances.get(session.service, []), held):
        bucket.reserved -= units
    return True


class Buckets:
    """Creates and refills an account's buckets for one batch (one catalog version)."""

    def __init__(self, cc: CompiledCatalog) -> None:
        self.cc = cc
        self._allowances: dict[tuple[str, str], list] = {}
        self._labels: dict[tuple[str, int], str] = {}

    def refresh(self, acct: Account, service: str, ts_ms: int) -> bool:
        """Create the plan's allowance buckets for the service, refill those whose period
        rolled over (periods in the catalog time zone, by the request's time).

        Buckets match the plan's allowances of the service by position. When a new catalog
        adds one, it is appended; when it drops one, the bucket stays (sessions may still hold
        units of it) with no units left to give.
        """
        wanted = self.allowances_of(acct.plan, service)
        if not wanted and not acct.allowances.get(service):
            return False
        buckets = acct.allowances.setdefault(service, [])
        changed = False
        for k, allowance in enumerate(wanted):
            label = self.period_label(allowance.period, ts_ms)
            if k == len(buckets):
                buckets.append(Bucket(units=allowance.units, period=label))
                changed = True
                continue
            held = buckets[k].period
            if len(held) != LABEL_LENGTH[allowance.period]:
                # a new catalog changed the period's kind (week -> month, say): compare in
                # the new kind from the day the bucket's period began; within that period
                # the bucket takes its label in the new kind and keeps what is left
                held = label_as(held, allowance.period)
                if label <= held:  # (a late request's earlier label must not move it back)
                    buckets[k].period = held
                    changed = True
            if label > held:
                buckets[k].units = allowance.units
                buckets[k].period = label
                changed = True
        for bucket in buckets[len(wanted):]:
            changed = changed or bucket.units != 0
            bucket.units = 0
        return changed

    def allowances_of(self, plan: str, service: str) -> list:
        key = (plan, service)
        found = self._allowances.get(key)
        if found is None:
            p = self.cc.catalog.plans.get(plan)
            found = [a for a in p.allowances if a.service == service] if p else []
            self._allowances[key] = found
        return found

    def period_label(self, period: str, ts_ms: int) -> str:
        # Every UTC offset is a multiple of 15 minutes, so no local day, week or month
        # starts inside a 15-minute slot of UTC time: one label per slot.
        key = (period, ts_ms // 900_000)
        label = self._labels.get(key)
        if label is None:
            label = self._labels[key] = period_label(period, ts_ms, self.cc.catalog.zone)
        return label
