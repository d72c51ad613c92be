"""Release the reservations of sessions silent for 2 × validity (CONTRACT §4.2).

``sweep`` finds expired sessions through the per-slot expiry index, and releases them with
the same compare-and-set write as charging, so a sweep racing an engine that is charging
the same account never loses either side's change: the loser re-reads and tries again.
"""

from __future__ import annotations

from balances.store import BalanceStore
from charging.decide import release_silent

MAX_ROUNDS = 8


def sweep(store: BalanceStore, now_ms: int, limit: int = 1000) -> int:
    """Release up to ``limit`` expired sessions; returns how many were released."""
    members = store.expired(now_ms, limit)
    accounts = sorted({a for a, _ in members})
    released = 0
    stale: list[tuple[str, str]] = []
    for _ in range(MAX_ROUNDS):
        if not accounts:
            break
        states, _ = store.load(accounts)
        stale += [(a, s) for a, s in members
                  if a in states and (states[a] is None or s not in states[a].sessions)]
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
    return released
