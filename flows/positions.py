"""Where the engine will start reading, checked before it starts: never re-read requests
whose idempotency records may be gone.

A request decided before and read again is answered from its idempotency record — the same
decision, nothing charged twice — for as long as the record is kept (``--idempotency-
retention-s``, at least). A partition resumed from the group's committed offset is safe
however long the engine was stopped: what it re-reads is at most the ``--commit-s`` it
decided before it stopped, and a record is dropped only by a later charging write to its
account (``balances.store``), which for those requests comes after they are read again. A
partition read from elsewhere — its beginning (a new group, a group whose offsets are gone)
or the broker's beginning after a reset — can meet requests older than the retention, which
would be charged again if they had been decided. So, for such a partition, the request at
the start position is looked at (by its Kafka timestamp); if it is older than the retention
the ``stale`` rule applies:

* ``refuse`` (the default): the engine does not start, and says which partition, how old,
  and the two ways on;
* ``skip``: the group's position moves to the first request within the retention (found by
  a search over the message timestamps), committed for the group, and logged;
* ``decide``: read them anyway (each is decided as new if its record is gone).

A committed offset the broker no longer has (the topic re-created or truncated) is logged as
an error: the partition is then read from the beginning the broker has.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as KafkaErrorCode

from charging.errors import BrokerError
from flows.kafka import KafkaSettings

log = logging.getLogger("chargeflow.engine")

STALE_RULES = ("refuse", "skip", "decide")
PROBE_S = 2.0


class StaleRequests(ValueError):
    """The engine would re-read requests older than the idempotency retention."""


@dataclass(frozen=True)
class Start:
    partition: int
    offset: int  # the first offset the engine reads (after any skip)
    committed: bool  # the group had a committed offset here
    first_ts_ms: int | None  # the Kafka timestamp of the request there, None if none


def check_start(settings: KafkaSettings, topic: str, retention_s: int, rule: str = "refuse",
                now_ms: int | None = None) -> list[Start]:
    """Check (and with ``skip``, move) the group's start position in every partition."""
    if rule not in STALE_RULES:
        raise ValueError(f"unknown rule for stale requests {rule!r}")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    oldest_ok = now_ms - retention_s * 1000
    consumer = Consumer({**settings.client(**{"fetch.wait.max.ms": "5"}),
                         "group.id": settings.group, "enable.auto.commit": False,
                         "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        try:
            meta = consumer.list_topics(topic, timeout=15)
            partitions = sorted(meta.topics[topic].partitions)
            committed = {tp.partition: tp.offset for tp in consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=15)}
        except KafkaException as exc:
            raise BrokerError(f"cannot read the positions of group {settings.group} on "
                              f"{topic} from Kafka at {settings.brokers}: {exc}") from exc
        starts = []
        for p in partitions:
            asked = committed.get(p, -1)
            offset, ts = _probe(consumer, topic, p, asked if asked >= 0 else OFFSET_BEGINNING)
            if asked >= 0 and offset is not None and offset < asked:
                log.error("partition %d of %s: group %s's committed offset %d is beyond what "
                          "the broker holds (the topic was re-created or truncated); the "
                          "engine reads it from offset %d", p, topic, settings.group, asked,
                          offset)
            start = Start(p, offset if offset is not None else max(asked, 0), asked >= 0, ts)
            resumes = asked >= 0 and offset == asked  # from the group's own position
            if ts is not None and ts < oldest_ok and not resumes:
                start = _stale(consumer, settings, topic, start, oldest_ok, now_ms,
                               retention_s, rule)
            starts.append(start)
        return starts
    finally:
        consumer.close()


def _probe(consumer: Consumer, topic: str, partition: int, offset: int
           ) -> tuple[int | None, int | None]:
    """(offset, Kafka timestamp ms) of the first request at or after ``offset``; (end, None)
    at the end of the partition; (None, None) when the broker says nothing in time."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + PROBE_S
    while time.monotonic() < deadline:
        for msg in consumer.consume(1, 0.2):
            err = msg.error()
            if err is None:
                kind, ts = msg.timestamp()
                return msg.offset(), (ts if ts > 0 else None)
            if err.code() == KafkaErrorCode._PARTITION_EOF:
                return msg.offset(), None
            log.warning("Kafka consumer: %s", err)
    return None, None


def _stale(consumer: Consumer, settings: KafkaSettings, topic: str, start: Start,
           oldest_ok: int, now_ms: int, retention_s: int, rule: str) -> Start:
    age_h = (now_ms - (start.first_ts_ms or now_ms)) / 3_600_000
    origin = (f"group {settings.group}'s committed offset" if start.committed else
              f"its beginning: group {settings.group} has no committed offset there")
    where = f"partition {start.partition} of {topic} from offset {start.offset} ({origin})"
    what = (f"the engine would read {where}, a request written "
            f"{_iso(start.first_ts_ms)} ({age_h:,.1f} h ago), older than the idempotency "
            f"retention ({retention_s:,} s): a request decided before whose record has "
            f"expired would be charged again")
    if rule == "decide":
        log.warning("%s; --stale-requests decide: reading it anyway", what)
        return start
    if rule == "refuse":
        raise StaleRequests(f"{what}. Start with --stale-requests skip to begin at the first "
                            f"request within the retention (that position is committed for "
                            f"group {settings.group}), or --stale-requests decide to read "
                            "them anyway.")
    first = _first_newer(consumer, topic, start.partition, start.offset, oldest_ok)
    try:
        consumer.commit(offsets=[TopicPartition(topic, start.partition, first)],
                        asynchronous=False)
    except KafkaException as exc:
        raise BrokerError(f"cannot commit the skip of partition {start.partition} of {topic} "
                          f"for group {settings.group}: {exc}") from exc
    log.warning("%s; --stale-requests skip: %d request(s) skipped, reading from offset %d",
                what, first - start.offset, first)
    _, ts = _probe(consumer, topic, start.partition, first)
    return Start(start.partition, first, True, ts)


def _first_newer(consumer: Consumer, topic: str, partition: int, low: int,
                 oldest_ok: int) -> int:
    """The first offset from ``low`` whose request is not older than ``oldest_ok`` (the end
    of the partition if none is): galloping, then bisection over single-message reads
    (brokers answer ListOffsets by time unevenly; every broker serves a fetch)."""
    step, high = 1, None
    while high is None:
        offset, ts = _probe(consumer, topic, partition, low + step)
        if offset is None or ts is None or ts >= oldest_ok:
            high = low + step if offset is None else offset
            break
        low = offset
        step *= 2
    # low is old; the first new one is in (low, high]
    while high - low > 1:
        mid = (low + high) // 2
        offset, ts = _probe(consumer, topic, partition, mid)
        if offset is None or ts is None or ts >= oldest_ok:
            high = mid if offset is None else min(offset, high)
        else:
            low = offset
    return high


def _iso(ms: int | None) -> str:
    if ms is None:
        return "at an unknown time"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
