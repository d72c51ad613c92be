"""Who calls and whether they may go on, in one round trip to Redis (asyncio): the key's
record, its rate, and, for a balance read, the account itself.

A key's record (role, account) never changes once created, so a key checked once is kept
in memory by its SHA-256 (``KEEP`` of them at most) and not read again; what can change —
revocation, or the key's hash gone — is asked on every request, in the same pipeline as
the rate bucket's token: a revoked key is refused from the next request on, as before.
"""

from __future__ import annotations

import hmac

import redis
import redis.asyncio as aioredis

from api.keys import ApiKey, digest, key_hash, parse_key, verified
from api.limits import RateLimiter, retry_after
from api.problems import ApiProblem
from balances.redis_errors import store_errors

#: the most checked keys kept in memory (beyond it the memory starts afresh)
KEEP = 10_000


class Gate:
    def __init__(self, client: aioredis.Redis, prefix: str, limiter: RateLimiter):
        self.r = client
        self.prefix = prefix
        self.limiter = limiter
        self._sha: str | None = None
        self._known: dict[str, ApiKey] = {}  # SHA-256 of a key -> its record

    async def check(self, key: str | None, read: str | None = None
                    ) -> tuple[ApiKey, dict | None]:
        """The caller's record, and HGETALL of ``read`` (a Redis key) when given, in one
        round trip once the key is known. ApiProblem 401 for no, unknown or revoked key,
        429 over its rate."""
        key_id = parse_key(key) if key is not None else None
        if key_id is None:
            raise _unauthorized()
        hashed = digest(key)
        record = self._known.get(hashed)
        if record is None:
            with store_errors("cannot read an API key from Redis"):
                raw = await self.r.hgetall(key_hash(self.prefix, key_id))
            record = verified(key_id, raw, key)
            if record is None:
                raise _unauthorized()
            if len(self._known) >= KEEP:
                self._known.clear()
            self._known[hashed] = record
        for attempt in (1, 2):
            replies = await self._ask(record, read)
            if attempt == 1 and isinstance(replies[1], redis.exceptions.NoScriptError):
                self._sha = None  # the server restarted or its scripts were flushed
                continue
            break
        with store_errors("cannot check an API key in Redis"):
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        stored, revoked = replies[0]
        if stored is None or revoked is not None or \
                not hmac.compare_digest(stored, hashed.encode()):
            self._known.pop(hashed, None)
            raise _unauthorized()
        taken, wait_ms = replies[1]
        if not int(taken):
            wait = int(wait_ms) / 1000
            raise ApiProblem(429, "rate-limited", f"key {record.id} is over its rate of "
                             f"{self.limiter.rate:g} requests/s; retry after "
                             f"{retry_after(wait)} s", headers={"Retry-After": retry_after(wait)})
        return record, replies[2] if read is not None else None

    async def _ask(self, record: ApiKey, read: str | None) -> list:
        with store_errors("cannot check an API key in Redis"):
            if self._sha is None:
                self._sha = await self.r.script_load(self.limiter.lua)
            pipe = self.r.pipeline(transaction=False)
            pipe.hmget(key_hash(self.prefix, record.id), "hash", "revoked_ms")
            pipe.evalsha(self._sha, 1, self.limiter.key(record.id), self.limiter.rate,
                         self.limiter.burst)
            if read is not None:
                pipe.hgetall(read)
            return await pipe.execute(raise_on_error=False)


def _unauthorized() -> ApiProblem:
    return ApiProblem(401, "unauthorized", "a valid API key is needed: "
                      "Authorization: Bearer <key> (chargeflow apikey create)",
                      headers={"WWW-Authenticate": "Bearer"})
