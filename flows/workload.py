"""Synthetic traffic as kernel-ready arrays, for the demo and the benchmarks.

Usage is drawn per service unit the way a mobile network looks: calls of a few minutes to a
mixture of the catalog's destinations (and some that match nothing specific), data sessions
of a few megabytes, single SMS events, spread over one week so every band is exercised.
"""

from __future__ import annotations

import numpy as np

from charging.compiler import MAX_DIGITS, CompiledCatalog
from charging.rating import RequestArrays

WEEK_MS = 7 * 86400 * 1000
START_MS = 1_795_824_000_000  # 2026-11-28T00:00Z; the week after it spans every band


def generate(compiled: CompiledCatalog, n: int, rng: np.random.Generator,
             plan: str | None = None) -> RequestArrays:
    """n usages against ``plan`` (default: the catalog's first plan)."""
    cat = compiled.catalog
    plan_name = plan or cat.first_plan()
    services = list(cat.plans[plan_name].tariffs) or list(cat.services)
    svc_names = rng.choice(np.array(services, dtype=object), size=n)
    service = np.array([compiled.service_index[s] for s in svc_names], dtype=np.int64)
    used = np.empty(n, dtype=np.int64)
    for name in set(services):
        mask = svc_names == name
        used[mask] = _usage(cat.services[name], int(mask.sum()), rng)
    prefixes = [p for group in cat.destinations.values() for p in group] or ["1"]
    pick = rng.integers(0, len(prefixes), size=n)
    digits = rng.integers(0, 10, size=(n, MAX_DIGITS), dtype=np.uint8)
    ndigits = rng.integers(9, 13, size=n).astype(np.int64)
    foreign = rng.random(n) < 0.1  # numbers that match no specific prefix
    for i in range(n):
        if not foreign[i]:
            p = prefixes[pick[i]]
            digits[i, : len(p)] = np.frombuffer(p.encode(), dtype=np.uint8) - 48
            ndigits[i] = max(ndigits[i], len(p))
    return RequestArrays(
        plan=np.full(n, compiled.plan_index[plan_name], dtype=np.int64),
        service=service,
        ts_ms=START_MS + rng.integers(0, WEEK_MS, size=n, dtype=np.int64),
        digits=digits,
        ndigits=ndigits,
        used=used,
    )


def _usage(unit: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if unit in ("second", "seconds", "s"):
        return np.minimum(rng.exponential(150.0, size=n), 7200).astype(np.int64)
    if unit in ("byte", "bytes"):
        return rng.lognormal(15.0, 1.5, size=n).astype(np.int64)  # median ~3.3 MB
    if unit in ("event", "events"):
        return np.ones(n, dtype=np.int64)
    return rng.integers(0, 1000, size=n, dtype=np.int64)
