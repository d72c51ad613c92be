"""The rules file: what it accepts, and every refusal naming its YAML path."""

from __future__ import annotations

import pytest

from notifications.rules import Delivery, RulesError, load_rules, parse_rules

GOOD = """
rules:
  - {id: low, plan: PREPAID_S, below: ["5.00", "1.00"]}
  - {id: vip-low, account: acct-1, below: "20.00"}
  - {id: data, allowance: {service: data, percent: [100, 80]}}
  - {id: last, final: true}
webhooks:
  - {name: crm, url: "http://127.0.0.1:9/hook", secret: s3cret, types: [low_balance]}
delivery: {tries: 3, backoff_s: 0.1}
"""


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(RulesError) as info:
        parse_rules(text)
    return info.value.problems


def test_a_good_file_reads_into_rules_webhooks_and_delivery():
    cfg = parse_rules(GOOD)
    low, vip, data, last = cfg.rules
    assert low.plan == "PREPAID_S" and low.below == (5_000_000, 1_000_000)
    assert vip.account == "acct-1" and vip.below == (20_000_000,)
    assert data.service == "data" and data.percent == (80, 100)
    assert last.final
    (hook,) = cfg.webhooks
    assert hook.secret == b"s3cret" and hook.types == {"low_balance"}
    assert "s3cret" not in repr(hook)
    assert cfg.delivery == Delivery(tries=3, backoff_s=0.1)


def test_rules_apply_by_plan_or_account():
    low, vip, data, _ = parse_rules(GOOD).rules
    assert low.applies("x", "PREPAID_S") and not low.applies("x", "OTHER")
    assert vip.applies("acct-1", "ANY") and not vip.applies("acct-2", "ANY")
    assert data.applies("anyone", None)


def test_unknown_keys_are_named_with_the_likeliest_meant():
    found = problems("rules:\n  - {id: a, belwo: '5.00'}\n  - {id: b, allowance: "
                     "{service: data, percnt: [80]}}\n")
    paths = dict(found)
    assert "did you mean 'below'" in paths["rules[0].belwo"]
    assert "did you mean 'percent'" in paths["rules[1].allowance.percnt"]


@pytest.mark.parametrize(("text", "path", "words"), [
    ("rules:\n  - {id: a, below: 5.00}\n", "rules[0].below", "quoted decimal"),
    ("rules:\n  - {id: a, below: ['5.00', 'x']}\n", "rules[0].below[1]", ""),
    ("rules:\n  - {id: a, below: '5.0000001'}\n", "rules[0].below", "6 decimals"),
    ("rules:\n  - {id: a, allowance: {service: data, percent: [80, 120]}}\n",
     "rules[0].allowance.percent[1]", "from 1 to 100"),
    ("rules:\n  - {id: a, final: yes}\n", "rules[0].final", "expected true"),
    ("rules:\n  - {id: a}\n", "rules[0]", "exactly one of"),
    ("rules:\n  - {id: a, final: true, below: '1.00'}\n", "rules[0]", "exactly one of"),
    ("rules:\n  - {id: a, final: true}\n  - {id: a, final: true}\n", "rules[1].id",
     "earlier rule"),
    ("rules: []\n", "rules", "at least one"),
    ("rules:\n  - {id: a, final: true}\nwebhooks:\n  - {url: 'ftp://x', secret: k}\n",
     "webhooks[0].url", "http"),
    ("rules:\n  - {id: a, final: true}\nwebhooks:\n  - {url: 'http://x:99999', secret: k}\n",
     "webhooks[0].url", "http"),
    ("rules:\n  - {id: a, final: true}\nwebhooks:\n  - {url: 'http://x'}\n",
     "webhooks[0]", "secret"),
    ("rules:\n  - {id: a, final: true}\nwebhooks:\n  - {url: 'http://x/a', secret: k}\n"
     "  - {url: 'http://x/b', secret: k, name: 'http://x/a'}\n", "webhooks[1].name",
     "earlier webhook"),
    ("rules:\n  - {id: a, final: true}\ndelivery: {tries: 0}\n", "delivery.tries", "from 1"),
    ("rules:\n  - {id: a, final: true}\nextra: 1\n", "(top).extra", "unknown key"),
])
def test_each_wrong_value_is_refused_at_its_path(text, path, words):
    found = dict(problems(text))
    assert path in found, found
    assert words in found[path]


def test_every_problem_is_listed_at_once():
    found = problems("rules:\n  - {id: a, below: 1}\n  - {id: b, final: no}\n")
    assert [p for p, _ in found] == ["rules[0].below", "rules[1].final"]


def test_a_secret_file_is_read_relative_to_the_rules_file_and_never_shown(tmp_path):
    (tmp_path / "hook.secret").write_text("from-file\n")
    f = tmp_path / "rules.yaml"
    f.write_text("rules:\n  - {id: a, final: true}\nwebhooks:\n"
                 "  - {url: 'http://x', secret_file: hook.secret}\n")
    assert load_rules(str(f)).webhooks[0].secret == b"from-file"
    (tmp_path / "hook.secret").unlink()
    with pytest.raises(RulesError) as info:
        load_rules(str(f))
    assert "webhooks[0].secret_file" in str(info.value)


def test_a_wrong_secret_never_appears_in_the_error():
    found = problems("rules:\n  - {id: a, final: true}\nwebhooks:\n"
                     "  - {url: 'gopher://x', secret: topsecretvalue, secret_file: f}\n")
    assert "topsecretvalue" not in str(found)


def test_a_webhook_without_a_name_is_named_by_its_url_without_credentials():
    cfg = parse_rules("rules:\n  - {id: a, final: true}\nwebhooks:\n"
                      "  - {url: 'https://u:pw@hooks.example:8443/in?token=t0k', secret: k}\n")
    assert cfg.webhooks[0].name == "https://hooks.example:8443/in"
