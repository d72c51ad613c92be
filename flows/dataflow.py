"""The charging dataflow (Bytewax): requests in, decisions, charges and rejects out.

    input ──► charge (flat_map_batch: Engine.process per micro-batch) ──► output

``build_flow`` takes its source and sink, so the same flow runs on Bytewax's testing
connectors and on Kafka (``flows.kafka_io``: a consumer group's members, offsets committed
behind the outputs). Ownership of an account: Kafka partitions are the unit of parallelism,
each partition is read by one worker at a time, and gateways key requests by account, so one
worker applies an account's requests, in order. Even when they are not keyed so (or while a
partition moves between workers), the store's versioned writes keep every balance exact (a
worker that loses a race re-reads and decides again); only the order between partitions is
then undefined.

Bytewax runs worker threads in one process; each thread builds its own ``Engine`` (its own
Redis connection and account cache) on first use. Items never move between workers, so a
batch's ``Consumed`` marks reach the sink of the worker that read it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.engine import CHARGES, DECISIONS, REJECTS, Engine
from flows.kafka import KafkaSettings
from flows.kafka_io import COMMIT_S, OutputSink, RequestSource, Workers, split_marks


class _ChargeStep:
    """The flat_map_batch mapper: one Engine per worker thread, made on first use.

    Keyed by the thread's ident, not held in a ``threading.local``: Bytewax's worker threads
    are made by its runtime, and with more than one worker (``cluster_main``, ``--workers 2``)
    each call into Python starts a fresh thread state, so a thread-local was empty on every
    batch and each batch built a new Engine (a new Redis connection, a cold account cache)."""

    def __init__(self, make_engine: Callable[[], Engine]):
        self.make_engine = make_engine
        self.engines: dict[int, Engine] = {}
        self.lock = threading.Lock()

    def __call__(self, items: list) -> list:
        engine = self.engines.get(threading.get_ident())
        if engine is None:
            with self.lock:
                engine = self.engines[threading.get_ident()] = self.make_engine()
        payloads, marks = split_marks(items)
        if not payloads:  # marks only: a source's idle tick (or a batch of nothing)
            engine.idle()
            return marks
        entered = time.monotonic_ns()
        outputs = engine.process(payloads, [entered] * len(payloads))
        return [*outputs, *marks]


def build_flow(source, sink, make_engine: Callable[[], Engine],
               name: str = "chargeflow") -> Dataflow:
    """The dataflow over any Bytewax source of request payloads and sink of outputs."""
    flow = Dataflow(name)
    requests = op.input("requests", flow, source)
    outputs = op.flat_map_batch("charge", requests, _ChargeStep(make_engine))
    op.output("outputs", outputs, sink)
    return flow


@dataclass(frozen=True)
class Topics:
    requests: str = "chargeflow.requests"
    decisions: str = DECISIONS
    charges: str = CHARGES
    rejects: str = REJECTS

    def of(self, kind: str) -> str:
        return {"decision": self.decisions, "charge": self.charges,
                "reject": self.rejects}[kind]


def kafka_flow(settings: KafkaSettings, make_engine: Callable[[], Engine],
               topics: Topics = Topics(), batch_size: int = 1024,
               stop: threading.Event | None = None, commit_every_s: float = COMMIT_S
               ) -> Dataflow:
    """The dataflow on Kafka: the requests topic in, the three output topics out."""
    workers = Workers()
    source = RequestSource(settings, topics.requests, stop or threading.Event(), batch_size,
                           workers=workers)
    sink = OutputSink(settings, topics.of, workers=workers, commit_every_s=commit_every_s)
    return build_flow(source, sink, make_engine)
