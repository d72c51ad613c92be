"""`catalog validate`, `catalog load` and `accounts load` refuse unknown keys (exit 1,
every problem listed with the key likely meant, nothing stored), and take CONTRACT v2's.

Before, `catalog load` of a catalog with ``maxcost:``, ``qouta:`` and ``incremnt:`` said
"loaded and active" and exit 0: VOICE_STD lost its 5.00 cap, and 30 s of mobile_peak were
rated 0.1000 instead of 0.1500. Each test has its own redis-server (``start_redis``): the
commands always use the key prefix ``cf``.
"""

from __future__ import annotations

import orjson
import pytest
import redis

from catalog_cache.store import CatalogKeys
from flows.provision import with_rating_groups
from tests.balances.test_accounts_cli import account_keys, as_json, cli, write
from tests.conftest import CATALOG_A

TYPOS = (CATALOG_A.replace('max_cost: "5.00"', 'maxcost: "5.00"')
         .replace("quota: 300", "qouta: 300")
         .replace("{from: 0,  price: \"0.10\", per: 60, increment: 60}",
                  "{from: 0,  price: \"0.10\", per: 60, incremnt: 60}")
         .replace('version: "test-a"', 'version: "test-typo"'))
SUGGESTIONS = [
    "tariffs.VOICE_STD: unknown key 'qouta' — did you mean 'quota'?",
    "tariffs.VOICE_STD: unknown key 'maxcost' — did you mean 'max_cost'?",
    "tariffs.VOICE_STD.rates[0].steps[0]: unknown key 'incremnt' — did you mean 'increment'?",
]


@pytest.fixture
def server(start_redis, tmp_path):
    """(url, client) of a private Redis with catalog A loaded through the CLI."""
    port, _proc = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    res = cli("catalog", "load", write(tmp_path, "a.yaml", CATALOG_A), "--redis", url)
    assert res.exit_code == 0, res.output
    client = redis.Redis.from_url(url)
    yield url, client
    client.close()


def test_the_typos_were_made():
    assert TYPOS.count("maxcost") == TYPOS.count("qouta") == TYPOS.count("incremnt") == 1


def test_validate_lists_each_misspelt_key_with_a_suggestion_and_exits_1(tmp_path):
    path = write(tmp_path, "typos.yaml", TYPOS)
    res = cli("catalog", "validate", path)
    assert res.exit_code == 1
    for line in SUGGESTIONS:
        assert f"  - {line}\n" in res.stderr, res.stderr
    res = cli("catalog", "validate", path, "--json")
    doc = orjson.loads(res.stdout)
    assert res.exit_code == 1 and doc["valid"] is False
    assert [f"{p['path']}: {p['reason']}" for p in doc["problems"]] == SUGGESTIONS


def test_load_refuses_misspelt_keys_and_stores_nothing(server, tmp_path):
    url, client = server
    keys = CatalogKeys("cf")
    before = (client.get(keys.active), client.hgetall(keys.versions))
    res = cli("catalog", "load", write(tmp_path, "typos.yaml", TYPOS), "--redis", url)
    assert res.exit_code == 1
    assert "loaded" not in res.output
    for line in SUGGESTIONS:
        assert line in res.stderr, res.stderr
    assert (client.get(keys.active), client.hgetall(keys.versions)) == before
    assert before[0] == b"test-a"
    fixed = TYPOS.replace("maxcost", "max_cost").replace("qouta", "quota") \
        .replace("incremnt", "increment")
    res = cli("catalog", "load", write(tmp_path, "fixed.yaml", fixed), "--redis", url)
    assert res.exit_code == 0 and client.get(keys.active) == b"test-typo", res.output


def test_load_takes_rating_groups_billing_and_fees(server, tmp_path):
    url, client = server
    text = (with_rating_groups(CATALOG_A.replace('version: "test-a"', 'version: "test-v2"'),
                               {"voice": [100], "data": [200, 201]})
            .replace("  PREPAID_S:\n    tariffs:",
                     "  PREPAID_S:\n    fee: {amount: \"4.99\", period: month}\n    tariffs:")
            + 'billing:\n  seller: {name: "Example Telecom GmbH", country: DE}\n')
    assert text.count("rating_groups") == 2 and "fee:" in text
    res = cli("catalog", "load", write(tmp_path, "v2.yaml", text), "--redis", url, "--json")
    assert res.exit_code == 0, res.output
    clash = text.replace("rating_groups: [200, 201]", "rating_groups: [200, 100]") \
        .replace("test-v2", "test-v3")
    res = cli("catalog", "load", write(tmp_path, "clash.yaml", clash), "--redis", url)
    assert res.exit_code == 1
    assert ("services.data.rating_groups[1]: rating group 100 already names service 'voice' "
            "(at services.voice.rating_groups[0])") in res.stderr
    assert client.get(CatalogKeys("cf").active) == b"test-v2"


def test_accounts_load_refuses_an_unknown_key_and_stores_nothing(server, tmp_path):
    url, client = server
    path = write(tmp_path, "accounts.yaml", "- {id: alice, plan: PREPAID_S, balance: \"10\"}\n"
                 "- {id: bob, plna: PREPAID_S, balance: \"10\"}\n")
    res = cli("accounts", "load", path, "--redis", url)
    assert res.exit_code == 1
    assert "[1]: unknown key 'plna' — did you mean 'plan'?" in res.stderr
    assert "[1].plan: is required" in res.stderr
    assert account_keys(client) == []


def test_accounts_load_takes_identities_and_billing_fields(server, tmp_path):
    url, client = server
    path = write(tmp_path, "accounts.yaml", """\
- {id: alice, plan: PREPAID_S, balance: "10", msisdn: "4917612345", imsi: "262011234567890",
   name: Alice, country: DE, vat_id: DE136695976, customer: business}
- {id: bob, plan: PREPAID_S, balance: "10", customer: consumer}
""")
    res = cli("accounts", "load", path, "--redis", url, "--json")
    assert res.exit_code == 0, res.output
    assert as_json(res) == {"created": 2, "updated": 0}
    assert len(account_keys(client)) == 2
