"""`chargeflow topup` refusals, each with the reason a user needs and exit 1 (CONTRACT §5),
and top-up ids remembered with their amount. On 1d4aa33 a debit below zero and a debit of
reserved money both blamed "the supported range, or reserved money", an id reused with
another amount said "already applied", and `--id ""` was accepted.

Each test has a private redis-server (the CLI always uses the prefix ``cf``)."""

from __future__ import annotations

import pytest
import redis

from balances.charger import Charger
from balances.store import BalanceStore
from catalog_cache.store import CatalogCache
from charging.requests import parse
from tests.balances.test_accounts_cli import as_json, cli, write
from tests.conftest import CATALOG_A, Clock, req

ACCOUNTS = """\
- {id: alice, plan: PREPAID_S, balance: "12.50"}
- {id: rich, plan: PREPAID_S, balance: "9007199254.00"}
"""


@pytest.fixture
def loaded(start_redis, tmp_path):
    """(url, client, store) of a private Redis with catalog A and ACCOUNTS loaded."""
    port, _proc = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    assert cli("catalog", "load", write(tmp_path, "c.yaml", CATALOG_A), "--redis",
               url).exit_code == 0
    assert cli("accounts", "load", write(tmp_path, "a.yaml", ACCOUNTS), "--redis",
               url).exit_code == 0
    client = redis.Redis.from_url(url)
    yield url, client, BalanceStore(client, prefix="cf")
    client.close()


def refused(url: str, *args: str) -> str:
    """The error of a top-up that must be refused (exit 1), human and JSON alike."""
    human = cli("topup", "--redis", url, *args)
    assert human.exit_code == 1, human.output
    doc = as_json(cli("topup", "--redis", url, "--json", *args))
    assert doc["error"] in human.stderr
    return doc["error"]


def unchanged(store: BalanceStore, account: str, balance: int, entries: int) -> None:
    assert store.view(account).balance == balance
    assert len(store.ledger(account)) == entries


def test_a_debit_below_zero_says_the_account_may_not_go_negative(loaded):
    url, _client, store = loaded
    error = refused(url, "alice", "--", "-100")
    assert error == ("debit of 100.00 from 'alice' refused: its balance 12.50 would become "
                     "-87.50, and the account may not go negative (allow_negative is false); "
                     "nothing was applied")
    unchanged(store, "alice", 12_500_000, 1)


def test_a_debit_of_reserved_money_names_the_free_and_reserved_amounts(loaded):
    url, client, store = loaded
    out = Charger(store, CatalogCache(client, prefix="cf"), Clock()).charge([parse(req(
        id="s:0", kind="initial", account="alice", service="voice", session="s",
        requested=60))])  # holds 0.15 (0.05 connect + one minute at 0.10)
    assert out[0].decision.result == "SUCCESS" and store.view("alice").reserved == 150_000
    error = refused(url, "alice", "--", "-12.40")
    assert error == ("debit of 12.40 from 'alice' refused: it would take money reserved by "
                     "open sessions (balance 12.50, reserved 0.15, free 12.35); at most 12.35 "
                     "can be debited now; nothing was applied")
    unchanged(store, "alice", 12_500_000, 1)
    assert cli("topup", "alice", "--redis", url, "--", "-12.35").exit_code == 0


def test_a_top_up_past_the_limit_names_the_balance_it_would_make(loaded):
    url, _client, store = loaded
    error = refused(url, "rich", "1.00")
    assert error == ("top-up of 1.00 to 'rich' refused: the balance would be 9007199255.00 "
                     "(now 9007199254.00), beyond ±9007199254.740991, the range balances "
                     "keep to; nothing was applied")
    unchanged(store, "rich", 9_007_199_254_000_000, 1)


def test_an_id_reused_with_another_amount_is_refused_naming_both(loaded):
    url, _client, store = loaded
    first = cli("topup", "alice", "5.00", "--id", "pay-1", "--redis", url, "--json")
    assert first.exit_code == 0 and as_json(first)["balance"] == "17.50"
    assert cli("topup", "alice", "2.00", "--redis", url).exit_code == 0  # 19.50
    error = refused(url, "alice", "7.00", "--id", "pay-1")
    assert error == ("top-up id 'pay-1' of 'alice' was applied before with amount 5.00, not "
                     "7.00; nothing was applied (a new top-up needs a new --id)")
    doc = as_json(cli("topup", "alice", "7.00", "--id", "pay-1", "--redis", url, "--json"))
    assert doc["reason"] == "conflict" and doc["applied_amount"] == "5.00"
    unchanged(store, "alice", 19_500_000, 3)
    # the same amount is a replay: exit 0 and the balance that top-up left
    again = cli("topup", "alice", "5.00", "--id", "pay-1", "--redis", url)
    assert again.exit_code == 0
    assert again.stdout.strip() == "top-up already applied earlier (id 'pay-1'); balance 17.50"
    unchanged(store, "alice", 19_500_000, 3)


def test_an_id_remembered_by_the_previous_format_replays_whatever_the_amount(loaded):
    url, client, store = loaded
    # the previous release kept the balance the top-up left, alone
    client.set(store.keys.topup("alice", "old-1"), "13500000")
    for amount in ("1.00", "3.00"):
        res = cli("topup", "alice", amount, "--id", "old-1", "--redis", url)
        assert res.exit_code == 0, res.output
        assert res.stdout.strip() == "top-up already applied earlier (id 'old-1'); balance 13.50"
    unchanged(store, "alice", 12_500_000, 1)


@pytest.mark.parametrize("topup_id, got", [("", "an empty one"), ("x" * 129, "129")])
def test_an_id_of_no_or_too_many_characters_is_refused(loaded, topup_id, got):
    url, client, store = loaded
    error = refused(url, "alice", "1.00", "--id", topup_id)
    assert error == f"--id: a top-up id must be 1 to 128 characters, as a request id; got {got}"
    unchanged(store, "alice", 12_500_000, 1)
    assert list(client.scan_iter(match="cf:*:topup:*")) == []
    longest = cli("topup", "alice", "1.00", "--id", "x" * 128, "--redis", url)
    assert longest.exit_code == 0, longest.output
