"""The engine's Kafka source and sink (Bytewax connectors).

**Position.** Requests are read by a consumer group (``--group``, default ``chargeflow``):
each Bytewax worker runs one member, and Kafka hands the members the partitions — all of
them, also partitions added later or a topic re-created with more — and moves them when
members come and go. Where a member starts in a partition is the group's committed offset,
and the engine commits an offset only once every request before it has its outputs on the
broker: the sink flushes the producer, then commits (every ``commit_every_s``, when a
partition is taken away, and at a graceful stop). So a restart, with or without a crash,
resumes at most ``commit_every_s`` of requests before where it stopped; those are decided
again and answered from their idempotency records (the same decision, nothing charged
twice), and their outputs may appear twice. A partition with no committed offset (a new
group, a new partition, a topic that came back empty) is read from its beginning, never
from its end, so no acknowledged request is skipped; ``flows.positions`` refuses, at
start-up, to re-read requests older than the idempotency retention.

**Loud resets.** An offset that goes backwards (the broker reset the position: the topic was
re-created or truncated) is logged as an error; a topic whose id changes while the engine
reads it is read again from the beginning of every partition, also logged as an error.

Outputs are produced without waiting for the broker's acknowledgement batch by batch (that
wait was a third of the engine's time under load): the end of each source batch travels
through the flow as a ``Consumed`` mark behind that batch's outputs, and the sink records
it once it has handed them to the producer; commits name only offsets so recorded, after a
flush.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka import KafkaError as KafkaErrorCode
from confluent_kafka.admin import AdminClient

from charging.errors import BrokerError
from flows.engine import IDLE_TICK_S
from flows.kafka import DEFAULT_GROUP, KAFKA_LOG, KafkaSettings

log = logging.getLogger("chargeflow.engine")

POLL_S = 0.001
CHECK_S = 10.0  # how often a worker checks that its topic is still the one it reads
COMMIT_S = 2.0

#: Consumer defaults; an operator's settings override them (not those in ``_GROUP_RULES``).
#: A short session timeout lets a restarted engine take over a crashed one's partitions
#: within seconds; cooperative rebalancing moves only the partitions that must move.
CONSUMER_DEFAULTS = {
    "fetch.wait.max.ms": "5", "fetch.min.bytes": "1", "session.timeout.ms": "6000",
    "heartbeat.interval.ms": "1000", "partition.assignment.strategy": "cooperative-sticky",
    "topic.metadata.refresh.interval.ms": "10000",  # new partitions within ~10 s
}
_GROUP_RULES = {"enable.auto.commit": False, "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest"}
PRODUCER_DEFAULTS = {"linger.ms": "1", "compression.type": "none",
                     "delivery.report.only.error": True}


class _Worker:
    """One worker's group member: the partitions it holds, how far each partition's outputs
    were produced, and what it committed. Shared by the worker's source and sink."""

    def __init__(self, consumer: Consumer, topic: str):
        self.consumer = consumer
        self.topic = topic
        self.assigned: set[int] = set()
        self.produced: dict[int, int] = {}  # partition -> offset before which all is produced
        self.committed: dict[int, int] = {}
        self.sink: _OutputPartition | None = None
        self._source_done = self._sink_done = False

    def commit(self, partitions: Iterable[int] | None = None) -> None:
        """Commit the produced offsets of held partitions that moved; call after a flush."""
        wanted = self.assigned if partitions is None else set(partitions) & self.assigned
        offsets = [TopicPartition(self.topic, p, o) for p, o in self.produced.items()
                   if p in wanted and self.committed.get(p) != o]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # the next commit tries again; a restart before it re-reads a little more
            KAFKA_LOG.warning("committing offsets of %s failed: %s", self.topic, exc)
            return
        for tp in offsets:
            self.committed[tp.partition] = tp.offset

    def release(self, partitions: set[int]) -> None:
        self.assigned -= partitions
        for p in partitions:
            self.produced.pop(p, None)
            self.committed.pop(p, None)

    def source_done(self) -> None:
        self._source_done = True
        if self._sink_done:
            self._close()

    def sink_done(self) -> None:
        self.commit()  # the sink flushed: everything read is on the broker
        self._sink_done = True
        if self._source_done:
            self._close()

    def _close(self) -> None:
        self.commit()
        self.consumer.close()  # leaves the group: its partitions move at once


@dataclass(frozen=True, slots=True)
class Consumed:
    """Follows a source batch through the flow: the requests of ``partition`` end before
    ``offset``. An idle mark (partition -1) moves nothing; it lets the step run."""

    worker: _Worker
    partition: int
    offset: int


def split_marks(items: list) -> tuple[list, list[Consumed]]:
    """A step's input: the payloads, and the ``Consumed`` marks to pass on after their
    outputs (a step must emit every mark it receives, behind the outputs of the items
    before it)."""
    payloads = [x for x in items if type(x) is not Consumed]
    if len(payloads) == len(items):
        return items, []
    return payloads, [x for x in items if type(x) is Consumed]


