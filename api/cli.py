"""``chargeflow apikey create|list|revoke`` and ``chargeflow api`` (CONTRACT §7): the account
API's keys, and the API served alone (``serve`` and ``gateway`` serve it with the other
doors)."""

from __future__ import annotations

import asyncio
import sys

import click

from charging.errors import StoreError
from flows.cli_common import connect_services, emit, fail, service_options

API_SERVERS = ("hypercorn", "granian")
API_SERVER_HELP = ("The account API's HTTP server: hypercorn, or granian (about twice the "
                   "requests/s; HTTP/2 requests in flight when it stops are cut, HTTP/1.1 "
                   "ones finish; docs/api.md).")


def api_server_option(fn):
    """--api-server, as ``api``, ``serve`` and ``gateway`` take it."""
    return click.option("--api-server", type=click.Choice(API_SERVERS), default="hypercorn",
                        show_default=True, help=API_SERVER_HELP)(fn)


def adjust_limit_option(fn):
    """--agent-adjust-limit, as ``api``, ``serve`` and ``gateway`` take it."""
    return click.option(
        "--agent-adjust-limit", default="50.00", show_default=True, metavar="AMOUNT",
        help="The largest adjustment (either sign) an agent key may make at once.")(fn)


def parse_adjust_limit(text: str) -> int:
    """Micros of --agent-adjust-limit (click.BadParameter when it is not an amount >= 0)."""
    from api.models import adjust_limit_micros

    try:
        return adjust_limit_micros(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--agent-adjust-limit") from exc


@click.group("apikey")
def apikey() -> None:
    """Keys of the account API: create (shown once), list, revoke."""


@apikey.command("create")
@click.option("--role", required=True, type=click.Choice(["admin", "agent", "selfcare"]),
              help="admin: everything; agent: read, top up, adjust up to the agent limit; "
              "selfcare: read its own account.")
@click.option("--account", default=None, help="The account a selfcare key may see.")
@click.option("--name", default="", help="A label shown by `apikey list`.")
@service_options
def apikey_create(role: str, account: str | None, name: str, redis_url: str | None,
                  redis_password_file: str | None, data_dir: str | None,
                  as_json: bool) -> None:
    """Create a key and print it, once: only its hash is stored."""
    from api.keys import KeyStore
    from balances.store import BalanceStore

    if (role == "selfcare") != (account is not None):
        fail(as_json, "a selfcare key needs --account ID (the account it may see); admin and "
             "agent keys are bound to none")
    services, client = connect_services(redis_url, data_dir, redis_password_file)
    try:
        if account is not None and BalanceStore(client, prefix=services.prefix
                                                ).view(account) is None:
            fail(as_json, f"no account {account!r}: load or create it first", 1)
        record, key = KeyStore(client, services.prefix).create(role, account, name)
    except StoreError as exc:
        fail(as_json, str(exc), 2)
    bound = f", account {account}" if account else ""
    emit(as_json, {"id": record.id, "key": key, "role": role, "account": account,
                   "name": name},
         f"{key}\n(key {record.id}, {role}{bound}: shown once, only its hash is kept)")


@apikey.command("list")
@service_options
def apikey_list(redis_url: str | None, redis_password_file: str | None, data_dir: str | None,
                as_json: bool) -> None:
    """List keys (never the keys themselves): id, role, account, name, revoked."""
    from api.keys import KeyStore

    services, client = connect_services(redis_url, data_dir, redis_password_file)
    try:
        found = KeyStore(client, services.prefix).list()
    except StoreError as exc:
        fail(as_json, str(exc), 2)
    lines = [f"{k.id}  {k.role:<8}  {k.account or '-':<16}  "
             f"{'revoked' if k.revoked_ms else 'active':<7}  {k.name}" for k in found]
    emit(as_json, {"keys": [k.as_json() for k in found]},
         "\n".join(lines) if lines else "no API keys")


@apikey.command("revoke")
@click.argument("key_id")
@service_options
def apikey_revoke(key_id: str, redis_url: str | None, redis_password_file: str | None,
                  data_dir: str | None, as_json: bool) -> None:
    """Revoke key KEY_ID: from now on it gets 401."""
    from api.keys import KeyStore

    services, client = connect_services(redis_url, data_dir, redis_password_file)
    try:
        record = KeyStore(client, services.prefix).revoke(key_id)
    except StoreError as exc:
        fail(as_json, str(exc), 2)
    if record is None:
        fail(as_json, f"no API key {key_id!r} (see `chargeflow apikey list`)", 1)
    emit(as_json, record.as_json(), f"key {key_id} revoked")


@click.command("api")
@click.option("--api", "address", default="127.0.0.1:8080", show_default=True,
              metavar="HOST:PORT", help="Where the API listens (HTTP/1.1 and h2c).")
@adjust_limit_option
@api_server_option
@click.option("--rate-limit", type=click.FloatRange(min=0.01), default=50.0,
              show_default=True, help="Requests per second per key, on average.")
@click.option("--burst", type=click.IntRange(min=1), default=100, show_default=True,
              help="Requests a key may send at once.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--redis", "redis_url", default=None,
              help="Redis URL (default: $CHARGEFLOW_REDIS_URL, else embedded).")
@click.option("--redis-password-file", default=None, metavar="FILE",
              help="Read the password of --redis from FILE's first line.")
@click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
              help="Directory of the embedded Redis (default .chargeflow/).")
def api_cmd(address: str, agent_adjust_limit: str, api_server: str, rate_limit: float,
            burst: int, log_format: str, redis_url: str | None,
            redis_password_file: str | None, data_dir: str | None) -> None:
    """The account API alone (no engine, no other door): prints 'api listening on HOST:PORT',
    drains and exits 0 on SIGTERM."""
    import api  # noqa: F401 - registers the door
    from catalog_cache.store import CatalogCache
    from flows.cli_gateway import _address
    from flows.observe import setup_logging
    from gateway.server import Context, DoorConfig, run_doors

    setup_logging(log_format)
    try:
        host_port = _address(address, "--api")
        limit = parse_adjust_limit(agent_adjust_limit)
    except click.BadParameter as exc:
        fail(False, exc.format_message())
    services, client = connect_services(redis_url, data_dir, redis_password_file)
    config = DoorConfig(diameter=None, nchf=None, api=host_port, prefix=services.prefix,
                        extra={"agent_adjust_limit": limit, "rate_per_s": rate_limit,
                               "burst": burst, "api_server": api_server})
    # the API door needs only its settings and the catalog cache (its Redis client, of
    # which the API makes its asyncio twin); no engine round trip
    ctx = Context(config, None, None, None,  # type: ignore[arg-type]
                  CatalogCache(client, prefix=services.prefix, check_interval_s=2.0))
    try:
        asyncio.run(run_doors(ctx, ["api"]))
    except OSError as exc:
        fail(False, f"cannot open the api door: {exc.strerror or exc}")
    sys.exit(0)
