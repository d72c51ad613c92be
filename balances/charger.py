"""Charging a batch of requests against the store: load, decide, save, retry conflicts.

``Charger.charge`` is what an engine worker calls per micro-batch. It keeps the accounts it
has seen in a bounded cache, so a warm batch costs one Redis round trip (the write); the
write's version check catches every change made elsewhere (top-ups, sweeps, another engine)
and hands back the fresh state, with which only the affected requests are decided again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from balances.store import BalanceStore
from charging.compiler import CompiledCatalog
from charging.decide import Catalogs, Outcome, decide_batch
from charging.errors import StoreError
from charging.requests import Request
from charging.state import Account

MAX_ROUNDS = 8


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
        """Decide and persist a batch; one outcome per request, in order."""
        results: list[Outcome | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        accounts, previous = self._accounts([requests[i] for i in pending])
        catalogs = _Pinned(self.catalogs.current, self.catalogs)  # one version per batch
        for _ in range(MAX_ROUNDS):
            batch = [requests[i] for i in pending]
            # decide_batch changes these objects in place: they become the cached truth once
            # written; a conflict replaces them with the store's state, and any failure before
            # the write is confirmed drops them from the cache.
            working = {a: accounts[a] for a in {r.account for r in batch}}
            now = self.clock()
            try:
                outcomes, changes = decide_batch(batch, working, catalogs, now, previous)
                conflicts = self.store.save(working, changes, outcomes)
            except Exception:
                for name in working:
                    self.forget(name)
                raise
            retry = []
            for i, out in zip(pending, outcomes):
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
            if not retry:
                return [r for r in results if r is not None]
            pending = retry
        raise StoreError(f"{len(pending)} requests still conflict after {MAX_ROUNDS} rounds "
                         "(accounts changing faster than they can be charged)")

    def forget(self, account: str) -> None:
        """Drop an account from the cache: the next batch reads it from the store."""
        self._cache.pop(account, None)

    def _accounts(self, batch: Sequence[Request]) -> tuple[dict[str, Account | None],
                                                          dict[tuple[str, str], dict]]:
        """Cached accounts, plus one load for the rest (with their stored decisions)."""
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
        previous: dict[tuple[str, str], dict] = {}
        if missing:
            loaded, previous = self.store.load(missing, missing)
            for name, acct in loaded.items():
                accounts[name] = acct
                self._remember(name, acct)
        return accounts, previous

    def _remember(self, name: str, acct: Account | None) -> None:
        self._cache[name] = acct
        self._cache.move_to_end(name)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
