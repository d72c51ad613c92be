"""api.gate.Gate on a standalone Redis (one script call) and on a Redis Cluster (a pipeline:
the keys are in several slots): the key's record, its revocation, its rate and the account
read in one round trip, with the same answers on both."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncCluster

from api.app import async_twin
from api.gate import Gate
from api.keys import KeyStore
from api.limits import RateLimiter
from api.problems import ApiProblem


def _check(sync, make_async, prefix: str) -> None:
    keys = KeyStore(sync, prefix)
    record, key = keys.create("selfcare", "alice")
    account = f"{prefix}:acct:alice"
    sync.hset(account, mapping={"x": "1"})
    limiter = RateLimiter(sync, prefix, rate=0.01, burst=3)

    async def main():
        client = make_async()
        try:
            gate = Gate(client, prefix, limiter)
            got, raw = await gate.check(key, account)
            assert got == record and raw in ({b"x": b"1"}, [b"x", b"1"])
            got, raw = await gate.check(key)  # no read: no account
            assert got == record and raw is None
            for bad in (None, "nonsense", key[:-1] + ("A" if key[-1] != "A" else "B")):
                with pytest.raises(ApiProblem) as refused:
                    await gate.check(bad)
                assert refused.value.status == 401
            got, _ = await gate.check(key, f"{prefix}:acct:nobody")
            with pytest.raises(ApiProblem) as limited:  # the burst of 3 is spent
                await gate.check(key)
            assert limited.value.status == 429 and limited.value.headers["Retry-After"]
            keys.revoke(record.id)
            with pytest.raises(ApiProblem) as revoked:  # kept, yet refused at once
                await gate.check(key)
            assert revoked.value.status == 401
        finally:
            await client.aclose()

    asyncio.run(main())


def test_gate_on_standalone_redis(redis_client, prefix):
    _check(redis_client, lambda: async_twin(redis_client), prefix)


def test_gate_on_redis_cluster(redis_cluster, prefix):
    node = redis_cluster.get_default_node()
    _check(redis_cluster, lambda: AsyncCluster(host=node.host, port=node.port), prefix)


def test_async_twin_speaks_to_the_same_server(redis_client, prefix):
    redis_client.set(f"{prefix}:twin", b"same")

    async def main():
        twin = async_twin(redis_client)
        try:
            assert isinstance(twin, aioredis.Redis)
            assert await twin.get(f"{prefix}:twin") == b"same"
        finally:
            await twin.aclose()

    asyncio.run(main())
