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
