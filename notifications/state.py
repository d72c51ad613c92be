"""The notifier's state in Redis, under the configuration's key prefix.

* ``{prefix}:notify:state:{account}`` — a hash: slot (rule and threshold, see
  ``notifications.evaluate``) -> its state as JSON (armed/fired, crossings so far, ...).
* ``{prefix}:notify:offsets:{group}`` — a hash: ``topic|partition`` -> the next offset whose
  events are not yet produced. A message below it was handled already and is skipped, also
  when the consumer group's own commit was lost (a crash between the two). Its field
  ``outbox`` is the id of the last outbox entry handled (the balance changes made outside
  the engine: top-ups and adjustments).
* ``{prefix}:notify:deliveries:{group}`` — a hash: ``<event id>|<webhook>`` -> a webhook
  delivery not yet done (``notifications.delivery.Pending``: the event's body, the tries
  made, the last error). Removed after a 2xx answer or once its dead letter is on the
  broker; what a notifier finds here at start it delivers (a crash's leftovers).

All three are written in one MULTI/EXEC transaction after the batch's events are on the
broker, so the states never run ahead of the events (a crash before the write re-reads the
batch and emits the same events again, with the same ids) and no event leaves the batch
without its deliveries recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import orjson
import redis

from balances.redis_errors import store_errors
from notifications.delivery import Pending
from notifications.evaluate import Slot

log = logging.getLogger("chargeflow.notify")

OUTBOX = "outbox"  # the offsets' field of the outbox position (no "|": not a partition)


class NotifyState:
    def __init__(self, client: redis.Redis, prefix: str, group: str):
        self.r = client
        self.prefix = prefix
        self.offsets_key = f"{prefix}:notify:offsets:{group}"
        self.deliveries_key = f"{prefix}:notify:deliveries:{group}"

    def state_key(self, account: str) -> str:
        return f"{self.prefix}:notify:state:{account}"

    def load(self, accounts: Iterable[str]) -> dict[str, dict[str, Slot]]:
        names = list(dict.fromkeys(accounts))
        pipe = self.r.pipeline(transaction=False)
        for a in names:
            pipe.hgetall(self.state_key(a))
        with store_errors("cannot read the notifier's state from Redis"):
            replies = pipe.execute()
        out: dict[str, dict[str, Slot]] = {}
        for a, raw in zip(names, replies):
            slots = {}
            for k, v in raw.items():
                try:
                    slots[k.decode()] = Slot.decode(orjson.loads(v))
                except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
                    continue  # an unreadable slot is armed again (logged by nobody: rare)
            out[a] = slots
        return out

    def offsets(self) -> dict[tuple[str, int], int]:
        with store_errors("cannot read the notifier's offsets from Redis"):
            raw = self.r.hgetall(self.offsets_key)
        out = {}
        for k, v in raw.items():
            topic, sep, part = k.decode().rpartition("|")
            if sep:
                out[(topic, int(part))] = int(v)
        return out

    def outbox_position(self) -> str | None:
        """The id of the last outbox entry handled; None before the first."""
        with store_errors("cannot read the notifier's offsets from Redis"):
            raw = self.r.hget(self.offsets_key, OUTBOX)
        return raw.decode() if raw is not None else None

    def save(self, updates: Mapping[str, Mapping[str, Slot]],
             offsets: Mapping[tuple[str, int], int], outbox: str | None = None,
             deliveries: Iterable[Pending] = ()) -> None:
        pipe = self.r.pipeline(transaction=True)
        pending = {p.key: p.encode() for p in deliveries}
        if pending:
            pipe.hset(self.deliveries_key, mapping=pending)
        for account, slots in updates.items():
            if slots:
                pipe.hset(self.state_key(account), mapping={
                    k: orjson.dumps(s.encode()) for k, s in slots.items()})
        if offsets:
            pipe.hset(self.offsets_key, mapping={f"{t}|{p}": o for (t, p), o in offsets.items()})
        if outbox is not None:
            pipe.hset(self.offsets_key, OUTBOX, outbox)
        with store_errors("cannot write the notifier's state to Redis"):
            pipe.execute()

    # -- the journal of webhook deliveries (notifications.delivery.Journal)
    def pending(self) -> list[Pending]:
        """The deliveries not yet done; an unreadable entry is logged and left in place."""
        out = []
        with store_errors("cannot read the notifier's pending deliveries from Redis"):
            for key, value in self.r.hscan_iter(self.deliveries_key, count=1000):
                try:
                    out.append(Pending.decode(key.decode(), value))
                except (ValueError, UnicodeDecodeError) as exc:
                    log.error("%s in %s; not delivered", exc, self.deliveries_key)
        return out

    def tried(self, p: Pending) -> None:
        with store_errors("cannot record a delivery's try in Redis"):
            self.r.hset(self.deliveries_key, p.key, p.encode())

    def done(self, p: Pending) -> None:
        with store_errors("cannot record a delivery done in Redis"):
            self.r.hdel(self.deliveries_key, p.key)
