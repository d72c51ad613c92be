"""The session expiry index: when each open session's reservation is due for release.

Every write that opens or extends a session also adds it to the index (``lua/write.lua``,
under ``Keys.expiry``: one sorted set on a single Redis, one per slot on a cluster, scored by
the session's release deadline in ms). ``ExpiryIndex`` is the part of ``BalanceStore`` the
sweeper (balances/sweeper.py) reads and tidies it with.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis
from redis.cluster import RedisCluster

from balances.codec import Keys, session_member, split_member
from balances.redis_errors import store_errors


class ExpiryIndex:
    """Reading and tidying the expiry index: mixed into ``BalanceStore``, which sets the
    attributes below."""

    r: redis.Redis | RedisCluster
    cluster: bool
    keys: Keys

    def expired(self, now_ms: int, limit: int = 1000) -> list[tuple[str, str]]:
        """Sessions whose release deadline passed: (account, session), up to ``limit``."""
        found: list[tuple[str, str]] = []
        with store_errors("cannot read the session expiry index"):
            keys = (self.r.scan_iter(match=self.keys.expiry_pattern(), count=1000)
                    if self.cluster else [self.keys.expiry("")])  # a single Redis: one index
            for key in keys:
                for member in self.r.zrangebyscore(key, "-inf", now_ms, start=0,
                                                   num=limit - len(found)):
                    found.append(split_member(member))
                if len(found) >= limit:
                    break
        return found

    def rescore_expiry(self, deadlines: dict[tuple[str, str], int]) -> None:
        """Move index entries of live sessions to their later deadlines ((account, session)
        -> ms); an entry removed meanwhile stays removed, and none moves earlier."""
        pipe = self.r.pipeline(transaction=False)
        for (account, session), deadline in deadlines.items():
            pipe.zadd(self.keys.expiry(account), {session_member(account, session): deadline},
                      xx=True, gt=True)
        with store_errors("cannot update the session expiry index"):
            pipe.execute()

    def remove_expiry(self, members: Iterable[tuple[str, str]]) -> None:
        """Drop expiry-index entries (of sessions that no longer exist)."""
        pipe = self.r.pipeline(transaction=False)
        for account, session in members:
            pipe.zrem(self.keys.expiry(account), session_member(account, session))
        with store_errors("cannot update the session expiry index"):
            pipe.execute()
