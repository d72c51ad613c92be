"""The account API's limits (CONTRACT §7; issue 17 item 5): a request rate per key (a token
bucket in Redis, shared by every gateway process) and a bound on request bodies."""

from __future__ import annotations

import math
from importlib import resources

import redis

from balances.redis_errors import store_errors


class RateLimiter:
    """``rate`` requests per second per key on average, ``burst`` at once."""

    def __init__(self, client: redis.Redis, prefix: str, rate: float, burst: int):
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.prefix = prefix
        self.rate = rate
        self.burst = burst
        #: the script's text (``api.app`` sends it by its SHA1 in its own pipeline)
        self.lua = (resources.files("api") / "lua" / "bucket.lua").read_text()
        self._take = client.register_script(self.lua)

    def key(self, key_id: str) -> str:
        return f"{self.prefix}:api:bucket:{key_id}"

    def take(self, key_id: str) -> float:
        """0 when the request may go on, else the seconds until it may be tried again."""
        with store_errors("cannot check the rate limit in Redis"):
            taken, wait_ms = self._take(keys=[self.key(key_id)],
                                        args=[self.rate, self.burst])
        return 0.0 if int(taken) else int(wait_ms) / 1000


def retry_after(seconds: float) -> str:
    """A Retry-After header's whole seconds (at least 1)."""
    return str(max(1, math.ceil(seconds)))


class BodyLimit:
    """ASGI middleware: a request body above ``max_bytes`` gets 413 before the app sees it
    (by Content-Length, or counted as it arrives when there is none)."""

    def __init__(self, app, max_bytes: int, too_large):
        self.app = app
        self.max_bytes = max_bytes
        self.too_large = too_large  # an ASGI app answering 413

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    return await self.too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self.too_large(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
