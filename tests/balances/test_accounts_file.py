"""The accounts file's validation, without a server (the CLI's all-or-nothing load is in
test_accounts_cli.py)."""

from __future__ import annotations

import orjson
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


# --- keys: the known ones of CONTRACT v2, and an unknown one --------------------------------

FULL = ('{"id": "a", "plan": "PREPAID_S", "balance": "1.00", "msisdn": "4917612345", '
        '"imsi": "262011234567890", "name": "Erika Mustermann", "country": "DE", '
        '"vat_id": "DE136695976", "customer": "business"}')


def problems(text: str, catalog) -> list[tuple[str, str]]:
    with pytest.raises(AccountsFileError) as info:
        parse_accounts(text, catalog)
    return [(p.path, p.reason) for p in info.value.problems]


def test_identities_and_billing_fields_are_carried(catalog):
    (spec,) = parse_accounts(FULL, catalog)
    assert (spec.msisdn, spec.imsi, spec.name, spec.country, spec.vat_id, spec.customer) == (
        "4917612345", "262011234567890", "Erika Mustermann", "DE", "DE136695976", "business")
    (bare,) = parse_accounts('{"id": "b", "plan": "PREPAID_S"}', catalog)
    assert (bare.msisdn, bare.imsi, bare.name, bare.country, bare.vat_id, bare.customer) == (
        None,) * 6


def test_unquoted_yaml_numbers_are_read_as_their_digits(catalog):
    (spec,) = parse_accounts("- {id: a, plan: PREPAID_S, msisdn: 4917612345, imsi: 26201}\n",
                             catalog)
    assert (spec.msisdn, spec.imsi) == ("4917612345", "26201")


@pytest.mark.parametrize("key, value, phrase", [
    ("msisdn", "+4917612345", "1-15 digits"), ("msisdn", "4917 612345", "1-15 digits"),
    ("msisdn", "1" * 16, "1-15 digits"), ("imsi", "", "1-15 digits"), ("imsi", -5, "1-15"),
    ("imsi", True, "1-15 digits"), ("country", "de", "ISO 3166 alpha-2"),
    ("country", "DEU", "ISO 3166"), ("customer", "company", "consumer or business"),
    ("vat_id", 136695976, "text of 1-64"), ("name", "  ", "text of 1-256"),
    ("name", ["x"], "text of 1-256"),
])
def test_bad_identities_and_billing_fields_are_named(catalog, key, value, phrase):
    rec = {"id": "a", "plan": "PREPAID_S", key: value}
    ((path, reason),) = problems(orjson.dumps(rec).decode(), catalog)
    assert path == f"line 1.{key}" and phrase in reason, reason


def test_an_msisdn_or_imsi_names_one_account(catalog):
    text = "\n".join([
        '{"id": "a", "plan": "PREPAID_S", "msisdn": "4917612345", "imsi": "26201"}',
        '{"id": "b", "plan": "PREPAID_S", "msisdn": "4917612345"}',
        '{"id": "c", "plan": "PREPAID_S", "imsi": "26201", "msisdn": "4917600000"}',
        '{"id": "d", "plan": "PREPAID_S", "imsi": "4917612345"}',  # another kind: fine
    ])
    assert problems(text, catalog) == [
        ("line 2.msisdn", "msisdn '4917612345' is also account 'a''s (at line 1); it names "
                          "one account"),
        ("line 3.imsi", "imsi '26201' is also account 'a''s (at line 1); it names one account"),
    ]


@pytest.mark.parametrize("key, reason", [
    ("plna", "unknown key 'plna' — did you mean 'plan'?"),
    ("allow_negativ", "unknown key 'allow_negativ' — did you mean 'allow_negative'?"),
    ("msidn", "unknown key 'msidn' — did you mean 'msisdn'?"),
    ("colour", "unknown key 'colour' — did you mean 'country'?"),
    ("tariff", "unknown key 'tariff' (known: id, plan, balance, status, allow_negative, "
               "msisdn, imsi, name, country, vat_id, customer)"),
])
def test_an_unknown_key_is_an_error_with_a_suggestion(catalog, key, reason):
    text = f"- {{id: a, plan: PREPAID_S, {key}: x}}\n- {{id: b, plan: NOPE}}\n"
    got = problems(text, catalog)
    assert ("[0]", reason) in got and got[-1][0] == "[1].plan"  # listed with the others
