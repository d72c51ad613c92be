"""``chargeflow apikey create|list|revoke`` and ``chargeflow api`` as a user runs them, in a
data dir of their own (the embedded Redis): the key printed once and stored only hashed, a
revoked key refused from the next request, the API announced, serving, and stopped by
SIGTERM with exit 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis
from click.testing import CliRunner

from balances.embedded import EmbeddedRedis
from flows.cli import main
from tests.flows.conftest import SAMPLE_PATH

REPO = Path(__file__).resolve().parents[2]


class Ran:
    def __init__(self, result):
        self.returncode = result.exit_code
        self.stdout = result.stdout


def cli(data: Path, *args: str, check: bool = True) -> Ran:
    """The command in this process (the embedded Redis is a process of its own either way)."""
    result = CliRunner().invoke(main, [*args, "--data-dir", str(data)],
                                env={"CHARGEFLOW_REDIS_URL": None})
    if check:
        assert result.exit_code == 0, result.output
    return Ran(result)


@pytest.fixture
def data(tmp_path):
    data = tmp_path / "data"
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text('- {id: alice, plan: PREPAID_S, balance: "5.00"}\n')
    cli(data, "catalog", "load", str(SAMPLE_PATH))
    cli(data, "accounts", "load", str(accounts))
    yield data
    cli(data, "stop", check=False)


def test_keys_and_the_api_from_the_command_line(data):
    admin = json.loads(cli(data, "apikey", "create", "--role", "admin", "--name", "ops",
                           "--json").stdout)
    assert admin["role"] == "admin" and admin["key"].startswith(f"cfk_{admin['id']}_")
    selfcare = json.loads(cli(data, "apikey", "create", "--role", "selfcare", "--account",
                              "alice", "--json").stdout)
    for bad in (("--role", "selfcare"), ("--role", "agent", "--account", "alice"),
                ("--role", "selfcare", "--account", "nobody"), ("--role", "root")):
        res = cli(data, "apikey", "create", *bad, check=False)
        assert res.returncode == 1, bad
    listed = json.loads(cli(data, "apikey", "list", "--json").stdout)["keys"]
    assert [(k["id"], k["role"], k["account"]) for k in listed] == [
        (admin["id"], "admin", None), (selfcare["id"], "selfcare", "alice")]
    assert admin["key"] not in json.dumps(listed)

    env = {k: v for k, v in os.environ.items() if k != "CHARGEFLOW_REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "api", "--api", "127.0.0.1:0",
                             "--data-dir", str(data)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line.startswith("api listening on 127.0.0.1:"), line + proc.stderr.read()
        url = f"http://{line.split()[-1]}"
        with httpx.Client(base_url=url, timeout=20) as http:
            auth = {"Authorization": f"Bearer {admin['key']}"}
            res = http.post("/v1/accounts/alice/topups", json={"amount": "10.00",
                            "reason": "card"}, headers={**auth, "Idempotency-Key": "c1"})
            assert res.status_code == 201 and res.json()["balance"] == "15.00"
            mine = {"Authorization": f"Bearer {selfcare['key']}"}
            read = http.get("/v1/accounts/alice", headers=mine).json()
            assert read["balance"] == "15.00"
            # the API's account is the object of `chargeflow balance --json` (CONTRACT §5)
            assert read == json.loads(cli(data, "balance", "alice", "--json").stdout)
            cli(data, "apikey", "revoke", selfcare["id"])
            assert http.get("/v1/accounts/alice", headers=mine).status_code == 401
        assert cli(data, "apikey", "revoke", "nope", check=False).returncode == 1
        # only hashes are stored: no value under the prefix holds a key
        client = redis.Redis.from_url(EmbeddedRedis(data).url)
        hashes = [k for k in client.scan_iter(match="cf:apikey:*")]
        assert len(hashes) == 2
        for k in client.scan_iter(match="cf:*"):
            if client.type(k) == b"hash":
                blob = b"".join(client.hgetall(k).values())
                assert admin["key"].encode() not in blob
                assert selfcare["key"].encode() not in blob
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        out, err = proc.communicate()
        assert admin["key"] not in out + err and selfcare["key"] not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_opens_the_api_door_with_its_agent_limit(data):
    agent = json.loads(cli(data, "apikey", "create", "--role", "agent", "--json").stdout)
    env = {k: v for k, v in os.environ.items() if k != "CHARGEFLOW_REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--no-diameter",
                             "--no-nchf", "--api", "127.0.0.1:0", "--agent-adjust-limit", "5",
                             "--data-dir", str(data)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line.startswith("api listening on 127.0.0.1:"), line + proc.stderr.read()
        with httpx.Client(base_url=f"http://{line.split()[-1]}", timeout=20) as http:
            auth = {"Authorization": f"Bearer {agent['key']}"}
            for amount, status in (("-5.01", 403), ("-5.00", 201)):
                res = http.post("/v1/accounts/alice/adjustments", json={
                    "amount": amount, "reason": "limit"},
                    headers={**auth, "Idempotency-Key": amount})
                assert res.status_code == status, res.text
            assert res.json()["balance"] == "0.00"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
