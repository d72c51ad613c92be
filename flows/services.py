"""Which Redis a command talks to, decided once from the command line and the environment.

``--redis URL``, else ``CHARGEFLOW_REDIS_URL``, else the embedded redis-server of
``--data-dir`` (started on first use). URLs are redis-py's (``redis://``, ``rediss://`` for
TLS, ``unix://``, with user:password for ACLs); ``redis+cluster://host:port`` connects to a
Redis Cluster through any of its nodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from balances.embedded import EmbeddedRedis
from balances.redis_errors import store_errors

ENV_URL = "CHARGEFLOW_REDIS_URL"
DEFAULT_DATA_DIR = ".chargeflow"


def connect(url: str) -> redis.Redis | RedisCluster:
    """A client for a Redis URL (``redis+cluster://`` for a cluster); not yet connected."""
    if url.startswith("redis+cluster://"):
        return RedisCluster.from_url("redis://" + url[len("redis+cluster://"):])
    return redis.Redis.from_url(url)


@dataclass(frozen=True)
class Services:
    redis_url: str | None  # None: the embedded server of data_dir
    data_dir: Path
    prefix: str = "cf"
    fsync: str = "everysec"

    @classmethod
    def from_options(cls, redis_url: str | None, data_dir: str | None, prefix: str = "cf",
                     fsync: str = "everysec") -> Services:
        return cls(redis_url or os.environ.get(ENV_URL) or None,
                   Path(data_dir or DEFAULT_DATA_DIR), prefix, fsync)

    @property
    def embedded(self) -> EmbeddedRedis:
        return EmbeddedRedis(self.data_dir, self.fsync)

    def redis(self) -> redis.Redis | RedisCluster:
        """A connected client (raises ``StoreError`` when the server cannot be reached,
        ``ValueError`` when the URL is not one)."""
        url = self.redis_url or self.embedded.start()
        with store_errors(f"cannot reach Redis at {url}"):
            try:
                client = connect(url)  # a cluster client connects to its nodes here
            except ValueError as exc:  # not a URL redis-py reads: the user's to fix
                raise ValueError(f"{url!r} is not a Redis URL ({exc}); use redis://, "
                                 "rediss://, unix:// or redis+cluster://") from exc
            client.ping()
        return client
