"""``chargeflow gateway`` and ``chargeflow serve`` (CONTRACT §6.1): the front doors alone, or
the whole OCS on one machine (the engine, its doors, embedded broker and Redis)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from charging.errors import BrokerError, StoreError
from flows.cli_common import fail, retention_options
from flows.services import Services, shown_url

DOOR_NAMES = ("diameter", "nchf", "api")
DEFAULTS = {"diameter": "127.0.0.1:3868", "nchf": "127.0.0.1:8081", "api": "127.0.0.1:8080"}


def _address(text: str, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=option)
    return host.strip("[]"), int(port)


def door_options(fn):
    """The door options both commands take (CONTRACT §6.1)."""
    options = [
        click.option("--diameter", default=DEFAULTS["diameter"], show_default=True,
                     metavar="HOST:PORT", help="Diameter Gy/Ro over TCP."),
        click.option("--nchf", default=DEFAULTS["nchf"], show_default=True,
                     metavar="HOST:PORT",
                     help="Nchf_ConvergedCharging (HTTP/2 cleartext and HTTP/1.1)."),
        click.option("--api", default=DEFAULTS["api"], show_default=True, metavar="HOST:PORT",
                     help="The account API."),
        click.option("--no-diameter", is_flag=True, help="Leave the Diameter door closed."),
        click.option("--no-nchf", is_flag=True, help="Leave the Nchf door closed."),
        click.option("--no-api", is_flag=True, help="Leave the account API closed."),
        click.option("--agent-adjust-limit", default="50.00", show_default=True,
                     metavar="AMOUNT", help="The account API: the largest adjustment an "
                     "agent key may make at once."),
        click.option("--api-server", type=click.Choice(("hypercorn", "granian")),
                     default="hypercorn", show_default=True,
                     help="The account API's HTTP server: hypercorn, or granian (about twice "
                     "the requests/s; HTTP/2 requests in flight when it stops are cut, "
                     "HTTP/1.1 ones finish; docs/api.md)."),
        click.option("--origin-host", default="chargeflow.localdomain", show_default=True),
        click.option("--origin-realm", default="localdomain", show_default=True),
        click.option("--peers", "peers_file", default=None, type=click.Path(dir_okay=False),
                     help="Diameter peers accepted: one Origin-Host per line (default: any)."),
        click.option("--answer-timeout-ms", type=click.IntRange(min=10), default=3000,
                     show_default=True,
                     help="No decision within this long: Diameter 3004, Nchf 503."),
        click.option("--instance", default=None,
                     help="This gateway's name (its reply topic chargeflow.replies.NAME); "
                     "default: host and process."),
        click.option("--kafka", default=None, metavar="HOST:PORT",
                     help="Kafka bootstrap servers (default: the embedded broker)."),
        click.option("--kafka-config", default=None, type=click.Path(dir_okay=False),
                     help="librdkafka settings, key=value per line."),
        click.option("-X", "kafka_set", multiple=True, metavar="KEY=VALUE"),
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                     show_default=True),
        click.option("--metrics", default=None, metavar="HOST:PORT",
                     help="Serve Prometheus metrics of every door (and of the engine under "
                     "serve) on HOST:PORT/metrics; port 0 takes a free one."),
        click.option("--redis", "redis_url", default=None,
                     help="Redis URL (default: $CHARGEFLOW_REDIS_URL, else embedded)."),
        click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
                     help="Directory of the embedded services (default .chargeflow/)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command("gateway")
@door_options
def gateway(**opts) -> None:
    """The front doors alone: requests to engines through Kafka, state shared in Redis."""
    _serve(opts, with_engine=False)


@click.command("serve")
@door_options
@retention_options
def serve(**opts) -> None:
    """The whole OCS on one machine: the engine and its front doors."""
    _serve(opts, with_engine=True)


def _serve(opts: dict, with_engine: bool) -> None:
    from flows.kafka import KafkaConfigError, load_settings
    from flows.observe import setup_logging

    setup_logging(opts["log_format"])
    names = [n for n in DOOR_NAMES if not opts[f"no_{n}"]]
    if not names:
        fail(False, "every door is closed (--no-diameter --no-nchf --no-api): nothing to serve")
    _load_doors()
    from gateway.server import DOORS

    missing = [n for n in names if n not in DOORS]
    if missing:
        fail(False, f"the {', '.join(missing)} door(s) are not available in this build; "
             f"close them with {' '.join('--no-' + n for n in missing)}")
    try:
        kafka_config = load_settings(opts["kafka_config"], opts["kafka_set"])
    except KafkaConfigError as exc:
        fail(False, str(exc))
    try:
        config = _door_config(opts, names)
        metrics_at = _address(opts["metrics"], "--metrics") if opts["metrics"] else None
    except (OSError, click.BadParameter) as exc:
        fail(False, str(exc))
    services = Services.from_options(opts["redis_url"], opts["data_dir"])
    try:
        url = services.redis_url or services.embedded.start()
        services.redis().close()
        from flows.broker import EmbeddedBroker

        brokers = opts["kafka"] or ("" if with_engine else
                                    EmbeddedBroker(services.data_dir).start())
    except StoreError as exc:
        fail(False, str(exc), 2)
    except BrokerError as exc:
        fail(False, str(exc), 2)
    except ValueError as exc:
        fail(False, str(exc))
    # serve without --kafka: the doors hand requests to an engine in this process (the
    # embedded broker slows down over hours of traffic); otherwise engines over Kafka
    local = with_engine and not opts["kafka"]
    if metrics_at is not None:
        _serve_metrics(*metrics_at)
    engine = _start_engine(opts, brokers, url, services) if with_engine and not local else None
    try:
        retention = (opts["idem_s"], opts["ledger_s"]) if with_engine else None
        code = asyncio.run(_run(config, names, None if local else brokers, kafka_config, url,
                                opts["instance"], engine_metrics=metrics_at is not None,
                                retention=retention))
    finally:
        if engine is not None:
            engine.send_signal(signal.SIGTERM)  # it drains, flushes and commits
            try:
                engine.wait(timeout=60)
            except subprocess.TimeoutExpired:
                engine.kill()
    sys.exit(code)


def _serve_metrics(host: str, port: int) -> None:
    """The default registry, where every door (and the in-process engine) counts, on
    HOST:PORT/metrics; announced as the doors are (``metrics listening on HOST:PORT``)."""
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        fail(False, f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}")
    print(f"metrics listening on {host}:{server.server_port}", flush=True)


def _door_config(opts: dict, names: list[str]):
    from gateway.server import DoorConfig

    peers = None
    if opts["peers_file"]:
        text = Path(opts["peers_file"]).read_text("utf-8")
        peers = frozenset(x.strip() for x in text.splitlines()
                          if x.strip() and not x.lstrip().startswith("#"))
    return DoorConfig(
        diameter=_address(opts["diameter"], "--diameter") if "diameter" in names else None,
        nchf=_address(opts["nchf"], "--nchf") if "nchf" in names else None,
        api=_address(opts["api"], "--api") if "api" in names else None,
        origin_host=opts["origin_host"], origin_realm=opts["origin_realm"], peers=peers,
        answer_timeout_ms=opts["answer_timeout_ms"], extra=_api_extra(opts))


def _api_extra(opts: dict) -> dict:
    """The account API's settings (DoorConfig.extra)."""
    from api.models import adjust_limit_micros

    try:
        limit = adjust_limit_micros(opts["agent_adjust_limit"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--agent-adjust-limit") from exc
    return {"agent_adjust_limit": limit, "api_server": opts["api_server"]}


def _load_doors() -> None:
    """Each door's package registers itself when imported (gateway.server.register)."""
    import importlib

    for module in ("gateway.diameter", "gateway.nchf", "api"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a door that is there but broken: say so
                raise


def _start_engine(opts: dict, brokers: str, url: str, services: Services
                  ) -> subprocess.Popen:
    args = [sys.executable, "-m", "flows.cli", "run", "--kafka", brokers, "--redis", url,
            "--data-dir", str(services.data_dir), "--log-format", opts["log_format"],
            "--idempotency-retention-s", str(opts["idem_s"]),
            "--ledger-retention-s", str(opts["ledger_s"])]
    if opts["kafka_config"]:
        args += ["--kafka-config", opts["kafka_config"]]
    for item in opts["kafka_set"]:
        args += ["-X", item]
    logging.getLogger("chargeflow.gateway").info("starting the engine: kafka %s, redis %s",
                                                 brokers, shown_url(url))
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, env=os.environ.copy())


async def _run(config, names: list[str], brokers: str | None, kafka_config: dict, url: str,
               instance: str | None, *, engine_metrics: bool = False,
               retention: tuple[int, int] | None = None) -> int:
    from catalog_cache.store import CatalogCache
    from flows.kafka import KafkaSettings
    from flows.services import connect
    from gateway.bridge import KafkaBridge, instance_name
    from gateway.identities import Identities
    from gateway.server import Context, run_doors

    timeout_s = config.answer_timeout_ms / 1000
    if brokers is None:
        from dataclasses import replace
        from functools import partial

        from flows.observe import EngineMetrics
        from flows.runtime import EngineConfig, make_engine
        from gateway.local import LocalBridge

        metrics = EngineMetrics() if engine_metrics else None  # on the default registry
        engine_config = EngineConfig(redis_url=url, prefix=config.prefix, tune_gc=True)
        if retention is not None:
            engine_config = replace(engine_config, retention_s=retention[0],
                                    ledger_retention_s=retention[1])
        bridge = LocalBridge(partial(make_engine, engine_config, metrics), timeout_s=timeout_s)
    else:
        bridge = KafkaBridge(KafkaSettings(brokers, kafka_config), instance or instance_name(),
                             timeout_s=timeout_s)
    try:
        bridge.start()
    except BrokerError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except RuntimeError as exc:  # the in-process engine (no catalog loaded, say)
        click.echo(f"error: {exc}", err=True)
        return 1
    client = _async_redis(url)
    catalogs = CatalogCache(connect(url), prefix=config.prefix, check_interval_s=2.0)
    ctx = Context(config, bridge, client, Identities(client, config.prefix), catalogs)
    try:
        await run_doors(ctx, names)
    except OSError as exc:  # a port taken, say
        click.echo(f"error: cannot open a door: {exc.strerror or exc}", err=True)
        return 1
    finally:
        bridge.close()
        await client.aclose()
    return 0


#: the doors' Redis connections: a request waits for a free one (up to the timeout) rather
#: than fail; redis-py's default pool refuses the 101st concurrent command ("Too many
#: connections"), which under load answered CCRs 3004 with the engines idle
REDIS_CONNECTIONS = 256
REDIS_WAIT_S = 5.0


def _async_redis(url: str):
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

    if url.startswith("redis+cluster://"):
        return RedisCluster.from_url("redis://" + url[len("redis+cluster://"):],
                                     max_connections=REDIS_CONNECTIONS * 4)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=REDIS_CONNECTIONS,
                                                    timeout=REDIS_WAIT_S)
    return aioredis.Redis.from_pool(pool)  # closes the pool with the client
