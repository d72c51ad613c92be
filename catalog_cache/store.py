"""Catalog versions in Redis, and the compiled active catalog held in memory.

    {p}:{catalog}:versions   hash  version -> catalog YAML text
    {p}:{catalog}:hashes     hash  version -> content hash (a version never changes content)
    {p}:{catalog}:active     string the active version
    {p}:{catalog}:events     pub/sub channel announcing a new active version

``load`` validates, stores and activates a version atomically (one MULTI/EXEC). Workers hold
a ``CatalogCache``: ``current`` is the compiled active catalog, re-checked against Redis at
most every ``check_interval_s`` (a single GET), or at once with ``refresh()``. A batch reads
``current`` once, so it is rated with exactly one version; older versions stay loadable for
sessions that started under them (``get``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import redis
from redis.cluster import RedisCluster

from balances.redis_errors import store_errors
from charging.catalog import Catalog, parse_catalog
from charging.compiler import CompiledCatalog, compile_catalog
from charging.errors import CatalogError, Problem, StoreError

log = logging.getLogger("chargeflow.catalog")


class CatalogKeys:
    def __init__(self, prefix: str = "cf"):
        base = f"{prefix}:{{catalog}}"
        self.versions = f"{base}:versions"
        self.hashes = f"{base}:hashes"
        self.active = f"{base}:active"
        self.events = f"{base}:events"


def load_catalog_text(client: redis.Redis | RedisCluster, text: str, *, prefix: str = "cf",
                      source: str = "catalog") -> Catalog:
    """Validate ``text`` and make it the active catalog version (atomically).

    Re-loading a version with the same content re-activates it; a version already stored
    with other content is refused (versions are immutable: charges name them).
    """
    catalog = parse_catalog(text, source=source)
    keys = CatalogKeys(prefix)
    with store_errors("cannot store the catalog in Redis"):
        stored = client.hget(keys.hashes, catalog.version)
        if stored is not None and stored.decode() != catalog.content_hash:
            raise CatalogError([Problem("version", f"version {catalog.version!r} is already "
                                        "loaded with different content; give this catalog a "
                                        "new version")], source=source)
        pipe = client.pipeline(transaction=True)  # one slot: {catalog}
        pipe.hset(keys.versions, catalog.version, text)
        pipe.hset(keys.hashes, catalog.version, catalog.content_hash)
        pipe.set(keys.active, catalog.version)
        pipe.execute()
        client.publish(keys.events, catalog.version)
    return catalog


class CatalogCache:
    """The compiled active catalog, and older versions on demand (``charging.decide.Catalogs``)."""

    def __init__(self, client: redis.Redis | RedisCluster, *, prefix: str = "cf",
                 check_interval_s: float = 0.1, keep: int = 8,
                 clock: Callable[[], float] = time.monotonic):
        self.r = client
        self.keys = CatalogKeys(prefix)
        self.check_interval_s = check_interval_s
        self.keep = keep
        self.clock = clock
        self._compiled: OrderedDict[str, CompiledCatalog] = OrderedDict()
        self._active: str | None = None
        self._checked = float("-inf")
        self._refused: set[str] = set()  # stored versions this release no longer accepts

    @property
    def current(self) -> CompiledCatalog:
        if self.clock() - self._checked >= self.check_interval_s:
            self.refresh()
        if self._active is None:
            raise StoreError("no catalog is loaded: run `chargeflow catalog load FILE` first")
        try:
            return self._version(self._active)
        except CatalogError as exc:
            # stored when it validated, refused by this release's stricter checks: charging
            # waits (as for a Redis outage) until a corrected version is loaded
            raise StoreError(f"the active catalog version {self._active!r} does not validate "
                             f"any more ({exc}); load a corrected catalog as a new version"
                             ) from exc

    def refresh(self) -> str | None:
        """Read the active version now; returns it (None when no catalog was loaded)."""
        with store_errors("cannot read the active catalog version"):
            active = self.r.get(self.keys.active)
        self._checked = self.clock()
        self._active = active.decode() if active is not None else None
        return self._active

    def get(self, version: str) -> CompiledCatalog | None:
        """An older version for the sessions opened under it; None if it is gone or no
        longer validates (stored before a stricter release): its sessions then answer
        RATING_FAILED rather than be rated at another version's prices."""
        try:
            return self._version(version)
        except KeyError:
            return None
        except CatalogError as exc:
            if version not in self._refused:
                self._refused.add(version)
                log.error("catalog version %r does not validate any more; sessions opened "
                          "under it answer RATING_FAILED: %s", version, exc)
            return None

    def _version(self, version: str) -> CompiledCatalog:
        if version in self._compiled:
            self._compiled.move_to_end(version)
            return self._compiled[version]
        with store_errors(f"cannot read catalog {version!r}"):
            text = self.r.hget(self.keys.versions, version)
        if text is None:
            raise KeyError(version)
        # a stored version validated when it was loaded; one with keys an earlier release
        # passed over (unknown keys were warnings then) rates as it did, with an error logged
        catalog = parse_catalog(text.decode(), source=f"catalog {version}", strict_keys=False)
        if catalog.warnings:
            log.error("catalog version %r has keys this release does not know, ignored as "
                      "when it was loaded: %s; load a corrected catalog as a new version",
                      version, "; ".join(catalog.warnings))
        compiled = compile_catalog(catalog)
        self._compiled[version] = compiled
        while len(self._compiled) > self.keep:
            self._compiled.popitem(last=False)
        return compiled
