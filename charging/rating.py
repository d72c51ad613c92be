"""Batch rating: requests in, kernel arrays through, per-request outcomes out.

This is the Python side of the kernels (the pandas ``_numba`` split): it picks dtypes,
turns names into indices, calls ``charging.kernels`` once per batch, and maps status codes
back to CONTRACT result codes. One-off rating only (CONTRACT §4.1, the ``rate`` command);
sessions and balances build on ``kernels.step_batch`` / ``kernels.grant_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from charging import kernels
from charging.compiler import MAX_DIGITS, CompiledCatalog
from charging.money import format_micros
from charging.records import Result
from charging.requests import Request

# the §3.1 codes these rules answer with, as plain strings (``charging.records.Result``)
RATING_FAILED = Result.RATING_FAILED.value
SERVICE_DENIED = Result.SERVICE_DENIED.value


@dataclass(frozen=True, slots=True)
class Rated:
    """A one-off rating: cost in micros (rounded per the tariff) or an error code."""

    id: str
    cost_micros: int = 0
    rated_units: int = 0
    tariff: str | None = None
    rate: str | None = None
    decimals: int = 6
    error: str | None = None
    detail: str | None = None

    def as_json(self) -> dict:
        """The ``chargeflow rate`` output line (CONTRACT §5)."""
        if self.error:
            return {"id": self.id, "error": self.error, "detail": self.detail}
        return {
            "id": self.id,
            "cost": format_micros(self.cost_micros, self.decimals),
            "rated_units": self.rated_units,
            "tariff": self.tariff,
            "rate": self.rate,
        }


@dataclass(frozen=True)
class RequestArrays:
    """Kernel inputs for a batch of one-off usages (``kernels.rate_batch``'s arguments)."""

    plan: np.ndarray
    service: np.ndarray
    ts_ms: np.ndarray
    digits: np.ndarray
    ndigits: np.ndarray
    used: np.ndarray

    def __len__(self) -> int:
        return int(self.plan.shape[0])

    def args(self) -> tuple:
        return (self.plan, self.service, self.ts_ms, self.digits, self.ndigits, self.used)


def destination_digits(destinations: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(n × MAX_DIGITS uint8 digits, lengths): numbers longer than the longest catalog
    prefix are cut, which cannot change which prefix matches."""
    n = len(destinations)
    digits = np.zeros((n, MAX_DIGITS), dtype=np.uint8)
    lengths = np.zeros(n, dtype=np.int64)
    for i, d in enumerate(destinations):
        if d:
            raw = np.frombuffer(d[:MAX_DIGITS].encode("ascii"), dtype=np.uint8)
            digits[i, : raw.size] = raw - 48
            lengths[i] = raw.size
    return digits, lengths


def rate_requests(compiled: CompiledCatalog, requests: Sequence[Request],
                  default_plan: str | None = None) -> list[Rated]:
    """Rate each request's ``used`` units as a one-off usage, in order.

    The plan is the request's ``plan``, else ``default_plan``, else the catalog's first.
    """
    fallback = default_plan or compiled.catalog.first_plan()
    n = len(requests)
    plan = np.zeros(n, dtype=np.int64)
    service = np.full(n, -1, dtype=np.int64)
    early: dict[int, Rated] = {}
    for i, req in enumerate(requests):
        name = req.plan or fallback
        p = compiled.plan_index.get(name)
        if p is None:
            early[i] = Rated(req.id, error="INVALID_FIELD",
                             detail=f"plan {name!r} is not in catalog {compiled.version!r}")
            continue
        plan[i] = p
        service[i] = compiled.service_index.get(req.service, -1)
    digits, ndigits = destination_digits([r.destination for r in requests])
    ts = np.fromiter((r.ts_ms for r in requests), dtype=np.int64, count=n)
    used = np.fromiter((r.used for r in requests), dtype=np.int64, count=n)
    status, rate, cost, rated = kernels.rate_batch(
        compiled.tables, plan, service, ts, digits, ndigits, used
    )
    out: list[Rated] = []
    for i, req in enumerate(requests):
        if i in early:
            out.append(early[i])
        else:
            out.append(_outcome(compiled, req, int(status[i]), int(rate[i]), int(cost[i]),
                                int(rated[i]), req.plan or fallback))
    return out


# Why a request is RATING_FAILED (CONTRACT §4.1), in ``chargeflow rate``'s errors and in the
# engine's decisions alike.
def no_rate_detail(tariff: str, destination: str | None, ts_ms: int) -> str:
    return f"no rate of tariff {tariff!r} matches destination {destination!r} at ts {ts_ms}"


def over_limit_detail(units: int) -> str:
    return (f"the cost of {units} units exceeds 9,000,000,000,000, the largest the engine "
            "represents")


def session_over_limit_detail(chargeable: int, used: int) -> str:
    return (f"the session's cost for its {chargeable} units so far and {used} more exceeds "
            "9,000,000,000,000, the largest the engine represents; the session is ended")


def version_gone_detail(session: str, version: str, tariff: str, rate: str) -> str:
    return (f"session {session!r} was opened with catalog version {version!r} (tariff "
            f"{tariff!r}, rate {rate!r}), which is no longer loaded; it is never rated at "
            "another version's prices")


def _outcome(compiled: CompiledCatalog, req: Request, status: int, rate: int, cost: int,
             rated: int, plan: str) -> Rated:
    if status == kernels.NOT_IN_PLAN:
        known = req.service in compiled.service_index
        why = "is not in plan" if known else "is not defined by the catalog, so not in plan"
        return Rated(req.id, error=SERVICE_DENIED, detail=f"service {req.service!r} {why} {plan!r}")
    tariff = compiled.catalog.plans[plan].tariffs[req.service]
    if status == kernels.NO_RATE:
        return Rated(req.id, tariff=tariff, error=RATING_FAILED,
                     detail=no_rate_detail(tariff, req.destination, req.ts_ms))
    if status == kernels.OVER_LIMIT:
        return Rated(req.id, tariff=tariff, rate=compiled.rate_ids[rate], error=RATING_FAILED,
                     detail=over_limit_detail(req.used))
    return Rated(req.id, cost_micros=cost, rated_units=rated, tariff=tariff,
                 rate=compiled.rate_ids[rate], decimals=compiled.catalog.tariffs[tariff].decimals)


def warm_up(compiled: CompiledCatalog) -> None:
    """Load (or compile) every kernel the engine calls, before the first request waits."""
    t = compiled.tables
    empty = np.zeros(0, dtype=np.int64)
    kernels.rate_batch(t, empty, empty, empty, np.zeros((0, MAX_DIGITS), dtype=np.uint8), empty,
                       empty)
    if compiled.rate_ids:
        kernels.units_at(t.rate, t.step, 0, 1)
        kernels.span_at(t.rate, t.step, 0, 0, 1)
        kernels.grant_at(t.rate, t.step, 0, 0, 0, 1, -1)
