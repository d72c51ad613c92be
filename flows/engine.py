"""One engine step: a micro-batch of raw messages in, decisions, charges and rejects out.

The Kafka flow's and the JSONL mode's adapter over the charging service, kept free of
Bytewax so it can be tested and reused on its own (the benchmarks call it directly): decode
and validate each message (a bad one becomes a reject, never an exception), hand the valid
ones to ``service.charging.ChargingService`` (which waits out Redis outages, isolates a
request whose charging raises and sweeps silent sessions), and serialise the outputs
(CONTRACT §3).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import orjson

from charging.decide import Outcome
from charging.errors import RequestError
from charging.requests import Request, decode, parse, reject_record
from charging.untrusted import safe_text
from flows.observe import EngineMetrics
from service.charging import Charges, ChargingService

log = logging.getLogger("chargeflow.engine")

#: A source with no requests for this long calls the step anyway (Engine.idle): a Kafka
#: partition sends a mark alone, a JSONL stream an empty batch.
IDLE_TICK_S = 1.0

DECISIONS = "chargeflow.decisions"
CHARGES = "chargeflow.charges"
REJECTS = "chargeflow.rejects"


class Output(NamedTuple):
    """One message out: its kind (which names its topic or file), the key (the account), the
    JSON bytes, and for a ``reply`` (a decision again, for the gateway that asked) its topic."""

    kind: str  # "decision" | "charge" | "reject" | "reply"
    key: bytes | None
    value: bytes
    topic: str | None = None  # a reply's topic: the request's reply_to


@dataclass
class Counters:
    """Running totals for metrics and the demo's summary."""

    requests: int = 0
    rejects: int = 0
    results: dict[str, int] = field(default_factory=dict)
    reject_codes: dict[str, int] = field(default_factory=dict)
    charged_micros: int = 0
    batches: int = 0
    store_retries: int = 0


