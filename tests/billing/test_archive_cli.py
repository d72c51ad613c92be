"""`chargeflow archive` and `audit verify` as a user runs them (CONTRACT §8.1): the
embedded Redis and the embedded PostgreSQL of one --data-dir, engine charges from `run
--input`, CLI top-ups and account loads; and a --db that is wrong or unreachable."""

from __future__ import annotations

import subprocess
import sys

import orjson
import psycopg
import pytest

from billing.db import EmbeddedPostgres
from billing.outbox import micros
from tests.balances.test_accounts_cli import as_json, cli
from tests.conftest import CATALOG_A, REDIS_URL
from tests.flows.conftest import REPO, cli_env

N_ACCOUNTS = 40


def chargeflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)


def test_a_new_user_archives_engine_charges_top_ups_and_accounts(tmp_path_factory):
    home = tmp_path_factory.mktemp("cf")
    dd = str(home / "d")
    (home / "c.yaml").write_text(CATALOG_A)
    (home / "a.yaml").write_text("".join(
        f'- {{id: a{k}, plan: PREPAID_S, balance: "20.00", country: DE}}\n'
        for k in range(N_ACCOUNTS)))
    lines = []
    for k in range(300):
        a = f"a{k % N_ACCOUNTS}"
        lines.append({"id": f"e{k}", "kind": "event", "account": a, "service": "sms",
                      "ts": "2026-11-24T10:00:00+01:00", "used": 1})
    lines.append(dict(lines[0]))  # a replay: charged once
    lines.append({"id": "s:0", "kind": "initial", "account": "a1", "service": "voice",
                  "session": "s", "seq": 0, "ts": "2026-11-30T23:59:00+01:00",
                  "destination": "4917612345", "requested": 60})
    lines.append({"id": "s:1", "kind": "terminate", "account": "a1", "service": "voice",
                  "session": "s", "seq": 1, "ts": "2026-12-01T10:00:30+01:00", "used": 90})
    (home / "in.jsonl").write_text("".join(orjson.dumps(x).decode() + "\n" for x in lines))
    try:
        assert cli("catalog", "load", str(home / "c.yaml"), "--data-dir", dd).exit_code == 0
        assert cli("accounts", "load", str(home / "a.yaml"), "--data-dir", dd).exit_code == 0
        assert cli("topup", "a3", "5.00", "--id", "pay-1", "--data-dir", dd).exit_code == 0
        assert cli("topup", "a3", "5.00", "--id", "pay-1", "--data-dir", dd).exit_code == 0
        ran = chargeflow("run", "--input", str(home / "in.jsonl"), "--output",
                         str(home / "out"), "--data-dir", dd)
        assert ran.returncode == 0, ran.stderr
        emitted = [orjson.loads(x) for x in (home / "out" / "charges.jsonl").read_bytes()
                   .splitlines()]
        charges = list({c["id"]: c for c in emitted}.values())  # the replay's charge again
        assert (len(emitted), len(charges)) == (302, 301)  # events and the session's end

        res = cli("archive", "--until-idle", "--data-dir", dd, "--json")
        assert res.exit_code == 0, res.output
        doc = as_json(res)
        assert (doc["charges"], doc["account_changes"]) == (301, N_ACCOUNTS)
        assert doc["ledger"] == N_ACCOUNTS + 1 + 301  # openings, the top-up, the debits
        with psycopg.connect(EmbeddedPostgres(home / "d").url) as conn:
            got = conn.execute("SELECT count(*), count(DISTINCT id), sum(cost) FROM "
                               "charges").fetchone()
            assert got == (301, 301, sum(micros(c["cost"], "cost") for c in charges))
            # the session ends in December (UTC), the events are of November: two partitions
            assert conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                                "'charges'::regclass").fetchone() == (2,)
            (a3,) = conn.execute("SELECT sum(delta) FROM ledger WHERE account = "
                                 "'a3'").fetchone()
        balance = as_json(cli("balance", "a3", "--data-dir", dd, "--json"))["balance"]
        assert a3 == micros(balance, "balance")

        again = cli("archive", "--until-idle", "--data-dir", dd, "--json")
        assert as_json(again)["entries"] == 0
        verified = cli("audit", "verify", "--data-dir", dd)
        assert verified.exit_code == 0 and f"of {N_ACCOUNTS} accounts" in verified.stdout
    finally:
        stopped = as_json(cli("stop", "--data-dir", dd, "--json"))["stopped"]
    assert stopped["postgres"] and stopped["redis"]
    assert not EmbeddedPostgres(home / "d").running()


@pytest.mark.parametrize("url, code, says", [
    ("postgresql://billing:s3cret@127.0.0.1:1/chargeflow", 2,
     "cannot reach PostgreSQL at postgresql://billing:***@127.0.0.1:1/chargeflow"),
    ("host=/nonexistent dbname=x", 2, "cannot reach PostgreSQL"),
    ("this is = not a url", 1, "is not a PostgreSQL connection string"),
])
def test_a_wrong_db_is_named_with_what_to_do(url, code, says, redis_client):
    # the Redis is reachable (nothing is read from it: the database is what fails)
    for command in (["archive", "--until-idle", "--redis", REDIS_URL], ["audit", "verify"]):
        res = cli(*command, "--db", url)
        assert res.exit_code == code, res.output
        assert says in res.stderr and "s3cret" not in res.output + res.stderr


def test_archive_in_a_data_dir_where_nothing_was_loaded_starts_nothing(tmp_path_factory):
    dd = tmp_path_factory.mktemp("empty") / "d"
    res = cli("archive", "--until-idle", "--data-dir", str(dd))
    assert res.exit_code == 1 and "nothing was loaded there" in res.stderr
    assert not (dd / "postgres").exists()
