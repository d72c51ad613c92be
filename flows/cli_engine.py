"""The engine commands: run, demo, bench (CONTRACT §5)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import timedelta
from functools import partial
from pathlib import Path

import click

import chargeflow_native as native
from charging.errors import BrokerError, DataDirError, StoreError
from flows.cli_common import (
    connect_services,
    fail,
    load_catalog_or_exit,
    retention_options,
    sample_catalog_path,
)
from flows.services import Services, shown_url


@click.command("run")
@click.option("--kafka", "kafka", default=None, metavar="HOST:PORT",
              help="Kafka bootstrap servers (default: an embedded broker in --data-dir).")
@click.option("--input", "input_file", default=None, metavar="FILE|-",
              help="Decide the requests of a JSONL file (or stdin) with no broker, then exit.")
@click.option("--output", "output_dir", default=None, type=click.Path(file_okay=False),
              help="With --input: directory for decisions/charges/rejects.jsonl.")
@click.option("--workers", default=1, show_default=True,
              help="Bytewax worker threads (per process).")
@click.option("--process-id", "-i", type=int, default=None,
              help="This process's index in a multi-process cluster (with --addresses).")
@click.option("--addresses", "-a", default=None,
              help="HOST:PORT of every process of the cluster, separated by ';'.")
@click.option("--recovery", "recovery_dir", default=None, type=click.Path(file_okay=False),
              hidden=True, help="No longer used: the engine resumes from its consumer "
              "group's committed offsets.")
@click.option("--commit-s", "--snapshot-s", "commit_s", type=click.FloatRange(min=0.01),
              default=2.0, show_default=True,
              help="Seconds between commits of the group's offsets (each after a flush of "
              "the outputs before them): at most this much is read again after a crash.")
@click.option("--group", default="chargeflow", show_default=True,
              envvar="CHARGEFLOW_KAFKA_GROUP",
              help="Kafka consumer group; its committed offsets are the engine's position.")
@click.option("--kafka-config", "kafka_config", default=None, type=click.Path(dir_okay=False),
              help="librdkafka settings, key=value per line (SASL, TLS, ...), for every "
              "Kafka client of the engine.")
@click.option("-X", "kafka_set", multiple=True, metavar="KEY=VALUE",
              help="One librdkafka setting (after --kafka-config); may be repeated.")
@click.option("--requests-topic", default="chargeflow.requests", show_default=True)
@click.option("--decisions-topic", default="chargeflow.decisions", show_default=True)
@click.option("--charges-topic", default="chargeflow.charges", show_default=True)
@click.option("--rejects-topic", default="chargeflow.rejects", show_default=True)
@click.option("--stale-requests", "stale", type=click.Choice(["refuse", "skip", "decide"]),
              default="refuse", show_default=True,
              help="What to do where the engine would start reading at requests older than "
              "the idempotency retention (docs/operations.md).")
@click.option("--partitions", type=int, default=None,
              help="Partitions of the topics this command creates when missing "
              "(default: one per worker of the whole cluster).")
@click.option("--format", "fmt", type=click.Choice(["json", "msgpack"]), default="json",
              show_default=True, help="Encoding of request messages.")
@retention_options
@click.option("--sweep-s", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between a worker's releases of sessions silent for 2 x their "
              "validity (with or without traffic).")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus metrics on HOST:PORT/metrics.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics endpoint listens on.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines as text or one JSON object each.")
@click.option("--redis", "redis_url", default=None,
              help="Redis URL (default: $CHARGEFLOW_REDIS_URL, else embedded).")
@click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
              help="Directory of the embedded services (default .chargeflow/).")
def run(kafka: str | None, input_file: str | None, output_dir: str | None, workers: int,
        process_id: int | None, addresses: str | None, recovery_dir: str | None,
        commit_s: float, group: str, kafka_config: str | None, kafka_set: tuple[str, ...],
        requests_topic: str, decisions_topic: str, charges_topic: str, rejects_topic: str,
        stale: str, partitions: int, fmt: str, idem_s: int, ledger_s: int,
        sweep_s: float, metrics_port: int | None, metrics_host: str, log_format: str,
        redis_url: str | None, data_dir: str | None) -> None:
    """Run the charging engine: requests from Kafka (or a JSONL file) to decisions."""
    from catalog_cache.store import CatalogCache
    from flows.observe import EngineMetrics, serve, setup_logging
    from flows.runtime import EngineConfig, make_engine, run_jsonl

    setup_logging(log_format)
    metrics = EngineMetrics()
    if metrics_port is not None:
        try:
            serve(metrics_port, metrics_host)
        except OSError as exc:
            fail(False, f"cannot serve metrics on {metrics_host}:{metrics_port}: "
                 f"{exc.strerror or exc}")

    if (input_file is None) != (output_dir is None):
        fail(False, "--input and --output go together (a JSONL run writes into a directory)")
    if input_file is not None:
        ctx = click.get_current_context()
        given = [p.opts[0] for p in ctx.command.params
                 if p.name in _KAFKA_ONLY and ctx.get_parameter_source(p.name) in _GIVEN]
        if given:
            fail(False, f"--input runs over a JSONL file with no broker, in one worker: "
                 f"{', '.join(given)} do not apply to it; drop them, or drop --input and "
                 "--output to run on Kafka")
    services, client = connect_services(redis_url, data_dir)
    if CatalogCache(client, prefix=services.prefix).refresh() is None:
        fail(False, "no catalog is loaded: run `chargeflow catalog load FILE` first")
    url = services.redis_url or services.embedded.url
    config = EngineConfig(redis_url=url, prefix=services.prefix, fmt=fmt, retention_s=idem_s,
                          ledger_retention_s=ledger_s, tune_gc=True, sweep_every_s=sweep_s)
    if input_file is not None:
        if input_file == "-" and sys.stdin is None:
            fail(False, "--input -: standard input is closed; pipe the requests in, or name "
                 "a file")
        try:
            stream = sys.stdin.buffer if input_file == "-" else open(input_file, "rb")  # noqa: SIM115
        except OSError as exc:
            fail(False, f"cannot read --input {input_file}: {exc.strerror}")
        try:
            run_jsonl(make_engine(config, metrics), stream, Path(output_dir))
        except OSError as exc:
            fail(False, f"cannot read or write: {exc}")
        finally:
            stream.close()
        return
    if (process_id is None) != (addresses is None):
        fail(False, "--process-id and --addresses go together (a multi-process cluster)")
    cluster = (process_id, addresses.split(";")) if addresses else None
    partitions = partitions or workers * (len(cluster[1]) if cluster else 1)
    from flows.dataflow import Topics
    from flows.kafka import KafkaConfigError, load_settings

    try:
        kafka_settings = load_settings(kafka_config, kafka_set)
    except KafkaConfigError as exc:
        fail(False, str(exc))
    if recovery_dir is not None:
        logging.getLogger("chargeflow.engine").warning(
            "--recovery is no longer needed and is ignored: the engine resumes from consumer "
            "group %s's committed offsets (docs/operations.md)", group)
    topics = Topics(requests_topic, decisions_topic, charges_topic, rejects_topic)
    _run_kafka(config, services, kafka, kafka_settings, group, topics, workers, commit_s,
               stale, partitions, metrics, cluster)


#: the parameters of a Kafka run, which a JSONL run (--input) refuses
_KAFKA_ONLY = {"kafka", "workers", "process_id", "addresses", "recovery_dir", "commit_s",
               "partitions", "group", "kafka_config", "kafka_set", "requests_topic",
               "decisions_topic", "charges_topic", "rejects_topic", "stale"}
_GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


def _run_kafka(config, services: Services, kafka: str | None, kafka_config: dict,
               group: str, topics, workers: int, commit_s: float, stale: str,
               partitions: int, metrics, cluster: tuple[int, list[str]] | None) -> None:
    from bytewax.run import cli_main

    from flows.broker import EmbeddedBroker, ensure_topics
    from flows.dataflow import kafka_flow
    from flows.kafka import KafkaSettings
    from flows.positions import StaleRequests, check_start
    from flows.runtime import make_engine

    log = logging.getLogger("chargeflow.engine")
    try:
        brokers = kafka or EmbeddedBroker(services.data_dir).start()
        settings = KafkaSettings(brokers, kafka_config, group)
        ensure_topics(settings, {topics.requests: partitions, topics.decisions: partitions,
                                 topics.charges: partitions, topics.rejects: 1})
        if cluster is None or cluster[0] == 0:  # one process checks (and moves) for all
            check_start(settings, topics.requests, config.retention_s, stale)
    except StaleRequests as exc:
        fail(False, str(exc))
    except BrokerError as exc:
        fail(False, str(exc), 2)
    log.info("starting: kafka %s (group %s, topic %s), redis %s, %d worker(s); %s", brokers,
             group, topics.requests, shown_url(config.redis_url), workers, native.describe())
    stop = threading.Event()
    flow = kafka_flow(settings, partial(make_engine, config, metrics), topics, stop=stop,
                      commit_every_s=commit_s)

    def drain(signum, frame):  # SIGTERM / SIGINT: stop reading, finish what was read, flush
        log.info("stopping: finishing the batches read, flushing outputs")
        stop.set()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    cli_main(flow, workers_per_process=workers, epoch_interval=timedelta(seconds=commit_s),
             process_id=cluster[0] if cluster else None,
             addresses=cluster[1] if cluster else None)
    log.info("stopped")


@click.command("demo")
@click.option("--duration", default=30.0, show_default=True, help="Seconds of load.")
@click.option("--rate", default=2000.0, show_default=True, help="Requests per second offered.")
@click.option("--accounts", "n_accounts", default=10_000, show_default=True)
@click.option("--catalog", "catalog_file", default=None, type=click.Path(dir_okay=False),
              help="Catalog (default: the sample catalog).")
@click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
              help="Directory of the embedded services (default .chargeflow/).")
@click.option("--rating-only", is_flag=True,
              help="Only rate generated usage with the kernels (no services, no engine).")
@click.option("--requests", "n", default=1_000_000, show_default=True,
              help="With --rating-only: how many usages to rate.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def demo(duration: float, rate: float, n_accounts: int, catalog_file: str | None,
         data_dir: str | None, rating_only: bool, n: int, as_json: bool) -> None:
    """The engine live on embedded Redis and broker: load, progress, summary."""
    path = catalog_file or str(sample_catalog_path())
    cat = load_catalog_or_exit(path, as_json)
    if rating_only:
        from flows.demo import run_rating_demo

        run_rating_demo(cat, n, 7, as_json)
        return
    from flows.live_demo import run_engine_demo

    try:
        run_engine_demo(Path(path), Path(data_dir or ".chargeflow"), duration, rate,
                        n_accounts, as_json)
    except DataDirError as exc:
        fail(as_json, str(exc), 1)
    except (StoreError, RuntimeError) as exc:
        fail(as_json, str(exc), 2)
    except BrokerError as exc:
        fail(as_json, str(exc), 2)