class _Metrics:
    """The service's metrics as the engine keeps them: its counters, and Prometheus."""

    def __init__(self, counters: Counters, metrics: EngineMetrics | None):
        self.counters = counters
        self.metrics = metrics

    def batch_charged(self, requests: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.batch.observe(requests)
            self.metrics.store.observe(seconds)

    def store_retried(self) -> None:
        self.counters.store_retries += 1
        if self.metrics is not None:
            self.metrics.store_retries.inc()


class Engine:
    def __init__(self, charger: Charges, *, fmt: str = "json",
                 clock_ns: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep, max_backoff_s: float = 2.0,
                 metrics: EngineMetrics | None = None,
                 sweeper: Callable[[int], int] | None = None, sweep_every_s: float = 10.0,
                 read: Callable[[object], Request] | None = None):
        """The Kafka flow's and the JSONL mode's adapter over the charging service
        (``service.charging``): messages in, serialised outputs out. ``read`` replaces
        ``parse(decode(payload, fmt))`` for one message (a test's way to meet a defect while
        reading; None is the engine's own, and fastest, path)."""
        self.charger = charger
        self.read = read
        self.metrics = metrics
        self.fmt = fmt
        self.clock_ns = clock_ns
        self.counters = Counters()
        self.service = ChargingService(charger, sweeper=sweeper, sweep_every_s=sweep_every_s,
                                       metrics=_Metrics(self.counters, metrics),
                                       clock_ns=clock_ns, sleep=sleep,
                                       max_backoff_s=max_backoff_s)

    def process(self, payloads: Sequence[object], entered_ns: Sequence[int] | None = None
                ) -> list[Output]:
        """Decide a batch of messages (bytes or str; anything else is rejected, which is
        why they are typed ``object``: compiled, a narrower type would raise at the call);
        ``entered_ns`` (monotonic ns) is when each message entered.

        Never raises for what a message holds: a bad message becomes its reject, and any
        exception met while handling one message (decoding it, charging it, serialising its
        outputs) becomes an ``INTERNAL_ERROR`` reject of that message while the others are
        decided as usual; a crash would stop the stream, and under recovery replay the same
        batch into the same crash."""
        start = self.clock_ns()
        outputs: list[Output] = []
        valid: list[Request] = []
        valid_entered: list[int] = []
        valid_payloads: list[object] = []
        fmt = self.fmt
        read = self.read
        for i in range(len(payloads)):
            payload: object = None
            try:
                payload = payloads[i]
                req = parse(decode(payload, fmt)) if read is None else read(payload)
                valid_entered.append(entered_ns[i] if entered_ns is not None else start)
                valid.append(req)
                valid_payloads.append(payload)
            except RequestError as exc:
                outputs.append(self._reject(exc, payload))
            except Exception as exc:  # noqa: BLE001 - a defect met by one message: isolate it
                log.error("reading message %d of a batch raised; it is rejected "
                          "(INTERNAL_ERROR) and the stream goes on", i, exc_info=exc)
                outputs.append(self._reject(RequestError(
                    "INTERNAL_ERROR", f"not decided: reading it raised {_exception(exc)}; "
                    "nothing was charged for it (the engine's log has the traceback)"),
                    payload))
        found = self.service.decide(valid)  # sweeps when due, also for a batch of rejects
        if not valid:
            return outputs
        now = self.clock_ns()
        c = self.counters
        c.batches += 1
        results: dict[str, int] = {}
        latencies: list[int] = []
        dumps = orjson.dumps
        for i, out in enumerate(found):
            if not isinstance(out, Outcome):
                outputs.append(self._reject(RequestError(
                    "INTERNAL_ERROR", f"not decided: charging it raised {_exception(out)}; "
                    "nothing was charged for it (the engine's log has the traceback)",
                    valid[i].id), valid_payloads[i]))
                continue
            latency_us = max(0, (now - valid_entered[i]) // 1000)
            try:
                key = out.request.account.encode()
                wire = out.record()  # the wire form, as the store keeps it
                value = dumps({**wire["decision"], "latency_us": latency_us})
                charge = None if out.charge is None else dumps(wire["charge"])
                result = str(out.decision.result)  # the code (a StrEnum), as a plain str
            except Exception as exc:  # noqa: BLE001 - a defect met by one request
                log.error("serialising the outputs of request %r raised; it is rejected "
                          "(INTERNAL_ERROR) and the stream goes on", valid[i].id, exc_info=exc)
                outputs.append(self._reject(RequestError(
                    "INTERNAL_ERROR", f"charged as decided, but its outputs could not be "
                    f"serialised: {_exception(exc)} (the engine's log has the traceback)",
                    valid[i].id), valid_payloads[i]))
                continue
            c.requests += 1
            latencies.append(latency_us)
            results[result] = results.get(result, 0) + 1
            outputs.append(Output("decision", key, value))
            if out.request.reply_to is not None:
                outputs.append(Output("reply", key, value, out.request.reply_to))
            if charge is not None:  # a replay re-emits it: outputs are at-least-once
                outputs.append(Output("charge", key, charge))
                for entry in out.ledger:
                    c.charged_micros -= entry["delta"]
        for result, n in results.items():
            c.results[result] = c.results.get(result, 0) + n
        if self.metrics is not None:
            self.metrics.record_batch(results, np.array(latencies, dtype=np.float64) / 1e6)
        return outputs

    # the service's settings, as the engine's (tests and tools set them here)
    @property
    def sweeper(self) -> Callable[[int], int] | None:
        return self.service.sweeper

    @sweeper.setter
    def sweeper(self, sweeper: Callable[[int], int] | None) -> None:
        self.service.sweeper = sweeper

    @property
    def sleep(self) -> Callable[[float], None]:
        return self.service.sleep

    @sleep.setter
    def sleep(self, sleep: Callable[[float], None]) -> None:
        self.service.sleep = sleep

    @property
    def sweep_every_ns(self) -> int:
        return self.service.sweep_every_ns

    @sweep_every_ns.setter
    def sweep_every_ns(self, ns: int) -> None:
        self.service.sweep_every_ns = ns

    def idle(self) -> None:
        """Called when no request came for ``IDLE_TICK_S``: silent sessions are released on
        time with no traffic too."""
        self.service.idle()

    def _reject(self, exc: RequestError, payload: object) -> Output:
        """The reject of one message; total (a last, fixed record if even building it
        fails), so that nothing a message holds can raise out of ``process``."""
        code = exc.code
        self.counters.rejects += 1
        self.counters.reject_codes[code] = self.counters.reject_codes.get(code, 0) + 1
        try:
            if self.metrics is not None:
                self.metrics.rejects.labels(code).inc()
            return Output("reject", None, orjson.dumps(reject_record(exc, payload)))
        except Exception:  # noqa: BLE001 - the record of a reject must not fail either
            log.exception("building a %s reject raised; a bare reject is written instead", code)
            return Output("reject", None, _BARE_REJECT)


#: The reject written when building a message's own reject failed (never seen; the last
#: line of defence of "a message never stops the engine").
_BARE_REJECT = orjson.dumps({
    "error": "INTERNAL_ERROR", "id": None, "raw": "",
    "detail": "not decided: the reject of this message could not be built (the engine's log "
              "has the traceback); nothing was charged for it"})


def _exception(exc: BaseException) -> str:
    """An exception as a reject's detail says it: its type and a short message (an
    exception's text may hold anything a message sent, so it is cut and made safe)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - its text is a courtesy
        text = ""
    name = type(exc).__name__
    return safe_text(f"{name}({text[:200]!r})" if text else name, 300)
