"""The Diameter door's Prometheus metrics (names ``chargeflow_diameter_*``)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 3.0, 10.0)


class DiameterMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.requests = Counter("chargeflow_diameter_requests", "Diameter requests received, "
                                "by command (CER, DWR, DPR, CCR-I, CCR-U, CCR-T, CCR-E, ...)",
                                ["command"], registry=registry)
        self.answers = Counter("chargeflow_diameter_answers", "Diameter answers sent, by "
                               "command and command-level Result-Code",
                               ["command", "result_code"], registry=registry)
        self.latency = Histogram("chargeflow_diameter_answer_seconds", "From a request's "
                                 "last byte read to its answer written, by command",
                                 ["command"], buckets=_LATENCY, registry=registry)
        self.peers = Gauge("chargeflow_diameter_peers", "Peers with an open Diameter "
                           "connection (capabilities exchanged)", registry=registry)
        self.closed = Counter("chargeflow_diameter_connections_closed", "Connections closed, "
                              "by reason", ["reason"], registry=registry)
