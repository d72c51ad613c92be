"""The gateways' round trip to the engines over Kafka (CONTRACT §6.5).

A gateway instance puts each charging request on the requests topic, keyed by account, with
``reply_to`` naming a topic of its own, and reads its decisions there, correlated by request
id. Request ids derive from the wire (Session-Id, CC-Request-Number, rating group; or the
ChargingDataRef, a sequence and the rating group), so a retransmission is a replay: the
engine answers it with the first decision and changes nothing.

``KafkaBridge.decide`` is a coroutine for the doors (asyncio); the producer and the reply
consumer run on a thread of their own. What it promises the doors:

* **answer timeout** — decisions that do not come within ``timeout_s`` raise
  ``AnswerTimeout`` (Diameter 3004 DIAMETER_TOO_BUSY, Nchf 503); the request stays on the
  topic and is decided anyway, so a retransmission later gets the real answer;
* **back-pressure** — at most ``max_inflight`` requests wait at once; beyond that ``decide``
  raises ``Busy`` at once instead of queueing without bound;
* decisions that come for no waiter (late, or another instance's) are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from charging.errors import BrokerError
from flows.broker import ensure_topics
from flows.kafka import KafkaSettings

log = logging.getLogger("chargeflow.gateway")

DEFAULT_TIMEOUT_S = 3.0
DEFAULT_MAX_INFLIGHT = 20_000


class Busy(Exception):
    """Too many requests wait for the engines already: answer 'too busy' now."""


class AnswerTimeout(Exception):
    """The engines did not answer in time (the request is still decided later)."""


@dataclass
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class KafkaBridge:
    """Requests out with ``reply_to``, decisions back on this instance's reply topic."""

    def __init__(self, settings: KafkaSettings, instance: str, *,
                 requests_topic: str = "chargeflow.requests", timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT):
        self.settings = settings
        self.requests_topic = requests_topic
        self.reply_topic = f"chargeflow.replies.{instance}"
        self.timeout_s = timeout_s
        self.max_inflight = max_inflight
        self._waiting: dict[str, list[_Waiter]] = {}
        self._inflight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self.answered = self.timed_out = self.refused = 0

    # -- life
    def start(self) -> None:
        ensure_topics(self.settings, {self.reply_topic: 1})
        self._producer = Producer(self.settings.client(**{"linger.ms": "1"}))
        consumer = Consumer({**self.settings.client(**{"fetch.wait.max.ms": "2",
                                                       "fetch.min.bytes": "1"}),
                             "group.id": f"{self.reply_topic}.reader",
                             "enable.auto.commit": False})
        try:  # from the end: answers to an earlier life of this instance are not ours
            end = consumer.get_watermark_offsets(TopicPartition(self.reply_topic, 0),
                                                 timeout=15)[1]
        except KafkaException as exc:
            consumer.close()
            raise BrokerError(f"cannot read {self.reply_topic}: {exc}") from exc
        consumer.assign([TopicPartition(self.reply_topic, 0, max(0, end))])
        self._thread = threading.Thread(target=self._run, args=(consumer,), daemon=True,
                                        name="gateway-bridge")
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._producer is not None:
            self._producer.flush(timeout_s)

    # -- the doors' call
    async def decide(self, requests: Sequence[dict]) -> list[dict]:
        """The decisions of ``requests`` (CONTRACT §3.1 dicts), in order."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._inflight + len(requests) > self.max_inflight:
                self.refused += 1
                raise Busy(f"{self._inflight} requests already wait for the engines")
            self._inflight += len(requests)
            waiters = []
            for req in requests:
                w = _Waiter(loop, loop.create_future())
                self._waiting.setdefault(req["id"], []).append(w)
                waiters.append(w)
        try:
            assert self._producer is not None, "start() the bridge first"
            for req in requests:
                value = orjson.dumps({**req, "reply_to": self.reply_topic})
                while True:
                    try:
                        self._producer.produce(self.requests_topic, value,
                                               req["account"].encode())
                        break
                    except BufferError:
                        await asyncio.sleep(0.001)
            try:
                async with asyncio.timeout(self.timeout_s):
                    out = [await w.future for w in waiters]
            except TimeoutError:
                self.timed_out += 1
                raise AnswerTimeout(f"no decision within {self.timeout_s:.1f} s") from None
            self.answered += len(out)
            return out
        finally:
            with self._lock:
                self._inflight -= len(requests)
                for req, w in zip(requests, waiters):
                    left = [x for x in self._waiting.get(req["id"], []) if x is not w]
                    if left:
                        self._waiting[req["id"]] = left
                    else:
                        self._waiting.pop(req["id"], None)

    @property
    def inflight(self) -> int:
        return self._inflight

    # -- the thread
    def _run(self, consumer: Consumer) -> None:
        producer = self._producer
        try:
            while not self._stop.is_set():
                producer.poll(0)
                for msg in consumer.consume(1000, 0.005):
                    if msg.error() is not None:
                        continue
                    try:
                        decision = orjson.loads(msg.value())
                        rid = decision["id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        log.warning("a reply that is not a decision on %s", self.reply_topic)
                        continue
                    with self._lock:
                        waiters = self._waiting.get(rid, ())
                        for w in waiters:
                            w.loop.call_soon_threadsafe(_resolve, w.future, decision)
        finally:
            consumer.close()


def _resolve(future: asyncio.Future, decision: dict) -> None:
    if not future.done():
        future.set_result(decision)


def instance_name() -> str:
    """A name for a gateway instance's reply topic: host and process, unique enough."""
    import os
    import socket

    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host}-{os.getpid()}-{time.time_ns() % 10**6}"