class _GroupPartition(StatelessSourcePartition):
    """One worker's consumer: payloads in offset order per partition, each batch followed by
    a mark per partition it read. With no requests for ``IDLE_TICK_S`` it sends an idle mark
    alone, so the step still runs (for the engine's sweep).

    Each poll waits at most ``POLL_S``: long enough that a burst arrives in large batches,
    short enough not to hold up the worker. It ends when ``stop`` is set, so the dataflow
    drains."""

    def __init__(self, worker: _Worker, admin: AdminClient, batch_size: int,
                 stop: threading.Event, clock: Callable[[], float] = time.monotonic):
        self.worker = worker
        self.admin = admin
        self.batch_size = batch_size
        self.stop = stop
        self.clock = clock
        self.next: dict[int, int] = {}  # partition -> the offset expected next
        self.ticked = self.checked = clock()
        self.topic_id: str | None = None
        self._described = None  # a pending describe_topics future

    # -- reading
    def next_batch(self) -> list:
        if self.stop.is_set():
            raise StopIteration()
        worker = self.worker
        out: list = []
        ends: dict[int, int] = {}
        for msg in worker.consumer.consume(self.batch_size, POLL_S):
            err = msg.error()
            if err is not None:
                # an event of the consumer (a broker gone, ...), not a request: its offset
                # (-1001 for most) must not become a position
                if err.code() != KafkaErrorCode._PARTITION_EOF:
                    KAFKA_LOG.warning("Kafka consumer: %s", err)
                continue
            p, offset = msg.partition(), msg.offset()
            expected = self.next.get(p)
            if expected is not None and offset != expected:
                self._jumped(p, expected, offset)
            self.next[p] = ends[p] = offset + 1
            out.append(msg.value() or b"")  # an empty message is rejected downstream
        now = self.clock()
        if ends:
            out += [Consumed(worker, p, o) for p, o in ends.items()]
            self.ticked = now
        elif now - self.ticked >= IDLE_TICK_S:
            out.append(Consumed(worker, -1, -1))
            self.ticked = now
        if now - self.checked >= CHECK_S or self._described is not None:
            self._check_topic(now)
        return out

    def _jumped(self, partition: int, expected: int, offset: int) -> None:
        topic = self.worker.topic
        if offset < expected:
            log.error("partition %d of %s went back from offset %d to %d: the broker reset "
                      "the engine's position (the topic was re-created or truncated, or its "
                      "offset was out of range); reading on from %d, requests decided before "
                      "are answered as replays", partition, topic, expected, offset, offset)
        else:
            KAFKA_LOG.warning("partition %d of %s: offsets %d to %d hold no requests "
                              "(transaction markers, compaction, or deleted by the broker's "
                              "retention before the engine read them)", partition, topic,
                              expected, offset - 1)

    def _check_topic(self, now: float) -> None:
        """Whether the topic is still the one read (its id): checked every ``CHECK_S``
        without blocking the worker (the answer is picked up by a later batch)."""
        if self._described is None:
            self.checked = now
            try:
                self._described = self.admin.describe_topics(
                    TopicCollection([self.worker.topic]), request_timeout=5
                )[self.worker.topic]
            except (KafkaException, ValueError) as exc:
                KAFKA_LOG.warning("cannot describe %s: %s", self.worker.topic, exc)
            return
        if not self._described.done():
            return
        future, self._described = self._described, None
        try:
            topic_id = str(future.result().topic_id)
        except KafkaException as exc:  # the broker away: the next check tries again
            KAFKA_LOG.warning("cannot describe %s: %s", self.worker.topic, exc)
            return
        if self.topic_id is not None and topic_id != self.topic_id:
            self._recreated(self.topic_id, topic_id)
        self.topic_id = topic_id

    def _recreated(self, old: str, new: str) -> None:
        held = sorted(self.worker.assigned)
        log.error("topic %s was re-created (id %s, was %s): reading partitions %s from their "
                  "beginning; requests of the old topic not read yet are not in the new one, "
                  "requests of the new one decided before are answered as replays",
                  self.worker.topic, new, old, held)
        for p in held:
            try:
                self.worker.consumer.seek(TopicPartition(self.worker.topic, p,
                                                         OFFSET_BEGINNING))
            except KafkaException as exc:
                log.error("cannot move partition %d of %s to its beginning: %s", p,
                          self.worker.topic, exc)
            self.next.pop(p, None)

    # -- the group's callbacks (run inside consume(), on this worker's thread)
    def assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        held = {tp.partition for tp in partitions}
        self.worker.assigned |= held
        for p in held:
            self.next.pop(p, None)
        try:
            where = {tp.partition: tp.offset
                     for tp in consumer.committed(partitions, timeout=10)}
        except KafkaException as exc:
            where = {}
            KAFKA_LOG.warning("cannot read the committed offsets of %s: %s",
                              self.worker.topic, exc)
        log.info("reading %s: %s", self.worker.topic, ", ".join(
            f"partition {p} from offset {where[p]}" if where.get(p, -1) >= 0 else
            f"partition {p} from its beginning (no committed offset)" for p in sorted(held)))

    def revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions given to another member: commit what is produced of them first, so
        that it resumes after this worker's outputs."""
        gone = {tp.partition for tp in partitions}
        sink = self.worker.sink
        if sink is not None:
            try:
                sink.flush()
            except BrokerError as exc:
                log.error("partitions %s of %s handed over without a commit: %s", sorted(gone),
                          self.worker.topic, exc)
            else:
                self.worker.commit(gone)
        self.worker.release(gone)
        for p in gone:
            self.next.pop(p, None)
        log.info("partitions %s of %s moved to another member of group", sorted(gone),
                 self.worker.topic)

    def lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        log.warning("partitions %s of %s lost (the group went on without this worker); "
                    "another member resumes them from the last commit", sorted(gone),
                    self.worker.topic)
        self.worker.release(gone)
        for p in gone:
            self.next.pop(p, None)

    def close(self) -> None:
        self.worker.source_done()


