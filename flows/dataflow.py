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
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import KafkaError as KafkaErrorCode
from confluent_kafka.admin import AdminClient

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
        outputs = engine.process(items, [entered] * len(items))
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


POLL_S = 0.001


class _RequestPartition(StatefulSourcePartition):
    """One Kafka partition of requests: payloads in offset order; the offset is the snapshot.

    Each poll waits at most ``POLL_S`` for messages: long enough that a burst arrives in large
    batches, short enough not to hold up a worker. It ends when ``stop`` is set, so the
    dataflow drains. (Measured: without the wait, bursts came in batches of a few messages and
    ran ~10× slower; with it, several partitions per worker still mean several small batches
    per round at paced load, hence one partition per worker by default.)
    """

    def __init__(self, consumer: Consumer, offset: int, batch_size: int,
                 stop: threading.Event):
        self.consumer = consumer
        self.offset = offset
        self.batch_size = batch_size
        self.stop = stop

    def next_batch(self) -> list[bytes]:
        if self.stop.is_set():
            raise StopIteration()
        out = []
        for msg in self.consumer.consume(self.batch_size, POLL_S):
            err = msg.error()
            if err is not None and err.code() == KafkaErrorCode._PARTITION_EOF:
                continue
            out.append(msg.value() or b"")  # a broken message is rejected downstream
            self.offset = msg.offset() + 1
        return out

    def snapshot(self) -> int:
        return self.offset

    def close(self) -> None:
        self.consumer.close()


class RequestSource(FixedPartitionedSource):
    """The requests topic as a Bytewax source of raw payloads, one partition per Kafka
    partition, resumable from the offsets in Bytewax's recovery snapshots."""

    def __init__(self, brokers: str, topic: str, stop: threading.Event,
                 batch_size: int = 1024, config: dict | None = None):
        self.brokers = brokers
        self.topic = topic
        self.stop = stop
        self.batch_size = batch_size
        self.config = {"fetch.wait.max.ms": "5", "fetch.min.bytes": "1", **(config or {})}

    def list_parts(self) -> list[str]:
        meta = AdminClient({"bootstrap.servers": self.brokers}).list_topics(self.topic,
                                                                            timeout=30)
        return [f"{p}-{self.topic}" for p in sorted(meta.topics[self.topic].partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None):
        idx, _, topic = for_part.partition("-")
        consumer = Consumer({"bootstrap.servers": self.brokers, "group.id": "chargeflow",
                             "enable.auto.commit": "false", **self.config})
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        consumer.assign([TopicPartition(topic, int(idx), offset)])
        return _RequestPartition(consumer, offset, self.batch_size, self.stop)


def kafka_flow(brokers: str, make_engine: Callable[[], Engine], topics: Topics = Topics(),
               batch_size: int = 1024, stop: threading.Event | None = None) -> Dataflow:
    """The dataflow on Kafka: the requests topic in, the three output topics out."""
    producer = {"linger.ms": "1", "compression.type": "none"}
    source = RequestSource(brokers, topics.requests, stop or threading.Event(), batch_size)
    sink = KafkaSink([brokers], topic=None, add_config=producer)

    def to_kafka(o: Output) -> KafkaSinkMessage:
        return KafkaSinkMessage(key=o.key, value=o.value, topic=topics.of(o.kind))

    return build_flow(source, sink, make_engine, to_kafka)
