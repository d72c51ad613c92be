"""The notifier: reads the engine's decisions and charges, fires rules, emits events.

One batch at a time (``step``):

1. messages of ``chargeflow.decisions`` / ``chargeflow.charges`` below the offsets recorded
   in Redis are skipped (handled already);
2. the batch's accounts (plan, allowance buckets) and the rules' slot states are read from
   Redis in two round trips; the catalog gives each bucket's size;
3. each message is evaluated in order (``notifications.evaluate``); crossings become events;
4. the events are produced to ``chargeflow.notifications`` and the producer is flushed;
5. slot states, offsets and the events' webhook deliveries (one per webhook that takes the
   event) are written to Redis in one transaction;
6. the deliveries are queued for the webhook workers (``notifications.delivery``), which
   remove each from Redis after a 2xx answer or its dead letter;
7. the consumer group's offsets are committed.

Balance changes made outside the engine — top-ups and adjustments through the account API or
``chargeflow topup`` — produce no decision: each batch also reads them from the outbox stream
their script appends to atomically (docs/billing.md), after the position recorded in Redis
with the offsets, and evaluates each as a decision with the balance it left.

With ``source="outbox"`` (``chargeflow notify --source outbox``) there is no consumer: the
engine's charging is read from the same outbox entries (``notifications.outbox``), which
every engine writes — also ``chargeflow serve``'s in-process one, which writes no topic.

A crash anywhere re-reads the batch: before 5 it emits the same events again (the same ids),
after it nothing; the deliveries left in Redis are resumed at the next start (``run``).
Allowance thresholds are judged on the bucket as it is in Redis when the batch is handled
(a charge's ``allowance_units`` says only that the bucket moved).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from balances.redis_errors import store_errors
from balances.store import BalanceStore
from billing.outbox import OutboxError
from catalog_cache.store import CatalogCache
from charging.errors import BrokerError, CorruptAccountError
from charging.money import MICROS, parse_decimal
from charging.records import format_balance
from charging.state import Account
from flows.kafka import KafkaSettings, describe_error
from notifications.delivery import Failed, WebhookDelivery
from notifications.evaluate import Bucket, Crossing, Slot, on_allowance, on_decision
from notifications.outbox import CHARGE, observations
from notifications.rules import NotifyConfig
from notifications.state import NotifyState

log = logging.getLogger("chargeflow.notify")

DEFAULT_GROUP = "chargeflow-notify"
#: where the engine's decisions and charges are read: its Kafka topics, or the outbox
SOURCES = ("kafka", "outbox")
CONSUMER_DEFAULTS = {"fetch.wait.max.ms": "50", "session.timeout.ms": "6000",
                     "heartbeat.interval.ms": "1000",
                     "topic.metadata.refresh.interval.ms": "10000"}
_GROUP_RULES = {"enable.auto.commit": False, "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest"}


@dataclass(frozen=True)
class Topics:
    decisions: str = "chargeflow.decisions"
    charges: str = "chargeflow.charges"
    notifications: str = "chargeflow.notifications"
    dead_letters: str = "chargeflow.notifications.dlq"


@dataclass(frozen=True)
class NotifierConfig:
    kafka: KafkaSettings
    prefix: str = "cf"
    topics: Topics = field(default_factory=Topics)
    batch: int = 1000
    poll_s: float = 0.1
    source: str = "kafka"  # one of SOURCES


def rfc3339(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def event_body(c: Crossing, now_ms: int) -> bytes:
    """The event of docs/notifications.md, "Events"."""
    return orjson.dumps({"id": c.id, "type": c.type, "account": c.account, "rule": c.rule,
                         "threshold": c.threshold, "value": c.value, "request": c.request,
                         "ts": rfc3339(now_ms), **c.extra})


def _micros(text: object) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        value = parse_decimal(text) * MICROS
    except ValueError:
        return None
    return int(value) if value.denominator == 1 else None


class Notifier:
    def __init__(self, config: NotifierConfig, rules: NotifyConfig, client: redis.Redis, *,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.rules = rules
        self.clock = clock
        self.store = BalanceStore(client, prefix=config.prefix)
        self.catalogs = CatalogCache(client, prefix=config.prefix, check_interval_s=1.0)
        self.state = NotifyState(client, config.prefix, config.kafka.group)
        self.r = client
        # a standalone Redis has one outbox stream; on a cluster (which the notifier's
        # transaction does not support either) the outbox is not read
        self.outbox = None if self.store.keys.cluster else self.store.keys.outbox("")
        self.from_outbox = config.source == "outbox"
        if config.source not in SOURCES:
            raise ValueError(f"source {config.source!r} is not one of {', '.join(SOURCES)}")
        if self.from_outbox and self.outbox is None:
            raise ValueError("--source outbox reads the outbox stream of a standalone Redis; "
                             "this one is a cluster (use --source kafka)")
        self._outbox_at: str | None = None  # the position handled, once known
        self._stop: threading.Event | None = None  # run's: a full queue waits no longer
        self.events = 0
        self._errors: list[str] = []
        self.producer = Producer(config.kafka.client(**{"linger.ms": "5"}))
        self.delivery = WebhookDelivery(rules.webhooks, rules.delivery, self._dead_letter,
                                        journal=self.state, clock=clock)
        self.consumer: Consumer | None = None
        if not self.from_outbox:
            self.consumer = Consumer(config.kafka.client(
                **CONSUMER_DEFAULTS, **_GROUP_RULES, **{"group.id": config.kafka.group}))
            self.consumer.subscribe([config.topics.decisions, config.topics.charges])

    # -- the loop
    def run(self, stop: threading.Event) -> None:
        try:
            self._stop = stop
            resumed = self.delivery.resume(self.state.pending(), stop)
            if resumed:
                log.info("resuming %d webhook deliveries left pending", resumed)
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def close(self) -> None:
        self.delivery.close()
        self.producer.flush(10)
        if self.consumer is not None:
            self.consumer.close()

    def step(self) -> int:
        """Handle one batch; how many events it emitted."""
        msgs = [] if self.consumer is None else [
            m for m in self.consumer.consume(self.config.batch, self.config.poll_s)
            if m.error() is None]
        changes, outbox_end = self._outbox_changes()
        if not msgs and outbox_end is None:
            return 0
        done = self.state.offsets() if msgs else {}
        fresh = [m for m in msgs if m.offset() >= done.get((m.topic(), m.partition()), 0)]
        docs = [(m.topic(), doc) for m in fresh if (doc := self._parse(m)) is not None]
        docs += changes
        ends: dict[tuple[str, int], int] = {}
        for m in msgs:
            key = (m.topic(), m.partition())
            ends[key] = max(ends.get(key, 0), m.offset() + 1)
        updates, crossings = self.evaluate(docs)
        now_ms = int(self.clock() * 1000)
        bodies = [(c, event_body(c, now_ms)) for c in crossings]
        for c, body in bodies:
            self._produce(self.config.topics.notifications, body, c.account)
        self._flush()
        deliveries = [p for c, body in bodies
                      for p in self.delivery.pending_for(c.type, c.id, body)]
        self.state.save(updates, ends, outbox_end, deliveries)
        for p in deliveries:  # at a stop, what does not fit waits in Redis for the restart
            if not self.delivery.submit(p, self._stop):
                break
        if outbox_end is not None:
            self._outbox_at = outbox_end
        if ends:
            try:
                self.consumer.commit(offsets=[TopicPartition(t, p, o)
                                              for (t, p), o in ends.items()],
                                     asynchronous=False)
            except KafkaException as exc:  # Redis holds the offsets: a re-read skips them
                log.warning("committing the notifier's offsets failed: %s",
                            describe_error(exc))
        self.events += len(bodies)
        return len(bodies)

    def _outbox_changes(self) -> tuple[list[tuple[str, dict]], str | None]:
        """What the outbox holds after the position handled, as (topic, engine output):
        the top-ups and adjustments as decisions (``id``: the ledger entry's, ``balance``:
        the one it left) and, reading from the outbox, the engine's decisions and charges
        (``notifications.outbox``); and the position after them (None when there was
        nothing new). A notifier's first start begins at the outbox's end: changes made
        before it are not notified."""
        if self.outbox is None:
            return [], None
        if self._outbox_at is None:
            at = self.state.outbox_position()
            if at is None:
                with store_errors("cannot read the outbox from Redis"):
                    last = self.r.xrevrange(self.outbox, count=1)
                at = last[0][0].decode() if last else "0-0"
                self.state.save({}, {}, at)
            self._outbox_at = at
        # with no consumer to wait in, the read waits (at most poll_s) for a new entry
        block = int(self.config.poll_s * 1000) if self.from_outbox else None
        with store_errors("cannot read the outbox from Redis"):
            got = self.r.xread({self.outbox: self._outbox_at}, count=self.config.batch,
                               block=block)
        t = self.config.topics
        docs: list[tuple[str, dict]] = []
        end = None
        for _, entries in got or ():
            for stream_id, fields in entries:
                end = stream_id.decode()
                try:
                    seen = observations(stream_id, fields, engine=self.from_outbox)
                except OutboxError as exc:
                    log.warning("outbox entry %s is unreadable; skipped: %s", end, exc)
                    continue
                docs += [(t.charges if kind == CHARGE else t.decisions, doc)
                         for kind, doc in seen
                         if isinstance(doc.get("account"), str)
                         and isinstance(doc.get("id"), str)]
        return docs, end

    def _parse(self, msg) -> dict | None:
        try:
            doc = orjson.loads(msg.value() or b"")
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("account"), str) \
                or not isinstance(doc.get("id"), str):
            log.warning("%s[%d]@%d is not an engine output; skipped", msg.topic(),
                        msg.partition(), msg.offset())
            return None
        return doc

    # -- evaluation
    def evaluate(self, docs: list[tuple[str, dict]]
                 ) -> tuple[dict[str, dict[str, Slot]], list[Crossing]]:
        """Crossings of a batch of (topic, engine output), in order; the slots changed."""
        if not docs:
            return {}, []
        accounts = list(dict.fromkeys(d["account"] for _, d in docs))
        loaded = self._accounts(accounts)
        states = self.state.load(accounts)
        self.catalogs.refresh()
        updates: dict[str, dict[str, Slot]] = {}
        out: list[Crossing] = []
        for topic, doc in docs:
            acct = loaded.get(doc["account"])
            if acct is None:
                continue
            slots = states[acct.id]
            for rule in self.rules.rules:
                if not rule.applies(acct.id, acct.plan):
                    continue
                if topic == self.config.topics.decisions:
                    changed, found = self._decision(rule, acct.id, doc, slots)
                elif rule.service is not None and doc.get("service") == rule.service \
                        and isinstance(doc.get("allowance_units"), int) \
                        and doc["allowance_units"] > 0:
                    changed, found = on_allowance(rule, acct.id, doc["id"],
                                                  self._buckets(acct, rule.service), slots)
                else:
                    continue
                slots.update(changed)
                updates.setdefault(acct.id, {}).update(changed)
                out += found
        return updates, out

    def _accounts(self, names: list[str]) -> dict[str, Account | None]:
        """The accounts of a batch; one whose hash is unreadable is left out (logged), so it
        holds up no other account's notifications."""
        try:
            return self.store.load(names)[0]
        except CorruptAccountError:
            pass
        out: dict[str, Account | None] = {}
        for name in names:
            try:
                out[name] = self.store.view(name)
            except CorruptAccountError as exc:
                log.error("account %r is unreadable, its notifications are skipped: %s",
                          name, exc)
                out[name] = None
        return out

    def _decision(self, rule, account: str, doc: dict, slots: dict[str, Slot]):
        if not (rule.below or rule.final) or doc.get("result") == "USER_UNKNOWN":
            return {}, []
        balance = _micros(doc.get("balance"))
        if balance is None:
            return {}, []
        granted = doc.get("granted") if isinstance(doc.get("granted"), int) else 0
        final = doc.get("final") is True and doc.get("result") == "SUCCESS"
        return on_decision(rule, account, doc["id"], balance, final, granted, slots,
                           format_balance)

    def _buckets(self, acct: Account, service: str) -> list[Bucket]:
        current = self.catalogs.current
        plan = current.catalog.plans.get(acct.plan) if current is not None else None
        sizes = [a.units for a in plan.allowances if a.service == service] if plan else []
        held = acct.allowances.get(service, [])
        return [Bucket(size, b.units, b.period) for size, b in zip(sizes, held)]

    # -- output
    def _produce(self, topic: str, body: bytes, key: str, on_delivery=None) -> None:
        while True:
            try:
                self.producer.produce(topic, value=body, key=key.encode(),
                                      on_delivery=on_delivery or self._delivered)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self._errors.append(err.str())

    def _flush(self, timeout_s: float = 30.0) -> None:
        left = self.producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if left or errors:
            raise BrokerError(f"notifications not produced ({left} waiting): "
                              f"{'; '.join(errors[:3])}")

    def _dead_letter(self, failed: Failed, timeout_s: float = 30.0) -> bool:
        """Produce a dead letter (from a delivery worker); True once the broker has it."""
        try:
            event = orjson.loads(failed.body)
        except orjson.JSONDecodeError:
            event = failed.body.decode("utf-8", "replace")
        doc = {"event": event, "webhook": failed.webhook, "error": failed.error,
               "tries": failed.tries, "ts": rfc3339(int(self.clock() * 1000))}
        key = event.get("account", "") if isinstance(event, dict) else ""
        acked = threading.Event()
        errors: list[str] = []

        def on_delivery(err, msg) -> None:  # served by whichever thread polls
            if err is not None:
                errors.append(err.str())
            acked.set()

        self._produce(self.config.topics.dead_letters, orjson.dumps(doc), key, on_delivery)
        deadline = time.monotonic() + timeout_s
        while not acked.is_set() and time.monotonic() < deadline:
            self.producer.poll(0.05)
        if errors or not acked.is_set():
            log.error("dead letter not produced: %s", "; ".join(errors) or "timed out")
            return False
        return True


def topics_of(config: NotifierConfig) -> Iterable[str]:
    t = config.topics
    return (t.decisions, t.charges, t.notifications, t.dead_letters)