class Workers:
    """Each worker's group member, by worker index: its source registers it, its sink (on
    the same worker: the flow never moves items between workers) commits through it."""

    def __init__(self) -> None:
        self._by_index: dict[int, _Worker] = {}

    def __setitem__(self, index: int, worker: _Worker) -> None:
        self._by_index[index] = worker

    def get(self, index: int) -> _Worker | None:
        return self._by_index.get(index)


class RequestSource(DynamicSource):
    """The requests topic as a Bytewax source of raw payloads: one group member per worker."""

    def __init__(self, settings: KafkaSettings, topic: str, stop: threading.Event,
                 batch_size: int = 1024, config: dict | None = None,
                 workers: Workers | None = None):
        self.settings = settings
        self.topic = topic
        self.stop = stop
        self.batch_size = batch_size
        self.config = config or {}
        self.workers = workers if workers is not None else Workers()

    def consumer_config(self) -> dict:
        return {**self.settings.client(**CONSUMER_DEFAULTS, **self.config),
                "group.id": self.settings.group, **_GROUP_RULES}

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _GroupPartition:
        consumer = Consumer(self.consumer_config())
        worker = _Worker(consumer, self.topic)
        self.workers[worker_index] = worker
        part = _GroupPartition(worker, AdminClient(self.settings.client()), self.batch_size,
                               self.stop)
        consumer.subscribe([self.topic], on_assign=part.assigned, on_revoke=part.revoked,
                           on_lost=part.lost)
        return part


class _OutputPartition(StatelessSinkPartition):
    def __init__(self, producer: Producer, topic_of: Callable[[str], str], workers: Workers,
                 index: int, commit_every_s: float, clock: Callable[[], float]):
        self.producer = producer
        self.topic_of = topic_of
        self.workers = workers
        self.index = index
        self.commit_every_s = commit_every_s
        self.clock = clock
        self.committed_at = clock()
        self.failed: str | None = None

    def write_batch(self, items: list) -> None:
        self._check()
        produce = self.producer.produce
        topic_of = self.topic_of
        for o in items:
            if type(o) is Consumed:
                o.worker.sink = self
                if o.partition >= 0:
                    o.worker.produced[o.partition] = o.offset
                continue
            while True:
                try:
                    produce(topic_of(o.kind) if o.topic is None else o.topic, o.value, o.key,
                            on_delivery=self._failed)
                    break
                except BufferError:  # the producer's queue is full: let it drain
                    self.producer.poll(0.05)
        self.producer.poll(0)
        if self.clock() - self.committed_at >= self.commit_every_s:
            self.commit()

    def commit(self) -> None:
        """Flush, then commit what is produced: a position never passes a lost output."""
        self.committed_at = self.clock()
        self.flush()
        worker = self.workers.get(self.index)
        if worker is not None:
            worker.commit()

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
        worker = self.workers.get(self.index)
        if worker is not None:
            worker.sink_done()


class OutputSink(DynamicSink):
    """``Output``s to their topics, produced as they come (no wait per batch); flushed before
    each commit of the source's offsets and at the close."""

    def __init__(self, settings: KafkaSettings, topic_of: Callable[[str], str],
                 config: dict | None = None, workers: Workers | None = None,
                 commit_every_s: float = COMMIT_S, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.topic_of = topic_of
        self.config = settings.client(**PRODUCER_DEFAULTS, **(config or {}))
        self.workers = workers if workers is not None else Workers()
        self.commit_every_s = commit_every_s
        self.clock = clock

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OutputPartition:
        return _OutputPartition(Producer(self.config), self.topic_of, self.workers,
                                worker_index, self.commit_every_s, self.clock)


__all__ = ["COMMIT_S", "DEFAULT_GROUP", "Consumed", "OutputSink", "RequestSource", "Workers",
           "split_marks"]
