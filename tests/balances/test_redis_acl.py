"""A real Redis at a URL with an ACL user: the commands use the URL's credentials as given."""

from __future__ import annotations

import orjson
from click.testing import CliRunner

from flows.cli import main, sample_catalog_path


def test_commands_authenticate_with_the_url_user(start_redis, tmp_path):
    # the default user may only PING; "ops" may do everything with its password
    port, _ = start_redis("--user", "default", "on", "nopass", "-@all", "+ping",
                          "--user", "ops", "on", ">s3cret", "~*", "&*", "+@all")
    url = f"redis://ops:s3cret@127.0.0.1:{port}/0"
    run = CliRunner().invoke
    assert run(main, ["catalog", "load", str(sample_catalog_path()), "--redis", url]).exit_code == 0
    accounts = tmp_path / "a.yaml"
    accounts.write_text("- {id: alice, plan: PREPAID_S, balance: '3.00'}\n")
    assert run(main, ["accounts", "load", str(accounts), "--redis", url]).exit_code == 0
    res = run(main, ["topup", "alice", "1.25", "--id", "t1", "--redis", url, "--json"])
    assert res.exit_code == 0 and orjson.loads(res.output)["balance"] == "4.25"
    res = run(main, ["balance", "alice", "--redis", url, "--json"])
    assert orjson.loads(res.output)["balance"] == "4.25"
    # without the credentials nothing can be read: an error naming Redis, not a traceback
    denied = run(main, ["balance", "alice", "--redis", f"redis://127.0.0.1:{port}/0"])
    assert denied.exit_code == 2
    assert "Redis" in denied.output
