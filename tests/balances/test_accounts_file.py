"""The accounts file's validation, without a server (the CLI's all-or-nothing load is in
test_accounts_cli.py)."""

from __future__ import annotations

import pytest

from balances.accounts import AccountsFileError, parse_accounts
from charging.catalog import parse_catalog
from flows.cli_common import sample_catalog_path


@pytest.fixture(scope="module")
def catalog():
    return parse_catalog(sample_catalog_path().read_text())


def test_account_id_with_a_trailing_newline_is_refused(catalog):
    # "$" matched before a trailing newline: "a1\n" passed as an account id
    assert [s.id for s in parse_accounts('{"id": "a1", "plan": "PREPAID_S"}', catalog)] == ["a1"]
    with pytest.raises(AccountsFileError) as info:
        parse_accounts('{"id": "a1\\n", "plan": "PREPAID_S"}', catalog)
    assert [p.path for p in info.value.problems] == ["line 1.id"]


def test_a_key_given_twice_is_an_error_not_a_silent_overwrite(catalog):
    with pytest.raises(AccountsFileError) as info:  # was: balance 500.00, silently
        parse_accounts("- {id: a, plan: PREPAID_S, balance: 1, balance: 500}\n", catalog)
    assert len(info.value.problems) == 1 and "duplicate key" in info.value.problems[0].reason


def test_a_key_given_twice_in_a_jsonl_line_is_an_error_too(catalog):
    text = ('{"id":"a","plan":"PREPAID_S","balance":"1.00"}\n'
            '{"id":"b","plan":"PREPAID_S","balance":"1.00","balance":"900.00"}\n'
            '{"id":"c","plan":"PREPAID_S","balance":"1.00","status":{"x":1,"x":2}}\n')
    with pytest.raises(AccountsFileError) as info:  # was: b loaded with 900.00, silently
        parse_accounts(text, catalog)
    assert [(p.path, p.reason) for p in info.value.problems][:1] == [
        ("line 2", "key 'balance' is given twice; give each field once")]
    assert info.value.problems[1].path.startswith("line 3")


def test_deeply_nested_yaml_is_a_problem_not_a_recursion_error(catalog):
    with pytest.raises(AccountsFileError) as info:
        parse_accounts("[" * 3000 + "]" * 3000, catalog)
    assert "too deeply" in info.value.problems[0].reason


def test_jsonl_file_with_a_byte_order_mark_reads(tmp_path, catalog):
    from balances.accounts import read_accounts

    path = tmp_path / "accounts.jsonl"
    path.write_text('{"id":"a","plan":"PREPAID_S","balance":"1.00"}\n', encoding="utf-8-sig")
    assert [(s.id, s.balance) for s in read_accounts(path, catalog)] == [("a", 1_000_000)]


def test_a_deeply_nested_jsonl_line_is_a_problem_not_a_crash(catalog):
    # orjson reads 1,000 levels; the duplicate-key check's stdlib parser raised a
    # RecursionError out of parse_accounts on them (review 7)
    nested = '{"x":' * 1000 + "1" + "}" * 1000
    good = '{"id": "b", "plan": "PREPAID_S", "balance": "1.00"}'
    line = '{"id": "a", "plan": "PREPAID_S", "balance": "1.00", "meta": ' + nested + "}"
    with pytest.raises(AccountsFileError) as info:
        parse_accounts(good + "\n" + line + "\n", catalog)
    assert [p.path for p in info.value.problems] == ["line 2"]
    assert "nested too deeply" in info.value.problems[0].reason
