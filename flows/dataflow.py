"""The charging dataflow (Bytewax): requests in, decisions, charges and rejects out.

    input ──► charge (flat_map_batch: Engine.process per micro-batch) ──► output

``build_flow`` takes its source and sink, so the same flow runs on Bytewax's testing
connectors and on Kafka. Ownership of an account: Kafka partitions are the unit of
parallelism, each partition is read by one worker, and gateways key requests by account, so
one worker applies an account's requests, in order. Even when they are not keyed so, the
store's versioned writes keep every balance exact (a worker that loses a race re-reads and
decides again); only the order between partitions is then undefined.

Bytewax runs worker threads in one process; each thread builds its own ``Engine`` (its own
Redis connection and account cache) on first use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.connectors.kafka import (
    KafkaError,
    KafkaSink,
    KafkaSinkMessage,
    KafkaSource,
    KafkaSourceMessage,
)
from bytewax.dataflow import Dataflow
from bytewax.inputs import StatefulSourcePartition

from flows.engine import CHARGES, DECISIONS, REJECTS, Engine, Output


class _ChargeStep:
    """The flat_map_batch mapper: one Engine per worker thread, made on first use."""

    def __init__(self, make_engine: Callable[[], Engine], to_sink: Callable[[Output], object]):
        self.make_engine = make_engine
        self.to_sink = to_sink
        self.local = threading.local()

    def __call__(self, items: list) -> list:
        engine = getattr(self.local, "engine", None)
        if engine is None:
            engine = self.local.engine = self.make_engine()
        entered = time.monotonic_ns()
        payloads = []
        for item in items:
            if isinstance(item, KafkaSourceMessage):
                payloads.append(item.value or b"")
            elif isinstance(item, KafkaError):  # a broken message: rejected, like bad JSON
                payloads.append(item.msg.value or b"")
            else:
                payloads.append(item)
        outputs = engine.process(payloads, [entered] * len(payloads))
        return [self.to_sink(o) for o in outputs]


def build_flow(source, sink, make_engine: Callable[[], Engine],
               to_sink: Callable[[Output], object] = lambda o: o,
               name: str = "chargeflow") -> Dataflow:
    """The dataflow over any Bytewax source of request payloads and sink of outputs."""
    flow = Dataflow(name)
    requests = op.input("requests", flow, source)
    outputs = op.flat_map_batch("charge", requests, _ChargeStep(make_engine, to_sink))
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


class _StoppablePartition(StatefulSourcePartition):
    """A Kafka partition reader that ends when asked to, so the dataflow drains and stops."""

    def __init__(self, inner: StatefulSourcePartition, stop: threading.Event):
        self.inner = inner
        self.stop = stop

    def next_batch(self) -> list:
        if self.stop.is_set():
            raise StopIteration()
        return self.inner.next_batch()

    def next_awake(self):
        return self.inner.next_awake()

    def snapshot(self):
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class StoppableKafkaSource(KafkaSource):
    """``KafkaSource`` whose partitions end once ``stop`` is set (graceful shutdown: every
    batch read is decided and written, the outputs are flushed, a last snapshot is taken)."""

    def __init__(self, *args, stop: threading.Event, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop = stop

    def build_part(self, step_id, for_part, resume_state):
        return _StoppablePartition(super().build_part(step_id, for_part, resume_state),
                                   self.stop)


def kafka_flow(brokers: str, make_engine: Callable[[], Engine], topics: Topics = Topics(),
               batch_size: int = 1024, stop: threading.Event | None = None) -> Dataflow:
    """The dataflow on Kafka: the requests topic in, the three output topics out."""
    consumer = {"fetch.wait.max.ms": "5", "fetch.min.bytes": "1"}  # low latency on tansu
    producer = {"linger.ms": "1", "compression.type": "none"}
    source = StoppableKafkaSource([brokers], [topics.requests], batch_size=batch_size,
                                  add_config=consumer, raise_on_errors=False,
                                  stop=stop or threading.Event())
    sink = KafkaSink([brokers], topic=None, add_config=producer)

    def to_kafka(o: Output) -> KafkaSinkMessage:
        return KafkaSinkMessage(key=o.key, value=o.value, topic=topics.of(o.kind))

    return build_flow(source, sink, make_engine, to_kafka)
