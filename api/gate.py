"""Who calls and whether they may go on, in one round trip to Redis (asyncio): the key's
record, its rate, and, for a balance read, the account itself.

A key's record (role, account) never changes once created, so a key checked once is kept
in memory by its SHA-256 (``KEEP`` of them at most) and not read again; what can change —
revocation, or the key's hash gone — is asked on every request, in the same round trip as
the rate bucket's token: a revoked key is refused from the next request on, as before.

On a standalone Redis the round trip is one script call: with redis-py's asyncio pipeline of
the same three commands a read cost 250-280 us of CPU in process against 150-190 with the
script (alternating runs, 2026-12-03). On Redis Cluster (a script reaches one slot) the three
commands are sent at once, to their nodes.
"""

from __future__ import annotations

import asyncio
import hmac

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

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
        # a standalone Redis: one script call; a cluster: the three commands at once (the
        # keys are in several slots, and redis-py's cluster pipeline refuses scripts)
        self._script = None if isinstance(client, RedisCluster) else \
            client.register_script(_CHECK % limiter.lua)
        self._bucket = client.register_script(limiter.lua)
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
        stored, revoked, taken, wait_ms, account = await self._ask(record, read)
        if stored is None or revoked is not None or \
                not hmac.compare_digest(stored, hashed.encode()):
            self._known.pop(hashed, None)
            raise _unauthorized()
        if not int(taken):
            wait = int(wait_ms) / 1000
            raise ApiProblem(429, "rate-limited", f"key {record.id} is over its rate of "
                             f"{self.limiter.rate:g} requests/s; retry after "
                             f"{retry_after(wait)} s", headers={"Retry-After": retry_after(wait)})
        return record, account

    async def _ask(self, record: ApiKey, read: str | None) -> tuple:
        """(the key's stored hash, its revocation time, token taken, ms to wait, the
        account's fields or None): one script call, or on Redis Cluster (whose scripts
        reach one slot) the same commands sent at once."""
        keys = [key_hash(self.prefix, record.id), self.limiter.key(record.id)]
        args = [self.limiter.rate, self.limiter.burst]
        with store_errors("cannot check an API key in Redis"):
            if self._script is not None:
                got = await self._script(keys=keys + ([read] if read else []), args=args)
                stored, revoked, taken, wait_ms, account = got
                return stored, revoked, taken, wait_ms, account if read else None
            (stored, revoked), (taken, wait_ms), account = await asyncio.gather(
                self.r.hmget(keys[0], "hash", "revoked_ms"),
                self._bucket(keys=keys[1:], args=args),
                self.r.hgetall(read) if read else _none())
            return stored, revoked, taken, wait_ms, account


async def _none() -> None:
    return None


#: the key's hash and revocation, the rate bucket's token (api/lua/bucket.lua, as a
#: function of its own KEYS and ARGV) and the account's fields, in one call. KEYS: the key's
#: hash, its bucket, [the account]; ARGV: rate, burst.
_CHECK = """
local function take(KEYS, ARGV)
%s
end
local k = redis.call('HMGET', KEYS[1], 'hash', 'revoked_ms')
local t = take({KEYS[2]}, ARGV)
local account = false
if KEYS[3] then account = redis.call('HGETALL', KEYS[3]) end
return {k[1], k[2], t[1], t[2], account}
"""


def _unauthorized() -> ApiProblem:
    return ApiProblem(401, "unauthorized", "a valid API key is needed: "
                      "Authorization: Bearer <key> (chargeflow apikey create)",
                      headers={"WWW-Authenticate": "Bearer"})
