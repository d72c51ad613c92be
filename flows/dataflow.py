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

Outputs are produced without waiting for the broker's acknowledgement batch by batch (that
wait was a third of the engine's time under load); instead a source partition's snapshot, the
offset a restarted engine resumes from, first flushes the producer and then names only
requests whose outputs were produced: the end of each source batch travels through the
flow as a ``Consumed`` mark behind that batch's outputs, and the sink records it once it
has handed them to the producer. A request is thus never skipped on resume unless its
outputs reached the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka import KafkaError as KafkaErrorCode
from confluent_kafka.admin import AdminClient

from charging.errors import BrokerError
from flows.engine import CHARGES, DECISIONS, IDLE_TICK_S, REJECTS, Engine

log = logging.getLogger("chargeflow.engine")


class _Partition:
    """What one source partition has read, and how far its requests' outputs were produced."""

    def __init__(self, offset: int):
        self.produced = offset  # every request before this offset has its outputs produced
        self.sink: _OutputPartition | None = None  # the sink partition that produced them


@dataclass(frozen=True, slots=True)
class Consumed:
    """Follows a source batch through the flow: its requests end before ``offset``."""

    partition: _Partition
    offset: int


def split_marks(items: list) -> tuple[list, list[Consumed]]:
    """A step's input: the payloads, and the ``Consumed`` marks to pass on after their
    outputs (a step must emit every mark it receives, behind the outputs of the items
    before it)."""
    payloads = [x for x in items if type(x) is not Consumed]
    if len(payloads) == len(items):
        return items, []
    return payloads, [x for x in items if type(x) is Consumed]


class _ChargeStep:
    """The flat_map_batch mapper: one Engine per worker thread, made on first use."""

    def __init__(self, make_engine: Callable[[], Engine]):
        self.make_engine = make_engine
        self.local = threading.local()

    def __call__(self, items: list) -> list:
        engine = getattr(self.local, "engine", None)
        if engine is None:
            engine = self.local.engine = self.make_engine()
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


POLL_S = 0.001


class _RequestPartition(StatefulSourcePartition):
    """One Kafka partition of requests: payloads in offset order, each batch followed by its
    ``Consumed`` mark. The snapshot is the offset up to which outputs were produced, taken
    after a flush of the producer that took them. With no requests for ``IDLE_TICK_S`` it
    sends a mark alone, so the step still runs (for the engine's sweep).

    Each poll waits at most ``POLL_S`` for messages: long enough that a burst arrives in large
    batches, short enough not to hold up a worker. It ends when ``stop`` is set, so the
    dataflow drains. (Measured: without the wait, bursts came in batches of a few messages and
    ran ~10× slower; with it, several partitions per worker still mean several small batches
    per round at paced load, hence one partition per worker by default.)
    """

    def __init__(self, consumer: Consumer, offset: int, batch_size: int,
                 stop: threading.Event):
        self.consumer = consumer
        self.batch_size = batch_size
        self.stop = stop
        self.part = _Partition(offset)
        self.offset = offset  # the end of the last batch read
        self.ticked = time.monotonic()  # when this partition last sent something on

    def next_batch(self) -> list:
        if self.stop.is_set():
            raise StopIteration()
        out: list = []
        offset = None
        for msg in self.consumer.consume(self.batch_size, POLL_S):
            err = msg.error()
            if err is not None:
                # an event of the consumer (end of partition, a broker gone, ...), not a
                # request: its offset (-1001 for most) must not become the snapshot's
                if err.code() != KafkaErrorCode._PARTITION_EOF:
                    log.warning("Kafka consumer: %s", err)
                continue
            out.append(msg.value() or b"")  # an empty message is rejected downstream
            offset = msg.offset() + 1
        now = time.monotonic()
        if offset is not None:
            self.offset = offset
            out.append(Consumed(self.part, offset))
            self.ticked = now
        elif now - self.ticked >= IDLE_TICK_S:
            # idle: a mark at the offset already reached (it moves nothing) lets the step
            # run, whose engine then releases silent sessions on time (Engine.idle)
            out.append(Consumed(self.part, self.offset))
            self.ticked = now
        return out

    def snapshot(self) -> int:
        if self.part.sink is not None:
            self.part.sink.flush()  # raises, rather than let the offset pass a lost output
        return self.part.produced

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


PRODUCER_CONFIG = {"linger.ms": "1", "compression.type": "none",
                   "delivery.report.only.error": True}


class _OutputPartition(StatelessSinkPartition):
    def __init__(self, producer: Producer, topic_of: Callable[[str], str]):
        self.producer = producer
        self.topic_of = topic_of
        self.failed: str | None = None

    def write_batch(self, items: list) -> None:
        self._check()
        produce = self.producer.produce
        topic_of = self.topic_of
        for o in items:
            if type(o) is Consumed:
                o.partition.sink = self
                o.partition.produced = o.offset
                continue
            while True:
                try:
                    produce(topic_of(o.kind), o.value, o.key, on_delivery=self._failed)
                    break
                except BufferError:  # the producer's queue is full: let it drain
                    self.producer.poll(0.05)
        self.producer.poll(0)

    def _failed(self, err, msg) -> None:  # delivery reports come for failures only
        if err is not None:
            log.error("output to %s lost by the broker: %s", msg.topic(), err)
            self.failed = str(err)

    def flush(self) -> None:
        """Wait until every output produced so far is on the broker; raises if one was lost
        (the worker stops, and a restart resumes before the request that lost it)."""
        while self.producer.flush(10.0):
            log.warning("outputs still waiting for the broker after 10 s; flushing on")
        self._check()

    def _check(self) -> None:
        if self.failed is not None:
            raise BrokerError(f"an output could not be delivered: {self.failed}")

    def close(self) -> None:
        self.flush()


class OutputSink(DynamicSink):
    """``Output``s to their topics, produced as they come (no wait per batch); the flushes
    are the snapshots' (see ``_RequestPartition``) and the close's."""

    def __init__(self, brokers: str, topic_of: Callable[[str], str],
                 config: dict | None = None):
        self.brokers = brokers
        self.topic_of = topic_of
        self.config = {"bootstrap.servers": brokers, **PRODUCER_CONFIG, **(config or {})}

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OutputPartition:
        return _OutputPartition(Producer(self.config), self.topic_of)


def kafka_flow(brokers: str, make_engine: Callable[[], Engine], topics: Topics = Topics(),
               batch_size: int = 1024, stop: threading.Event | None = None) -> Dataflow:
    """The dataflow on Kafka: the requests topic in, the three output topics out."""
    source = RequestSource(brokers, topics.requests, stop or threading.Event(), batch_size)
    return build_flow(source, OutputSink(brokers, topics.of), make_engine)
