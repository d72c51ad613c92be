"""Redis gone: a request needing it gets a 503 problem (with Retry-After), nothing crashes,
and the API keeps serving what needs no Redis."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.api.conftest import ACCOUNTS, build
from tests.conftest import stop_process


def test_redis_down_is_503_and_the_api_keeps_serving(start_redis, prefix):
    port, proc = start_redis()
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1,
                         retry=Retry(NoBackoff(), 0))  # fail at once: no waiting in tests
    env, server = build(client, prefix, ACCOUNTS)
    try:
        with env.http() as http:
            body = {"amount": "1.00", "reason": "outage"}
            headers = {**env.auth("admin"), "Idempotency-Key": "k"}
            stop_process(proc)
            for res in (http.get("/v1/accounts/alice", headers=env.auth("agent")),
                        http.post("/v1/accounts/alice/topups", json=body, headers=headers)):
                assert res.status_code == 503, res.text
                assert res.headers["content-type"] == "application/problem+json"
                assert res.headers["retry-after"] == "1"
            assert http.get("/openapi.json").status_code == 200  # still serving
    finally:
        server.stop()
