"""`chargeflow catalog load / accounts load / balance / topup / sweep / stop` (CONTRACT §5).

The commands always use the key prefix ``cf``, so these tests never point them at the shared
Redis: each test gets a private redis-server (``start_redis``), or the embedded one in a
temporary ``--data-dir``.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import orjson
import pytest
import redis
from click.testing import CliRunner

from balances.charger import Charger
from balances.embedded import PIDFILE, SOCKET
from balances.store import BalanceStore
from catalog_cache.store import CatalogCache
from charging.requests import parse
from flows.cli import main
from tests.conftest import CATALOG_A, Clock, req

UNREACHABLE = "redis://127.0.0.1:1"


def cli(*args: str):
    runner = CliRunner(env={"CHARGEFLOW_REDIS_URL": None, "CHARGEFLOW_DATA_DIR": None})
    return runner.invoke(main, list(args), catch_exceptions=False)


def as_json(result) -> dict:
    return orjson.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def server(start_redis, tmp_path):
    """(url, client) of a private Redis with catalog A loaded through the CLI."""
    port, _proc = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG_A)
    res = cli("catalog", "load", str(catalog), "--redis", url, "--json")
    assert res.exit_code == 0, res.output
    assert as_json(res)["version"] == "test-a" and as_json(res)["loaded"] is True
    client = redis.Redis.from_url(url)
    yield url, client
    client.close()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def account_keys(client: redis.Redis) -> list[bytes]:
    return sorted(client.scan_iter(match="cf:{*}:acct"))


YAML_ACCOUNTS = """\
- {id: alice, plan: PREPAID_S, balance: "10.00"}
- id: bob
  plan: VOICE_ONLY
  balance: "0.50"
  status: blocked
  allow_negative: true
"""


def test_accounts_load_yaml_then_balance_json(server, tmp_path):
    url, client = server
    res = cli("accounts", "load", write(tmp_path, "a.yaml", YAML_ACCOUNTS), "--redis", url,
              "--json")
    assert res.exit_code == 0, res.output
    assert as_json(res) == {"created": 2, "updated": 0}

    res = cli("balance", "alice", "--redis", url, "--json")
    assert res.exit_code == 0, res.output
    doc = as_json(res)
    assert {"id", "plan", "status", "balance", "reserved", "allowances", "sessions"} <= set(doc)
    assert (doc["id"], doc["plan"], doc["status"]) == ("alice", "PREPAID_S", "active")
    assert (doc["balance"], doc["reserved"]) == ("10.00", "0.00")
    assert doc["allowances"] == {"data": 1073741824} and doc["sessions"] == []
    bob = as_json(cli("balance", "bob", "--redis", url, "--json"))
    assert (bob["plan"], bob["status"], bob["balance"], bob["allowances"]) == (
        "VOICE_ONLY", "blocked", "0.50", {})

    # charged through the engine's store: balance shows the session and the reservation
    store = BalanceStore(client, prefix="cf")
    Charger(store, CatalogCache(client, prefix="cf"), Clock()).charge([
        parse(req(id="s:0", kind="initial", account="alice", service="voice", session="s")),
        parse(req(id="d:0", kind="initial", account="alice", service="data", session="d",
                  requested=1000)),
        parse(req(id="e", kind="event", account="alice", service="sms", used=1))])
    doc = as_json(cli("balance", "alice", "--redis", url, "--json"))
    assert (doc["balance"], doc["reserved"]) == ("9.91", "0.51")
    assert doc["allowances"] == {"data": 1073741824}
    assert {s["session"] for s in doc["sessions"]} == {"s", "d"}
    (voice,) = [s for s in doc["sessions"] if s["session"] == "s"]
    assert (voice["service"], voice["granted"], voice["reserved"]) == ("voice", 300, "0.51")

    human = cli("balance", "alice", "--redis", url)
    assert human.exit_code == 0 and "9.91" in human.stdout
    missing = cli("balance", "nobody", "--redis", url, "--json")
    assert missing.exit_code == 1 and "nobody" in as_json(missing)["error"]


def test_accounts_load_jsonl_and_reload_keeps_balances(server, tmp_path):
    url, client = server
    lines = [{"id": "a1", "plan": "PREPAID_S", "balance": "1.25"},
             {"id": "a2", "plan": "DAILY_SMS", "balance": "3", "allow_negative": False}]
    path = write(tmp_path, "a.jsonl",
                 "\n".join(orjson.dumps(x).decode() for x in lines) + "\n\n")
    res = cli("accounts", "load", path, "--redis", url, "--json")
    assert res.exit_code == 0, res.output
    assert as_json(res) == {"created": 2, "updated": 0}
    assert as_json(cli("balance", "a2", "--redis", url, "--json"))["balance"] == "3.00"
    # loading again updates plan/status, never the balance (which only moves via the ledger)
    lines[0].update(balance="999", status="blocked")
    write(tmp_path, "a.jsonl", "\n".join(orjson.dumps(x).decode() for x in lines))
    res = cli("accounts", "load", path, "--redis", url, "--json")
    assert as_json(res) == {"created": 0, "updated": 2}
    doc = as_json(cli("balance", "a1", "--redis", url, "--json"))
    assert (doc["balance"], doc["status"]) == ("1.25", "blocked")
    assert len(BalanceStore(client, prefix="cf").ledger("a1")) == 1


def test_accounts_load_is_all_or_nothing_and_lists_every_problem(server, tmp_path):
    url, client = server
    bad_yaml = write(tmp_path, "bad.yaml", """\
