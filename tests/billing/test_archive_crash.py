"""`chargeflow archive` killed (SIGKILL) again and again while it writes, then resumed:
every charge and ledger entry of the outbox is in the archive exactly once, the sums are
Redis's, and the hash chains hold. Each kill is made once the run has committed a batch of
its own, while it is writing the next ones (batches of a few entries: most of a run is
inside a transaction), and the test requires several kills to land before the end."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import psycopg
import redis

from balances.charger import Charger
from balances.store import BalanceStore
from billing.audit import verify
from catalog_cache.store import CatalogCache
from charging.requests import parse
from tests.balances.test_accounts_cli import cli, write
from tests.conftest import CATALOG_A, Clock, req
from tests.flows.conftest import REPO, cli_env

ACCOUNTS = 60
TOPUPS = 1500
EVENTS = 1500


def archived_entries(conn: psycopg.Connection) -> int:
    (n,) = conn.execute("SELECT coalesce(sum(entries), 0) FROM archive_streams").fetchone()
    conn.commit()
    return int(n)


def test_sigkill_at_any_moment_then_resume_archives_everything_exactly_once(
        start_redis, tmp_path, db_url, db):
    port, _ = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    assert cli("catalog", "load", write(tmp_path, "c.yaml", CATALOG_A), "--redis",
               url).exit_code == 0
    assert cli("accounts", "load", write(tmp_path, "a.yaml", "".join(
        f'- {{id: a{k}, plan: PREPAID_S, balance: "100.00"}}\n' for k in range(ACCOUNTS))),
        "--redis", url).exit_code == 0
    client = redis.Redis.from_url(url)
    store = BalanceStore(client, prefix="cf")
    rng = random.Random(7)
    for k in range(TOPUPS):
        assert store.topup(f"a{rng.randrange(ACCOUNTS)}", rng.randint(1, 10**7),
                           topup_id=f"t{k}").status == "ok"
    charger = Charger(store, CatalogCache(client, prefix="cf"), Clock())
    charged = []
    for k in range(0, EVENTS, 5):  # five requests per call: an outbox entry per account
        charged += charger.charge([parse(req(id=f"e{j}", kind="event",
                                             account=f"a{rng.randrange(ACCOUNTS)}",
                                             service="sms", used=1))
                                   for j in range(k, k + 5)])
    charged = [o.charge for o in charged if o.charge is not None]
    stream = store.keys.outbox("")
    total = client.xlen(stream)
    assert total > TOPUPS + ACCOUNTS

    args = [sys.executable, "-m", "flows.cli", "archive", "--until-idle", "--batch", "7",
            "--db", db_url, "--redis", url]
    partial = []
    for _ in range(12):
        before = archived_entries(db)
        proc = subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while proc.poll() is None and archived_entries(db) == before \
                and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is not None:
            break  # it finished before a kill
        time.sleep(rng.uniform(0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        now = archived_entries(db)
        if now < total:
            partial.append(now)
        if len(partial) >= 5:
            break
    assert len(partial) >= 3, f"too few kills landed before the end: {partial}"
    assert partial == sorted(partial)  # each resumed where the last commit stopped

    done = subprocess.run(args + ["--json"], cwd=REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert archived_entries(db) == total

    rows = db.execute("SELECT count(*), count(DISTINCT id), sum(cost) FROM charges").fetchone()
    want_cost = sum(c.cost for c in charged)  # micros
    assert rows == (len(charged), len(charged), want_cost)
    for k in range(ACCOUNTS):
        a = f"a{k}"
        n, total_delta = db.execute("SELECT count(*), sum(delta) FROM ledger WHERE account = "
                                    "%s", (a,)).fetchone()
        assert (n, total_delta) == (client.xlen(store.keys.ledger(a)), store.view(a).balance)
    (dupes,) = db.execute("SELECT count(*) FROM (SELECT 1 FROM ledger GROUP BY account, "
                          "entry_id HAVING count(*) > 1) d").fetchone()
    assert dupes == 0
    db.commit()
    report = verify(db)
    assert report.broken is None and report.accounts == ACCOUNTS
    assert client.xlen(stream) == 1  # trimmed up to the last archived entry
    client.close()


def test_without_until_idle_it_follows_the_outbox_and_stops_on_sigterm(start_redis, tmp_path,
                                                                       db_url, db):
    port, _ = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    assert cli("catalog", "load", write(tmp_path, "c.yaml", CATALOG_A), "--redis",
               url).exit_code == 0
    assert cli("accounts", "load", write(tmp_path, "a.yaml", '- {id: a0, plan: PREPAID_S, '
               'balance: "1.00"}\n'), "--redis", url).exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "archive", "--db", db_url,
                             "--redis", url, "--json"], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def wait_archived(n: int) -> None:
            deadline = time.monotonic() + 30
            while archived_entries(db) < n:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.02)

        wait_archived(1)  # the account load
        assert cli("topup", "a0", "2.00", "--redis", url).exit_code == 0
        wait_archived(2)  # followed, not exited
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert '"entries":2' in out and '"ledger":2' in out
