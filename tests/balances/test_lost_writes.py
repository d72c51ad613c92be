"""A Redis that comes back without acknowledged writes (a failover to a lagging replica, a
restore, an OS crash under ``appendfsync everysec``) must not let an engine's cached state
overwrite what was written since.

Seen on 1d4aa33: versions counted up by one, so after Redis lost the engine's last write
(version 3 -> 2 again) one top-up gave the account version 3 once more; the engine's next
write, computed from its cached balance of before the top-up, passed the version check and
the top-up was gone (the ledger no longer reconciled). Versions now never repeat.
"""

from __future__ import annotations

import orjson
import redis
from click.testing import CliRunner

from balances.admin import ledger_reconciles
from balances.charger import Charger
from balances.store import BalanceStore
from catalog_cache.store import CatalogCache
from charging.errors import StoreError
from charging.requests import parse
from flows.cli import main
from tests.conftest import CATALOG_A, Clock, req, stop_process

SMS = 90_000  # micros of one SMS


def cli(*args: str):
    res = CliRunner(env={"CHARGEFLOW_REDIS_URL": None}).invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res


def sms(rid: str):
    return parse(req(id=rid, kind="event", account="alice", service="sms", used=1))


def test_a_topup_after_redis_lost_a_write_is_never_overwritten(start_redis, tmp_path):
    port, proc = start_redis()  # a private server: SIGKILLed and restored below
    url = f"redis://127.0.0.1:{port}/0"
    (tmp_path / "catalog.yaml").write_text(CATALOG_A)
    (tmp_path / "accounts.yaml").write_text("- {id: alice, plan: PREPAID_S, balance: '10.00'}\n")
    cli("catalog", "load", str(tmp_path / "catalog.yaml"), "--redis", url)
    cli("accounts", "load", str(tmp_path / "accounts.yaml"), "--redis", url)

    client = redis.Redis.from_url(url)
    store = BalanceStore(client)  # the CLI's prefix, "cf"
    charger = Charger(store, CatalogCache(client), Clock())
    assert charger.charge([sms("e1")])[0].decision.result == "SUCCESS"
    client.save()  # the snapshot Redis will come back from
    assert [o.decision.result for o in charger.charge([sms("e2"), sms("e3")])] == \
        ["SUCCESS", "SUCCESS"]  # one write: acknowledged, cached, then lost

    stop_process(proc)  # SIGKILL
    start_redis(port=port)  # the same directory: the snapshot of after e1
    assert store.view("alice").balance == 10_000_000 - SMS
    res = cli("topup", "alice", "5.00", "--redis", url, "--json")
    assert orjson.loads(res.output)["balance"] == "14.91"

    for _ in range(3):  # the engine waits out the restart (its connection was cut)
        try:
            out = charger.charge([sms("e4")])
            break
        except StoreError:
            continue
    assert out[0].decision.result == "SUCCESS"
    after = store.view("alice")
    # the top-up stays: 10.00 - e1 + 5.00 - e4 (e2 and e3 were lost with the write)
    assert after.balance == 10_000_000 - SMS + 5_000_000 - SMS  # was 10.00 - 4 SMS
    assert out[0].record()["decision"]["balance"] == "14.82"
    ledger = store.ledger("alice")
    ids = [e["id"] for e in ledger]
    assert ids[:2] == ["open", "e1"] and ids[3] == "e4"
    assert ids[2].startswith("topup:")  # the top-up's own id (it had no --id)
    assert ledger_reconciles(ledger, after.balance)
    # the cache learnt the version the script wrote: the next batch is one write, with no
    # read and no conflict (a conflict reads the account inside the script: HGETALL)
    client.config_resetstat()
    assert charger.charge([sms("e5")])[0].record()["decision"]["balance"] == "14.73"
    stats = client.info("commandstats")
    assert "cmdstat_hgetall" not in stats and stats["cmdstat_evalsha"]["calls"] == 1
    client.close()
