"""The charging service: validated requests in, outcomes out, whatever the transport.

Every door — the Kafka/Bytewax flow, the JSONL mode, the benchmarks, and in-process gateways
— decodes its own wire format into ``charging.requests.Request``s, calls ``decide`` and
formats the outcomes its own way (model: CGRateS's agents calling the session service). An
outcome's decision and charge are typed (``charging.records``: a ``Result``, units and money
as integers, micros); ``Outcome.record`` is their CONTRACT §3 form, which the Kafka/JSONL
encoder writes and the store keeps; a door with another wire builds its answer from the
typed fields. What
the service does around the charger, so that no door has to:

* **a store outage is waited out**: ``StoreError`` (Redis unreachable, a cluster failing
  over) retries the batch with back-off until Redis answers; the retries are idempotent, so
  nothing is lost or decided twice — the caller's stream just waits;
* **a defect met by one request is isolated**: any other exception halves the batch until
  the request that raises is alone; every other request is decided, and that one comes back
  as its exception (what a failed attempt wrote is replayed from the idempotency records);
* **silent sessions are released** every ``sweep_every_s``, between batches and when idle;
* **metrics** through ``ServiceMetrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from charging.decide import Outcome
from charging.errors import StoreError
from charging.requests import Request

log = logging.getLogger("chargeflow.engine")


class Charges(Protocol):
    """What the service charges a batch with: ``balances.charger.Charger``."""

    def charge(self, requests: Sequence[Request]) -> list[Outcome]: ...


class ServiceMetrics(Protocol):
    def batch_charged(self, requests: int, seconds: float) -> None: ...

    def store_retried(self) -> None: ...


class ChargingService:
    def __init__(self, charger: Charges, *, sweeper: Callable[[int], int] | None = None,
                 sweep_every_s: float = 10.0, metrics: ServiceMetrics | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep, max_backoff_s: float = 2.0):
        self.charger = charger
        self.sweeper = sweeper  # releases silent sessions: now_ms -> how many
        self.sweep_every_ns = int(sweep_every_s * 1e9)
        self.metrics = metrics
        self.clock_ns = clock_ns
        self.sleep = sleep
        self.max_backoff_s = max_backoff_s
        self.store_retries = 0
        self._last_sweep = clock_ns()

    def decide(self, requests: Sequence[Request]) -> list[Outcome | Exception]:
        """One outcome per request, in order; for a request whose charging raises on its
        own, its exception instead. Waits out store outages; never raises for a request."""
        self.sweep_if_due()
        if not requests:
            return []
        batch = list(requests)
        try:
            return list(self._charge(batch))
        except Exception as exc:  # noqa: BLE001 - a defect met by some request: isolate it
            return self._isolate(batch, exc)

    def idle(self) -> None:
        """No request came for a while: silent sessions are released on time anyway."""
        self.sweep_if_due()

    def _charge(self, requests: list[Request]) -> list[Outcome]:
        delay = 0.05
        while True:
            try:
                t0 = time.perf_counter()
                outcomes = self.charger.charge(requests)
                if self.metrics is not None:
                    self.metrics.batch_charged(len(requests), time.perf_counter() - t0)
                return outcomes
            except StoreError as exc:
                self.store_retries += 1
                if self.metrics is not None:
                    self.metrics.store_retried()
                log.warning("store unavailable, retrying batch of %d in %.2f s: %s",
                            len(requests), delay, exc)
                self.sleep(delay)
                delay = min(self.max_backoff_s, delay * 2)

    def _isolate(self, requests: list[Request], exc: Exception) -> list[Outcome | Exception]:
        """After charging ``requests`` raised ``exc``: outcomes in order, with the exception
        in place of each request whose charging raises alone. Halves keep input order."""
        if len(requests) == 1:
            log.error("charging request %r of account %r raised; it is rejected "
                      "(INTERNAL_ERROR) and the stream goes on", requests[0].id,
                      requests[0].account, exc_info=exc)
            return [exc]
        log.warning("charging a batch of %d raised %r; halving it to find the request",
                    len(requests), exc)
        mid = len(requests) // 2
        return self._charge_isolating(requests[:mid]) + self._charge_isolating(requests[mid:])

    def _charge_isolating(self, requests: list[Request]) -> list[Outcome | Exception]:
        try:
            return list(self._charge(requests))
        except Exception as exc:  # noqa: BLE001 - isolated and logged by _isolate
            return self._isolate(requests, exc)

    def sweep_if_due(self) -> None:
        """Release silent sessions now and then (a failure only waits for the next turn:
        the sweep is idempotent)."""
        now_ns = self.clock_ns()
        sweeper = self.sweeper
        if sweeper is None or now_ns - self._last_sweep < self.sweep_every_ns:
            return
        self._last_sweep = now_ns
        try:
            released = sweeper(time.time_ns() // 1_000_000)
        except StoreError as exc:
            log.warning("sweep skipped: %s", exc)
            return
        except Exception:  # noqa: BLE001 - a defect in the sweep must not stop the stream
            log.exception("sweep failed; it runs again at its next turn")
            return
        if released:
            log.info("released %d silent session(s)", released)
