"""Release the reservations of sessions silent for 2 × validity (CONTRACT §4.2).

``sweep`` finds expired sessions through the per-slot expiry index, and releases them with
the same compare-and-set write as charging, so a sweep racing an engine that is charging
the same account never loses either side's change: the loser re-reads and tries again.
"""

from __future__ import annotations

import logging

from balances.store import BalanceStore
from charging.decide import release_silent
from charging.errors import CorruptAccountError

log = logging.getLogger("chargeflow.sweeper")

MAX_ROUNDS = 8


def sweep(store: BalanceStore, now_ms: int, limit: int = 1000, pages: int = 10) -> int:
    """Release the expired sessions, ``limit`` index entries at a time and at most ``pages``
    times; returns how many were released.

    The index holds each session's deadline as of its opening, a lower bound once it
    reports again; a session found alive is re-scored to its real deadline, so it comes
    back only when that passes."""
    released = 0
    for _ in range(pages):
        members = store.expired(now_ms, limit)
        released += _sweep_page(store, members, now_ms)
        if len(members) < limit:
            break
    return released


def _sweep_page(store: BalanceStore, members: list[tuple[str, str]], now_ms: int) -> int:
    accounts = sorted({a for a, _ in members})
    released = 0
    stale: list[tuple[str, str]] = []
    alive: dict[tuple[str, str], int] = {}
    for _ in range(MAX_ROUNDS):
        if not accounts:
            break
        states = _readable(store, accounts)
        for a, s in members:
            if a not in states:
                continue
            session = states[a].sessions.get(s) if states[a] is not None else None
            if session is None:
                stale.append((a, s))
            elif session.deadline_ms > now_ms:
                alive[(a, s)] = session.deadline_ms
        changes, ledger = {}, {}
        for name, acct in states.items():
            if acct is None:
                continue
            change, entries = release_silent(acct, now_ms)
            if change.changed:
                changes[name] = change
                ledger[name] = entries
        conflicts = store.save(states, changes, [], ledger)
        released += sum(len(ledger[a]) for a in changes if a not in conflicts)
        accounts = sorted(conflicts)
    store.remove_expiry(stale)  # index entries whose session is gone already
    store.rescore_expiry(alive)  # sessions that reported since their entry was written
    return released


def _readable(store: BalanceStore, accounts: list[str]) -> dict:
    """The accounts' states, in one read; if one cannot be read, one by one without it (and
    logged), so a corrupt account does not keep the others' reservations held."""
    try:
        return store.load(accounts)[0]
    except CorruptAccountError:
        states = {}
        for a in accounts:
            try:
                states.update(store.load([a])[0])
            except CorruptAccountError as exc:
                log.error("sweep skips it: %s", exc)
        return states