- {id: ok1, plan: PREPAID_S, balance: "1.00"}
- {id: bad1, plan: NO_SUCH_PLAN, balance: "1.00"}
- {id: bad2, plan: PREPAID_S, balance: "1.0000001", colour: red}
- {id: ok1, plan: PREPAID_S}
- {id: "has space", plan: PREPAID_S, status: frozen}
""")
    res = cli("accounts", "load", bad_yaml, "--redis", url, "--json")
    assert res.exit_code == 1
    doc = as_json(res)
    paths = {p["path"] for p in doc["problems"]}
    assert {"[1].plan", "[2].balance", "[2]", "[3]", "[4].id", "[4].status"} <= paths
    assert {"path": "[2]", "reason": "unknown key 'colour' — did you mean 'country'?"} in \
        doc["problems"]
    dup = [p for p in doc["problems"] if p["path"] == "[3]"][0]
    assert "twice" in dup["reason"] and "[0]" in dup["reason"]
    assert account_keys(client) == []  # the good record was not written either

    bad_jsonl = write(tmp_path, "bad.jsonl", "\n".join([
        '{"id": "j1", "plan": "PREPAID_S", "balance": "1.00"}',
        '{"id": "j2", "plan": "PREPAID_S", "balance": "1.00", "allow_negative": "yes"}',
        '{"id": "j3", "plan": ',
        '{"id": "j4", "plan": "PREPAID_S", "balance": "ten"}']))
    res = cli("accounts", "load", bad_jsonl, "--redis", url)
    assert res.exit_code == 1
    for where in ("line 2.allow_negative", "line 3", "line 4.balance"):
        assert where in res.stderr, res.stderr
    assert account_keys(client) == []


def test_accounts_load_needs_a_loaded_catalog(start_redis, tmp_path):
    port, _ = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    res = cli("accounts", "load", write(tmp_path, "a.yaml", YAML_ACCOUNTS), "--redis", url,
              "--json")
    assert res.exit_code == 1
    assert "catalog" in orjson.dumps(as_json(res)).decode()


def test_topup_with_and_without_id(server, tmp_path):
    url, client = server
    cli("accounts", "load", write(tmp_path, "a.yaml", YAML_ACCOUNTS), "--redis", url)
    res = cli("topup", "alice", "5.50", "--redis", url, "--json")
    assert res.exit_code == 0, res.output
    assert as_json(res) == {"id": "alice", "applied": True, "balance": "15.50",
                            "topup_id": None}
    plain = cli("topup", "alice", "5.50", "--redis", url, "--json")
    assert as_json(plain)["balance"] == "21.00"  # without an id, every call applies

    first = cli("topup", "alice", "1.00", "--id", "pay-1", "--redis", url, "--json")
    again = cli("topup", "alice", "1.00", "--id", "pay-1", "--redis", url, "--json")
    assert first.exit_code == again.exit_code == 0
    assert as_json(first) == {"id": "alice", "applied": True, "balance": "22.00",
                              "topup_id": "pay-1"}
    assert as_json(again)["applied"] is False and as_json(again)["balance"] == "22.00"
    ledger = BalanceStore(client, prefix="cf").ledger("alice")
    assert [(e["delta"], e["reason"]) for e in ledger] == [
        (10_000_000, "open"), (5_500_000, "topup"), (5_500_000, "topup"), (1_000_000, "topup")]
    ids = [e["id"] for e in ledger]
    # a top-up without an id is ledgered under an id of its own (the archive keeps each once)
    assert ids[0] == "open" and ids[3] == "pay-1" and ids[1] != ids[2]
    assert all(re.fullmatch(r"topup:[0-9]+", i) for i in ids[1:3]), ids

    debit = cli("topup", "alice", "--redis", url, "--json", "--", "-2.00")
    assert debit.exit_code == 0 and as_json(debit)["balance"] == "20.00"
    for args in (["alice", "abc"], ["alice", "0"], ["alice", "0.0000001"], ["nobody", "1"],
                 ["alice", "-100"], ["alice", "9007199254.740992"], ["alice", "\u0663"]):
        res = cli("topup", "--redis", url, "--json", "--", *args)
        assert res.exit_code == 1, (args, res.output)
        assert "error" in as_json(res)
    assert as_json(cli("balance", "alice", "--redis", url, "--json"))["balance"] == "20.00"
    # a payment id is remembered 90 days by default (request ids: 7), or for ever, or up to
    # the store's limit
    from balances.topups import MAX_ID_RETENTION_S

    too_long = cli("topup", "alice", "1", "--id", "x", "--id-retention-s",
                   str(MAX_ID_RETENTION_S + 1), "--redis", url, "--json")
    assert too_long.exit_code == 1
    assert not client.exists(BalanceStore(client, prefix="cf").keys.topup("alice", "x"))
    keys = BalanceStore(client, prefix="cf").keys
    assert 89 * 86400 < client.ttl(keys.topup("alice", "pay-1")) <= 90 * 86400
    kept = cli("topup", "alice", "0.50", "--id", "pay-0", "--id-retention-s", "0", "--redis",
               url, "--json")
    assert kept.exit_code == 0 and client.ttl(keys.topup("alice", "pay-0")) == -1
    human = cli("topup", "alice", "1", "--id", "pay-1", "--redis", url)
    assert human.exit_code == 0 and "already applied" in human.stdout


@pytest.mark.parametrize("args", [["topup", "alice", "-2.00"], ["topup", "alice"],
                                  ["balance"], ["balance", "alice", "--no-such-flag"]])
def test_usage_errors_exit_1(server, args):
    url, _ = server
    res = cli(*args, "--redis", url)
    assert res.exit_code == 1, res.output


def test_sweep_command(server):
    url, _ = server
    res = cli("sweep", "--redis", url, "--json")
    assert res.exit_code == 0 and as_json(res) == {"released": 0}


@pytest.mark.parametrize("args", [
    ["catalog", "load", "CATALOG"], ["accounts", "load", "ACCOUNTS"], ["balance", "alice"],
    ["topup", "alice", "1.00"], ["topup", "alice", "1.00", "--id", "x"], ["sweep"]])
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_unreachable_redis_exits_2(tmp_path, args, json_flag):
    files = {"CATALOG": write(tmp_path, "c.yaml", CATALOG_A),
             "ACCOUNTS": write(tmp_path, "a.yaml", YAML_ACCOUNTS)}
    args = [files.get(a, a) for a in args]
    started = time.monotonic()
    res = cli(*args, "--redis", UNREACHABLE, *json_flag)
    assert res.exit_code == 2, res.output
    assert "127.0.0.1:1" in res.output
    assert time.monotonic() - started < 15


# -- the embedded server -------------------------------------------------------------------

def _pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfdata")
    yield d
    pid = _pid(d)  # never leave an embedded server behind
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_embedded_server_is_started_reused_and_stopped(data_dir, tmp_path):
    catalog = write(tmp_path, "c.yaml", CATALOG_A)
    accounts = write(tmp_path, "a.yaml", YAML_ACCOUNTS)
    dd = str(data_dir)
    res = cli("catalog", "load", catalog, "--data-dir", dd, "--json")
    assert res.exit_code == 0, res.output
    pid = _pid(data_dir)
    assert pid is not None and _alive(pid)
    sock = data_dir / SOCKET
    assert sock.is_socket()
    direct = redis.Redis(unix_socket_path=str(sock))
    assert direct.config_get("port") == {"port": "0"}  # no TCP port: the socket only
    assert direct.config_get("appendonly") == {"appendonly": "yes"}
    direct.close()

    assert cli("accounts", "load", accounts, "--data-dir", dd).exit_code == 0
    assert cli("topup", "alice", "1", "--id", "t", "--data-dir", dd).exit_code == 0
    doc = as_json(cli("balance", "alice", "--data-dir", dd, "--json"))
    assert doc["balance"] == "11.00"
    assert _pid(data_dir) == pid  # every command reused the one server

    res = cli("stop", "--data-dir", dd, "--json")
    assert res.exit_code == 0 and as_json(res) == {
        "stopped": {"redis": True, "broker": False, "postgres": False}}
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)
    again = cli("stop", "--data-dir", dd, "--json")
    assert again.exit_code == 0 and as_json(again) == {
        "stopped": {"redis": False, "broker": False, "postgres": False}}

    # the data survives in the append-only file: a later command starts it again
    doc = as_json(cli("balance", "alice", "--data-dir", dd, "--json"))
    assert doc["balance"] == "11.00"
    new_pid = _pid(data_dir)
    assert new_pid is not None and new_pid != pid and _alive(new_pid)
    assert cli("stop", "--data-dir", dd).exit_code == 0


def test_balance_and_topup_of_an_unreadable_account_exit_1_with_a_message(server, tmp_path):
    """An account whose hash lost a field: ``balance`` printed a traceback; ``topup``
    credited it (plan missing) or wrote a balance with no ledger entry (ver not a number)."""
    url, client = server
    cli("accounts", "load", write(tmp_path, "a.yaml", YAML_ACCOUNTS), "--redis", url)
    client.hdel("cf:{alice}:acct", "plan")
    res = cli("balance", "alice", "--redis", url, "--json")
    assert res.exit_code == 1
    assert "'plan' is missing" in as_json(res)["error"] and "Traceback" not in res.output
    before = client.hgetall("cf:{alice}:acct")
    res = cli("topup", "alice", "1.00", "--redis", url, "--json")
    assert res.exit_code == 1 and "nothing was applied" in as_json(res)["error"]
    assert client.hgetall("cf:{alice}:acct") == before
    assert [e["id"] for e in BalanceStore(client, prefix="cf").ledger("alice")] == ["open"]
