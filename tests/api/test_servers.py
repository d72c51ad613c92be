"""The account API's two HTTP servers (``--api-server hypercorn|granian``) and its fast read:
HTTP/1.1 and HTTP/2 with prior knowledge on one port (port 0 reports the port it got), a
stop that lets an HTTP/1.1 request in flight finish and then refuses connections, a key
refused from the request after its revocation though it was checked (and kept) before, and
``GET /v1/accounts/{id}`` (answered before FastAPI's routing) saying what FastAPI says."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from api.keys import KeyStore
from bench.h2client import H2Client
from gateway.http import AsgiDoor, GranianDoor
from tests.api.test_cli import REPO, cli, data  # noqa: F401 - the data dir fixture

DOORS = pytest.mark.parametrize("door", [AsgiDoor, GranianDoor], ids=["hypercorn", "granian"])


async def _app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    if scope["path"] == "/slow":
        await asyncio.sleep(0.5)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": scope["http_version"].encode()})


@DOORS
def test_http1_and_h2c_on_one_port_and_a_stop_that_drains(door):
    async def main():
        srv = door("api", _app, ("127.0.0.1", 0), graceful_s=3)
        host, port = await srv.start()
        assert host == "127.0.0.1" and port > 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(50):  # the server may take a moment to accept
                try:
                    res = await http.get("/")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            assert (res.status_code, res.text) == (200, "1.1")
            h2 = await H2Client("127.0.0.1", port).open()
            status, _, body = await h2.request("GET", "/", b"")
            assert (status, body) == (200, b"2")
            await h2.close()
            slow = asyncio.create_task(http.get("/slow", headers={"connection": "close"}))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await srv.close()
            assert time.monotonic() - started < 3  # drained, not timed out
            res = await slow
            assert (res.status_code, res.text) == (200, "1.1")
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as again:
                await again.get(f"http://127.0.0.1:{port}/", timeout=2)

    asyncio.run(main())


def test_a_kept_key_is_refused_from_the_request_after_its_revocation(make_api):
    env = make_api(door=GranianDoor)
    record, key = KeyStore(env.client, env.prefix).create("selfcare", "alice")
    with env.http() as http:
        for _ in range(3):  # checked once, then kept by the API
            assert http.get("/v1/accounts/alice", headers={
                "Authorization": f"Bearer {key}"}).status_code == 200
        KeyStore(env.client, env.prefix).revoke(record.id)
        res = http.get("/v1/accounts/alice", headers={"Authorization": f"Bearer {key}"})
        assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
        # a key whose record is gone altogether is refused too
        other, other_key = KeyStore(env.client, env.prefix).create("admin")
        auth = {"Authorization": f"Bearer {other_key}"}
        assert http.get("/v1/accounts/bob", headers=auth).status_code == 200
        env.client.delete(f"{env.prefix}:apikey:{other.id}")
        assert http.get("/v1/accounts/bob", headers=auth).status_code == 401


@DOORS
def test_the_fast_read_answers_as_fastapi_does(make_api, door):
    env = make_api(door=door, rate_per_s=0.01, burst=4)
    mine = env.auth("selfcare")
    with env.http() as http:
        res = http.get("/v1/accounts/alice", headers=mine)
        assert res.status_code == 200 and res.headers["content-type"] == "application/json"
        doc = res.json()
        assert (doc["id"], doc["balance"], doc["available"]) == ("alice", "100.00", "100.00")
        assert set(doc) == {"id", "plan", "status", "allow_negative", "balance", "reserved",
                            "available", "allowances", "allowances_reserved", "sessions"}
        problem = http.get("/v1/accounts/bob", headers=mine)  # another's: not found
        assert problem.status_code == 404
        assert problem.headers["content-type"] == "application/problem+json"
        assert problem.json()["type"] == "urn:chargeflow:problem:no-account"
        for scheme in ("Basic", "bearer", ""):
            res = http.get("/v1/accounts/alice", headers={
                "Authorization": f"{scheme} {env.keys['selfcare']}".strip()})
            assert res.status_code == (200 if scheme == "bearer" else 401), scheme
        assert http.get("/v1/accounts/alice", headers=mine).status_code == 200
        # the bucket of 4 is spent: 429 with Retry-After, from the fast read as from FastAPI
        limited = http.get("/v1/accounts/alice", headers=mine)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert http.get("/v1/accounts/alice/ledger", headers=mine).status_code == 429
        # what the fast read leaves to FastAPI: a trailing slash, an id out of its pattern
        assert http.get("/v1/accounts/alice/", headers=env.auth("admin")).status_code in (
            307, 404)
        bad = http.get("/v1/accounts/" + "x" * 129, headers=env.auth("admin"))
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "account_id"


def test_chargeflow_api_on_granian(data):  # noqa: F811 - the fixture
    admin = json.loads(cli(data, "apikey", "create", "--role", "admin", "--json").stdout)
    env = {k: v for k, v in os.environ.items() if k != "CHARGEFLOW_REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "api", "--api", "127.0.0.1:0",
                             "--api-server", "granian", "--data-dir", str(data)], cwd=REPO,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line.startswith("api listening on 127.0.0.1:"), line + proc.stderr.read()
        with httpx.Client(base_url=f"http://{line.split()[-1]}", timeout=20) as http:
            auth = {"Authorization": f"Bearer {admin['key']}"}
            res = http.post("/v1/accounts/alice/topups", json={"amount": "1.00", "reason": "x"},
                            headers={**auth, "Idempotency-Key": "g1"})
            assert res.status_code == 201 and res.json()["balance"] == "6.00"
            assert http.get("/v1/accounts/alice", headers=auth).json()["balance"] == "6.00"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
