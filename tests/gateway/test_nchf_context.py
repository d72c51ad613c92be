"""The Nchf contexts in Redis (gateway.nchf.context) on a standalone server and on a Redis
Cluster: numbering, retransmissions found by body or by sequence number, rating groups
opened and closed again, release."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncCluster

from gateway.nchf.context import SLOTS, Contexts
from tests.conftest import REDIS_URL


def scenario(make_client, prefix: str) -> None:
    async def main():
        client = make_client()
        try:
            ctx = Contexts(client, prefix, ttl_s=60)
            assert await ctx.claim_create("c1", "ref1") == "ref1"
            assert await ctx.claim_create("c1", "other") == "ref1"  # the same create body
            assert await ctx.create("ref1", "alice", "c1", 0)
            assert not await ctx.create("ref1", "alice", "c1", 0)
            first = await ctx.admit("ref1", "d1", False, 0, "update", [10, 20])
            assert (first.account, first.n, first.replay, first.opened) == \
                ("alice", 1, False, {10: 1, 20: 1})
            again = await ctx.admit("ref1", "d1", False, 0, "update", [10, 20])
            assert (again.n, again.replay) == (1, True)  # same body: same message
            await ctx.unopen("ref1", 1, [20])  # rating group 20's initial was refused
            second = await ctx.admit("ref1", "d2", False, 0, "update", [10, 20])
            assert (second.n, second.opened) == (2, {10: 1, 20: 2})
            # flagged, another body, the last message's sequence number: that message
            flagged = await ctx.admit("ref1", "d2b", True, 0, "update", [10, 20])
            assert (flagged.n, flagged.replay) == (2, True)
            # not flagged: a new message even with the same sequence number
            assert (await ctx.admit("ref1", "d3", False, 0, "update", [10])).n == 3
            released = await ctx.admit("ref1", "d4", False, 0, "release", [30])
            assert (released.n, released.opened) == (4, {10: 1, 20: 2, 30: -1})
            assert await ctx.admit("ref1", "d5", False, 0, "update", [10]) is None
            assert (await ctx.admit("ref1", "d4", False, 0, "release", [30])).replay
            assert await ctx.admit("nosuch", "d1", False, 0, "update", [10]) is None
            # only the last SLOTS messages are remembered by their body
            for i in range(SLOTS + 1):
                await ctx.claim_create(f"x{i}", "ref2")
            await ctx.create("ref2", "bob", "c2", 0)
            for i in range(1, SLOTS + 2):
                await ctx.admit("ref2", f"m{i}", False, i, "update", [1])
            assert (await ctx.admit("ref2", "m1", False, 1, "update", [1])).n == SLOTS + 2
            assert (await ctx.admit("ref2", f"m{SLOTS + 1}", False, 0, "update", [1])).replay
        finally:
            await client.aclose()

    asyncio.run(main())


def test_contexts_on_a_standalone_server(redis_client, prefix):
    scenario(lambda: aioredis.Redis.from_url(REDIS_URL), prefix)
    assert 0 < redis_client.ttl(f"{prefix}:nchf:{{ref1}}") <= 60


def test_contexts_on_a_cluster(redis_cluster, prefix):
    node = redis_cluster.get_default_node()
    scenario(lambda: AsyncCluster(host=node.host, port=node.port), prefix)

