"""The load test's gateway over Kafka: requests out, decisions (and rejects) back.

One producer and one consumer per locust process, shared by its users. librdkafka calls
never block gevent's event loop: ``produce`` + ``poll(0)``, and one greenlet that reads
decisions with ``consume(timeout=0)`` and sleeps 1 ms when there is nothing, waking the user
waiting for each id.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import gevent
import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from gevent.event import AsyncResult

from flows.dataflow import Topics

log = logging.getLogger("chargeflow.locust")


class DecisionTimeout(Exception):
    """No decision came back in time (a failure in locust's statistics)."""


class Rejected(Exception):
    """The engine rejected the request as bad input (chargeflow.rejects)."""


class DeliveryFailed(Exception):
    """The broker did not take the request."""


@dataclass(frozen=True)
class Reply:
    doc: dict
    size: int  # bytes of the message
    received: float  # time.perf_counter() when the poller read it


class GatewayClient:
    """Requests out, decisions (and rejects) back, correlated by id; safe under gevent."""

    def __init__(self, brokers: str, fetch_wait_ms: int = 5, topics: Topics | None = None):
        self.brokers = brokers
        self.topics = topics or Topics()
        self.pending: dict[str, AsyncResult] = {}
        self.producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5,
                                  "queue.buffering.max.messages": 1_000_000})
        self.consumer = Consumer({"bootstrap.servers": brokers,
                                  "group.id": f"locust-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": fetch_wait_ms,
                                  "fetch.min.bytes": 1})
        self.poller: gevent.Greenlet | None = None

    def start(self, timeout_s: float = 10.0) -> GatewayClient:
        """Assign every partition of the output topics at their current end, then read.

        The end offsets are resolved here, before any request is produced, so that no
        decision of this run can fall before the position the consumer starts at.
        """
        assignment = []
        for topic in (self.topics.decisions, self.topics.rejects):
            try:
                meta = self.consumer.list_topics(topic, timeout=timeout_s).topics[topic]
            except KafkaException as exc:
                raise RuntimeError(f"cannot reach Kafka at {self.brokers}: {exc}") from exc
            if meta.error is not None or not meta.partitions:
                raise RuntimeError(f"topic {topic} is missing at {self.brokers} ({meta.error}): "
                                   "is `chargeflow run --kafka ...` running against it?")
            for p in sorted(meta.partitions):
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                              timeout=timeout_s, cached=False)
                assignment.append(TopicPartition(topic, p, high))
        self.consumer.assign(assignment)
        self.poller = gevent.spawn(self._read)
        self.poller.link_exception(lambda g: log.error("the decision reader stopped: %r",
                                                       g.exception))
        return self

    def ask(self, rid: str, key: str, value: bytes, timeout_s: float) -> Reply:
        """Produce one request and wait for its decision (``DecisionTimeout`` if none)."""
        waiter = self.pending[rid] = AsyncResult()
        while True:
            try:
                self.producer.produce(self.topics.requests, key=key.encode(), value=value,
                                      on_delivery=lambda err, _msg: self._delivered(rid, err))
                break
            except BufferError:  # the local queue is full: let librdkafka send, then retry
                self.producer.poll(0)
                gevent.sleep(0.001)
        self.producer.poll(0)
        try:
            return waiter.get(timeout=timeout_s)
        except gevent.Timeout:
            raise DecisionTimeout(f"no decision within {timeout_s:g} s") from None
        finally:
            self.pending.pop(rid, None)

    def _delivered(self, rid: str, err) -> None:
        waiter = self.pending.get(rid)
        if err is not None and waiter is not None:
            waiter.set_exception(DeliveryFailed(str(err)))

    def _read(self) -> None:
        while True:
            msgs = self.consumer.consume(1000, timeout=0)
            now = time.perf_counter()
            for msg in msgs:
                if msg.error() is not None:
                    continue
                value = msg.value()
                try:
                    doc = orjson.loads(value)
                    waiter = self.pending.get(str(doc.get("id")))
                except (orjson.JSONDecodeError, AttributeError):
                    continue  # not ours: outputs are JSON objects with an id
                if waiter is None or waiter.ready():
                    continue  # another run's, a replay's, or one given up on
                if msg.topic() == self.topics.rejects:
                    waiter.set_exception(Rejected(f"{doc.get('error')}: {doc.get('detail')}"))
                else:
                    waiter.set(Reply(doc, len(value), now))
            self.producer.poll(0)  # delivery reports
            gevent.sleep(0 if msgs else 0.001)

    def close(self) -> None:
        if self.poller is not None:
            self.poller.kill()
        deadline = time.monotonic() + 5
        while len(self.producer) and time.monotonic() < deadline:
            self.producer.poll(0)
            gevent.sleep(0.01)
        self.consumer.close()
        self.producer.close()  # the connections go now: an embedded broker stops at once
