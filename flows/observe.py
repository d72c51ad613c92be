"""Metrics (Prometheus) and structured logs for the engine.

``EngineMetrics`` is handed to the ``Engine`` (it never reaches for a global): requests and
decisions by result, rejects by code, decision latency, batch sizes and the Redis round trip
per batch. ``serve`` exposes them, with the Python process's own, on ``/metrics`` (Bytewax's
internal metrics are served only by its own web server, which the engine does not start).

The per-request figures are recorded a batch at a time (``record_batch``): one counter
increment per result and one histogram update per batch, not a lock and a lookup per request.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator

import numpy as np
import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_BATCH_BUCKETS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.decisions = Counter("chargeflow_decisions", "Decisions by result", ["result"],
                                 registry=registry)
        self.rejects = Counter("chargeflow_rejects", "Rejected messages by code", ["code"],
                               registry=registry)
        self.latency = BatchHistogram("chargeflow_decision_latency_seconds",
                                      "Time from a request entering the engine to its decision",
                                      _LATENCY_BUCKETS, registry)
        self.batch = Histogram("chargeflow_batch_size", "Requests per micro-batch",
                               buckets=_BATCH_BUCKETS, registry=registry)
        self.store = Histogram("chargeflow_store_seconds",
                               "Charging one batch against Redis (reads, writes, retries)",
                               buckets=_LATENCY_BUCKETS, registry=registry)
        self.store_retries = Counter("chargeflow_store_retries",
                                     "Batches retried because Redis was unavailable",
                                     registry=registry)

    def record_batch(self, results: dict[str, int], latencies_s: np.ndarray) -> None:
        """One batch's decisions: how many of each result, and each one's latency."""
        for result, n in results.items():
            self.decisions.labels(result).inc(n)
        self.latency.observe_many(latencies_s)


class BatchHistogram:
    """A Prometheus histogram that takes a batch of observations in one update."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 registry: CollectorRegistry):
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one: +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        # bucket i counts values <= bounds[i] (Prometheus "le"); searchsorted "left" finds it
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"),
                             minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative)]
        buckets.append(("+Inf", int(cumulative[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                    sum_value=total)


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose the default registry (the engine's metrics and the process's) on
    :port/metrics."""
    start_http_server(port, addr=host)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message, and any extra fields."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        doc.update({k: v for k, v in record.__dict__.items() if k not in self._skip})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("chargeflow")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
