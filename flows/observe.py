"""Metrics (Prometheus) and structured logs for the engine.

``EngineMetrics`` is handed to the ``Engine`` (it never reaches for a global): requests and
decisions by result, rejects by code, decision latency, batch sizes and the Redis round trip
per batch. ``serve`` exposes them, with Bytewax's own metrics, on ``/metrics``.
"""

from __future__ import annotations

import logging
import sys

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_BATCH_BUCKETS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.decisions = Counter("chargeflow_decisions", "Decisions by result", ["result"],
                                 registry=registry)
        self.rejects = Counter("chargeflow_rejects", "Rejected messages by code", ["code"],
                               registry=registry)
        self.latency = Histogram("chargeflow_decision_latency_seconds",
                                 "Time from a request entering the engine to its decision",
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.batch = Histogram("chargeflow_batch_size", "Requests per micro-batch",
                               buckets=_BATCH_BUCKETS, registry=registry)
        self.store = Histogram("chargeflow_store_seconds",
                               "Charging one batch against Redis (reads, writes, retries)",
                               buckets=_LATENCY_BUCKETS, registry=registry)
        self.store_retries = Counter("chargeflow_store_retries",
                                     "Batches retried because Redis was unavailable",
                                     registry=registry)


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose the default registry (the engine's and Bytewax's metrics) on :port/metrics."""
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
