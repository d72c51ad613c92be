"""The notifier's state in Redis, under the configuration's key prefix.

* ``{prefix}:notify:state:{account}`` — a hash: slot (rule and threshold, see
  ``notifications.evaluate``) -> its state as JSON (armed/fired, crossings so far, ...).
* ``{prefix}:notify:offsets:{group}`` — a hash: ``topic|partition`` -> the next offset whose
  events are not yet produced. A message below it was handled already and is skipped, also
  when the consumer group's own commit was lost (a crash between the two). Its field
  ``outbox`` is the id of the last outbox entry handled (the balance changes made outside
  the engine: top-ups and adjustments).

Both are written in one MULTI/EXEC transaction after the batch's events are on the broker,
so the states never run ahead of the events (a crash before the write re-reads the batch
and emits the same events again, with the same ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson
import redis

from balances.redis_errors import store_errors
from notifications.evaluate import Slot

OUTBOX = "outbox"  # the offsets' field of the outbox position (no "|": not a partition)


class NotifyState:
    def __init__(self, client: redis.Redis, prefix: str, group: str):
        self.r = client
        self.prefix = prefix
        self.offsets_key = f"{prefix}:notify:offsets:{group}"

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
             offsets: Mapping[tuple[str, int], int], outbox: str | None = None) -> None:
        pipe = self.r.pipeline(transaction=True)
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
