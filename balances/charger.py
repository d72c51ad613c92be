"""Charging a batch of requests against the store: load, decide, save, retry conflicts.

``Charger.charge`` is what an engine worker calls per micro-batch. It keeps the accounts it
has seen in a bounded cache, so a warm batch costs no reads, only its writes; the writes'
version check catches every change made elsewhere (top-ups, sweeps, another engine) and
hands back the fresh state, with which only the affected requests are decided again. The
writes of a large batch are pipelined: it is decided in groups of whole accounts, and each
group's write is sent while the next group is decided.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from balances.codec import decided_records
from balances.store import BalanceStore, Conflict, PendingSave
from charging.compiler import CompiledCatalog
from charging.decide import Catalogs, Outcome, decide_batch
from charging.errors import StoreError
from charging.records import Stored
from charging.requests import Request
from charging.state import Account

MAX_ROUNDS = 8
GROUP_SIZE = 64  # requests per write in flight (a round pipelines up to MAX_GROUPS writes)
MAX_GROUPS = 4


@dataclass(frozen=True)
class _Pinned:
    """The catalogs as one batch sees them: ``current`` fixed when the batch began."""

    current: CompiledCatalog
    source: Catalogs

    def get(self, version: str) -> CompiledCatalog | None:
        return self.current if version == self.current.version else self.source.get(version)


class Charger:
    def __init__(self, store: BalanceStore, catalogs: Catalogs, clock: Callable[[], int],
                 cache_size: int = 200_000):
        self.store = store
        self.catalogs = catalogs
        self.clock = clock  # engine time, epoch ms (injected so tests control it)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Account | None] = OrderedDict()

    def charge(self, requests: Sequence[Request]) -> list[Outcome]:
        """Decide and persist a batch; one outcome per request, in order.

        Each round splits what is pending into groups of whole accounts and sends each
        group's write as soon as it is decided, so Redis runs one group's script while the
        next group is decided; a later round decides again only the conflicted requests.
        """
        results: list[Outcome | None] = [None] * len(requests)
        accounts, previous = self._accounts(requests)
        catalogs = _Pinned(self.catalogs.current, self.catalogs)  # one version per batch
        pending = list(range(len(requests)))
        for _ in range(MAX_ROUNDS):
            pending = self._round(requests, pending, accounts, catalogs, previous, results)
            if not pending:
                return results  # type: ignore[return-value]
        raise StoreError(f"{len(pending)} requests still conflict after {MAX_ROUNDS} rounds "
                         "(accounts changing faster than they can be charged)")

    def _round(self, requests: Sequence[Request], pending: list[int],
               accounts: dict[str, Account | None], catalogs: _Pinned, previous: dict,
               results: list) -> list[int]:
        """Decide and write ``pending``; returns the requests to decide again."""
        groups = [[pending[j] for j in g] for g in _groups([requests[i] for i in pending])]
        sent: list[tuple[list[int], list[Outcome], dict, PendingSave]] = []
        with self.store.pipelined() as connection:
            try:
                for idx in groups:
                    batch = [requests[i] for i in idx]
                    # decide_batch changes these objects in place: they become the cached
                    # truth once written; a conflict replaces them with the store's state,
                    # and any failure before the write is confirmed drops them from the cache.
                    working = {a: accounts[a] for a in {r.account for r in batch}}
                    now_ms = self.clock()
                    outcomes, changes = decide_batch(batch, working, catalogs, now_ms,
                                                     previous)
                    sent.append((idx, outcomes, working,
                                 self.store.send_save(working, changes, outcomes,
                                                      connection=connection, now_ms=now_ms)))
                conflicts = [write.result() for *_, write in sent]
            except Exception:
                for idx in groups:
                    for i in idx:
                        self.forget(requests[i].account)
                raise
        retry: list[int] = []
        for (idx, outcomes, working, _), found in zip(sent, conflicts):
            retry += self._settle(idx, outcomes, working, found, accounts, previous, results)
        return sorted(retry)

    def _settle(self, idx: list[int], outcomes: list[Outcome], working: dict,
                conflicts: dict[str, Conflict], accounts: dict[str, Account | None],
                previous: dict, results: list) -> list[int]:
        """Keep the outcomes of written accounts; returns the requests to decide again."""
        retry = []
        for i, out in zip(idx, outcomes):
            if out.request.account in conflicts:
                retry.append(i)
            else:
                results[i] = out
        for name, acct in working.items():
            if name not in conflicts:
                self._remember(name, acct)
        for name, conflict in conflicts.items():
            accounts[name] = conflict.account
            self._remember(name, conflict.account)
            previous.update(conflict.decided)
        return retry

    def forget(self, account: str) -> None:
        """Drop an account from the cache: the next batch reads it from the store."""
        self._cache.pop(account, None)

    def _accounts(self, batch: Sequence[Request]) -> tuple[dict[str, Account | None],
                                                          dict[tuple[str, str], Stored]]:
        """Cached accounts, plus one load for the rest, and the stored decisions of the
        batch's request ids (the accounts' records; for an account that does not exist, and
        records of releases before 2026-12-03, the keys ``load`` reads)."""
        accounts: dict[str, Account | None] = {}
        missing: dict[str, list[str]] = {}
        for req in batch:
            if req.account in accounts or req.account in missing:
                if req.account in missing:
                    missing[req.account].append(req.id)
                continue
            if req.account in self._cache:
                self._cache.move_to_end(req.account)
                accounts[req.account] = self._cache[req.account]
            else:
                missing[req.account] = [req.id]
        previous: dict[tuple[str, str], Stored] = {}
        if missing:
            loaded, previous = self.store.load(missing, missing)
            for name, acct in loaded.items():
                accounts[name] = acct
                self._remember(name, acct)
        for req in batch:  # the cached accounts' records (load read the others')
            if req.account not in missing:
                acct = accounts[req.account]
                if acct is not None and req.id in acct.records:
                    previous.update(decided_records(acct, (req.id,)))
        return accounts, previous

    def _remember(self, name: str, acct: Account | None) -> None:
        self._cache[name] = acct
        self._cache.move_to_end(name)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def _groups(requests: Sequence[Request]) -> list[list[int]]:
    """Request indices in groups of whole accounts (input order kept within each), about
    ``GROUP_SIZE`` requests each and at most ``MAX_GROUPS``."""
    n = max(1, min(MAX_GROUPS, len(requests) // GROUP_SIZE))
    if n == 1:
        return [list(range(len(requests)))]
    group_of: dict[str, int] = {}
    groups: list[list[int]] = [[] for _ in range(n)]
    for i, req in enumerate(requests):
        g = group_of.get(req.account)
        if g is None:
            g = group_of[req.account] = len(group_of) % n
        groups[g].append(i)
    return [g for g in groups if g]
