"""The Redis password: never in a log line or a message, and given by a file or the
environment as well as by the URL (flows/services.py).

Seen on 1d4aa33: every engine start logged ``redis://:S3cretPW@…`` (text and JSON logs),
and every "cannot reach Redis" error repeated it.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time

import orjson
import pytest
import redis
from click.testing import CliRunner

from flows.cli import main
from flows.services import Services, shown_url, with_password
from tests.conftest import CATALOG_A
from tests.flows.conftest import REPO, cli_args, cli_env

PASSWORD = "S3cretPW"


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:S3cretPW@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://ops:S3cretPW@h:1", "redis://ops:***@h:1"),
    ("rediss://ops:S3%40cret@h:6380/1?ssl_cert_reqs=none",
     "rediss://ops:***@h:6380/1?ssl_cert_reqs=none"),
    ("redis+cluster://:S3c@ret@h:7000", "redis+cluster://:***@h:7000"),
    ("unix://:S3cretPW@/tmp/r.sock?db=0", "unix://:***@/tmp/r.sock?db=0"),
    ("redis://h:1/0?db=1&password=S3cretPW", "redis://h:1/0?db=1&password=***"),
    ("redis://ops@h:1/0", "redis://ops@h:1/0"),  # a user name is no secret
    ("unix:///tmp/x%23y.sock", "unix:///tmp/x%23y.sock"),
    ("foo://:S3cretPW@x", "foo://:***@x"),  # not a Redis URL: still hidden in its error
])
def test_shown_urls_keep_everything_but_the_password(url, shown):
    assert shown_url(url) == shown


@pytest.mark.parametrize(("url", "password", "parsed"), [
    ("redis://127.0.0.1:6379/0", "a@b:c/d%e", {"password": "a@b:c/d%e", "port": 6379}),
    ("redis://ops:old@h:1/2", "new", {"username": "ops", "password": "new", "db": 2}),
    ("unix:///tmp/r.sock?db=3", "pw", {"password": "pw", "path": "/tmp/r.sock", "db": 3}),
])
def test_a_password_is_put_into_a_url_as_redis_py_reads_it(url, password, parsed):
    from redis.connection import parse_url

    got = parse_url(with_password(url, password))
    assert {k: got.get(k) for k in parsed} == parsed


@pytest.fixture
def secured(start_redis, tmp_path):
    """(port, catalog file) of a private Redis that asks for PASSWORD."""
    port, _ = start_redis("--requirepass", PASSWORD)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG_A)
    return port, catalog


def cli(*args: str, env: dict | None = None):
    base = {"CHARGEFLOW_REDIS_URL": None, "CHARGEFLOW_REDIS_PASSWORD": None,
            "CHARGEFLOW_DATA_DIR": None}
    return CliRunner(env={**base, **(env or {})}).invoke(main, list(args))


def test_the_password_comes_from_a_file_or_the_environment(secured, tmp_path):
    port, catalog = secured
    bare = f"redis://127.0.0.1:{port}/0"
    pw_file = tmp_path / "redis.pw"
    pw_file.write_text(PASSWORD + "\n")  # a line end, as editors leave one
    res = cli("catalog", "load", str(catalog), "--redis", bare,
              "--redis-password-file", str(pw_file))
    assert res.exit_code == 0, res.output
    accounts = tmp_path / "a.yaml"
    accounts.write_text("- {id: alice, plan: PREPAID_S, balance: '3.00'}\n")
    res = cli("accounts", "load", str(accounts), "--redis", bare,
              env={"CHARGEFLOW_REDIS_PASSWORD": PASSWORD})
    assert res.exit_code == 0, res.output
    # precedence: the file, then the environment, then the URL's own (wrong ones here)
    wrong_url = f"redis://:nope@127.0.0.1:{port}/0"
    res = cli("balance", "alice", "--json", "--redis", wrong_url, "--redis-password-file",
              str(pw_file), env={"CHARGEFLOW_REDIS_PASSWORD": "nope"})
    assert res.exit_code == 0 and orjson.loads(res.output)["balance"] == "3.00", res.output
    res = cli("balance", "alice", "--json", env={"CHARGEFLOW_REDIS_URL": wrong_url,
                                                  "CHARGEFLOW_REDIS_PASSWORD": PASSWORD})
    assert res.exit_code == 0, res.output
    # without it: refused by the server, exit 2, and the wrong password is not shown
    res = cli("balance", "alice", "--redis", wrong_url)
    assert res.exit_code == 2 and "nope" not in res.output
    assert f"redis://:***@127.0.0.1:{port}/0" in res.output, res.output


def test_a_password_file_that_cannot_be_used_is_bad_input(secured, tmp_path):
    port, _ = secured
    url = f"redis://127.0.0.1:{port}/0"
    empty = tmp_path / "empty.pw"
    empty.write_text("\n")
    for args, said in [((str(tmp_path / "missing.pw"),), "cannot read --redis-password-file"),
                       ((str(empty),), "is empty")]:
        res = cli("balance", "alice", "--redis", url, "--redis-password-file", *args)
        assert res.exit_code == 1 and said in res.output, res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)
    # the embedded Redis has no password: a file for it is a mistake, said so
    pw = tmp_path / "ok.pw"
    pw.write_text(PASSWORD)
    res = cli("balance", "alice", "--data-dir", str(tmp_path / "d"), "--redis-password-file",
              str(pw))
    assert res.exit_code == 1 and "applies to a Redis given by --redis" in res.output
    assert not (tmp_path / "d").exists()


def test_an_unreachable_redis_error_hides_the_password():
    res = cli("balance", "alice", "--redis", f"redis://:{PASSWORD}@127.0.0.1:1/0")
    assert res.exit_code == 2
    assert PASSWORD not in res.output and "redis://:***@127.0.0.1:1/0" in res.output
    res = cli("balance", "alice", "--redis", f"foo://:{PASSWORD}@x")  # not a URL: exit 1
    assert res.exit_code == 1 and PASSWORD not in res.output and "not a Redis URL" in \
        res.output


def test_services_do_not_show_the_url_in_their_repr():
    services = Services.from_options(f"redis://:{PASSWORD}@h:1/0", None)
    assert PASSWORD not in repr(services)
    assert services.shown_url == "redis://:***@h:1/0"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_engine_start_line_hides_the_password(secured, tmp_path, log_format):
    port, catalog = secured
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    assert cli("catalog", "load", str(catalog), "--redis", url).exit_code == 0
    data = tmp_path / "data"  # the embedded broker's
    log = tmp_path / "engine.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cli_args("run", "--redis", url, "--data-dir", str(data),
                                         "--log-format", log_format),
                                cwd=REPO, env=cli_env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"starting:" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        subprocess.run(cli_args("stop", "--data-dir", str(data)), cwd=REPO, env=cli_env(),
                       capture_output=True, timeout=60)
    text = log.read_text()
    assert PASSWORD not in text
    line = next(ln for ln in text.splitlines() if "starting:" in ln)
    if log_format == "json":
        line = orjson.loads(line)["msg"]
    assert f"redis redis://:***@127.0.0.1:{port}/0" in line, line
    # the embedded broker's log is its owner's only
    assert stat.S_IMODE((data / "broker.log").stat().st_mode) == 0o600
    client = redis.Redis(port=port, password=PASSWORD)
    assert client.ping()
    client.close()
