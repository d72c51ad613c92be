"""``Idempotency-Key`` for the API's money changes (CONTRACT §7): the same key with the same
request answers the first response again, applied once; the same key with another request is
refused (422).

A key is scoped to the API key that sent it and remembered in Redis,
``{prefix}:api:idem:<api key id>:<sha256 of the key>``, as JSON ``{"h": request hash}``
while the first request runs and ``{"h", "status", "body"}`` once it answered, for
``retention_s``. A repeat arriving while the first still runs waits for its answer.

The money itself is applied once by the top-up script, whatever happens here: the change's
top-up id derives from the same two keys (``topup_id``), so a repeat after this record was
lost (Redis restarted, the process died between the change and the record) is the script's
replay, never a second change. Only answers of changes made are remembered: a refused
request changed nothing, and may be sent again with the same key.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import orjson
import redis

from balances.redis_errors import store_errors

RETENTION_S = 24 * 3600
PENDING_S = 30  # a first request not answered by then (its process died) may be tried again


@dataclass(frozen=True)
class Stored:
    status: int
    body: dict


class KeyReused(Exception):
    """The key came with another request before."""


class StillRunning(Exception):
    """The first request with this key has not answered yet (after waiting ``wait_s``)."""


def request_hash(method: str, path: str, body: dict) -> str:
    return hashlib.sha256(orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
                          ).hexdigest()


def topup_id(key_id: str, idempotency_key: str) -> str:
    """The top-up id the change is applied under (at most 128 characters)."""
    return f"api:{key_id}:{hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]}"


class Idempotency:
    def __init__(self, client: redis.Redis, prefix: str, retention_s: int = RETENTION_S,
                 wait_s: float = 10.0):
        self.r = client
        self.prefix = prefix
        self.retention_s = retention_s
        self.wait_s = wait_s

    def _key(self, key_id: str, idempotency_key: str) -> str:
        return (f"{self.prefix}:api:idem:{key_id}:"
                f"{hashlib.sha256(idempotency_key.encode()).hexdigest()}")

    def begin(self, key_id: str, idempotency_key: str, req_hash: str) -> Stored | None:
        """None when this request is the first with the key (it now holds it: call
        ``finish`` or ``release``); the stored answer when it was answered before;
        KeyReused or StillRunning otherwise."""
        key = self._key(key_id, idempotency_key)
        deadline = time.monotonic() + self.wait_s
        pending = orjson.dumps({"h": req_hash})
        while True:
            with store_errors("cannot keep an Idempotency-Key in Redis"):
                if self.r.set(key, pending, nx=True, ex=PENDING_S):
                    return None
                raw = self.r.get(key)
            if raw is None:
                continue  # released meanwhile: try to take it
            found = orjson.loads(raw)
            if found["h"] != req_hash:
                raise KeyReused
            if "status" in found:
                return Stored(found["status"], found["body"])
            if time.monotonic() >= deadline:
                raise StillRunning
            time.sleep(0.02)

    def finish(self, key_id: str, idempotency_key: str, req_hash: str, stored: Stored) -> None:
        with store_errors("cannot keep an Idempotency-Key in Redis"):
            self.r.set(self._key(key_id, idempotency_key),
                       orjson.dumps({"h": req_hash, "status": stored.status,
                                     "body": stored.body}), ex=self.retention_s)

    def release(self, key_id: str, idempotency_key: str) -> None:
        """Forget a key whose request changed nothing."""
        with store_errors("cannot keep an Idempotency-Key in Redis"):
            self.r.delete(self._key(key_id, idempotency_key))
