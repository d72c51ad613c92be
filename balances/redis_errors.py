"""The one place where redis-py's exceptions become chargeflow's ``StoreError``.

redis-py raises two unrelated families: ``RedisError`` (connection, timeout, a server's
error reply) and, from the cluster client, ``RedisClusterException`` and its subclasses
(``Redis Cluster cannot be connected``, a slot no node covers), which are *not*
``RedisError``\\s. An except clause that names only the first lets a whole-cluster outage
through as an unexpected exception (measured: requests rejected INTERNAL_ERROR where they
should have waited). So no call site names redis-py's exceptions; each wraps its Redis
calls in ``store_errors`` (as httpx's ``map_httpcore_exceptions``), and a ``StoreError``
is what callers wait out (the engine) or report as an unreachable service (the CLI, exit 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import RedisClusterException

from charging.errors import StoreError

#: Every exception redis-py raises for a server, a connection or a cluster it cannot use.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Run the block; a redis-py failure inside leaves it as ``StoreError("<what>: ...")``,
    with the original as its cause. Other exceptions pass unchanged."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StoreError(f"{what}: {exc}") from exc
