"""``chargeflow notify``: the notifier (docs/notifications.md)."""

from __future__ import annotations

import logging
import signal
import threading

import click

from charging.errors import BrokerError, StoreError
from flows.cli_common import connect_services, fail, password_file_option


@click.command("notify")
@click.option("--rules", "rules_file", required=True, type=click.Path(dir_okay=False),
              help="The rules file (YAML): thresholds, webhooks, delivery.")
@click.option("--check", is_flag=True, help="Only validate the rules file, then exit.")
@click.option("--kafka", "kafka", default=None, metavar="HOST:PORT",
              help="Kafka bootstrap servers (default: the embedded broker in --data-dir).")
@click.option("--group", default="chargeflow-notify", show_default=True,
              help="The notifier's own consumer group.")
@click.option("--source", type=click.Choice(("kafka", "outbox")), default="kafka",
              show_default=True,
              help="Where the engine's charging is read: its Kafka topics (decisions, "
                   "charges), or the outbox stream in Redis that every engine writes — the "
                   "one for `serve` without --kafka, whose engine writes no topic.")
@click.option("--kafka-config", "kafka_config", default=None, type=click.Path(dir_okay=False),
              help="librdkafka settings, key=value per line (SASL, TLS, ...).")
@click.option("-X", "kafka_set", multiple=True, metavar="KEY=VALUE",
              help="One librdkafka setting (after --kafka-config); may be repeated.")
@click.option("--redis", "redis_url", default=None,
              help="Redis URL (default: $CHARGEFLOW_REDIS_URL, else embedded).")
@password_file_option
@click.option("--data-dir", default=None, envvar="CHARGEFLOW_DATA_DIR",
              help="Directory of the embedded services (default .chargeflow/).")
def notify(rules_file: str, check: bool, kafka: str | None, group: str, source: str,
           kafka_config: str | None, kafka_set: tuple[str, ...], redis_url: str | None,
           redis_password_file: str | None, data_dir: str | None) -> None:
    """Watch decisions and charges; emit threshold events and deliver them to webhooks."""
    from notifications.rules import RulesError, load_rules

    try:
        rules = load_rules(rules_file)
    except RulesError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    if check:
        click.echo(f"{rules_file}: valid — {len(rules.rules)} rules, "
                   f"{len(rules.webhooks)} webhooks")
        return
    from flows.broker import EmbeddedBroker, ensure_topics
    from flows.kafka import KafkaConfigError, KafkaSettings, load_settings
    from notifications.notifier import Notifier, NotifierConfig

    try:
        kafka_settings = load_settings(kafka_config, kafka_set)
    except KafkaConfigError as exc:
        fail(False, str(exc))
    services, client = connect_services(redis_url, data_dir, redis_password_file,
                                        create=False)
    log = logging.getLogger("chargeflow.notify")
    try:
        brokers = kafka or EmbeddedBroker(services.data_dir).start()
        settings = KafkaSettings(brokers, kafka_settings, group)
        config = NotifierConfig(settings, prefix=services.prefix, source=source)
        t = config.topics
        # the engine creates its topics with its partition count; the notifier only its own
        ensure_topics(settings, {t.notifications: 1, t.dead_letters: 1})
        notifier = Notifier(config, rules, client)
    except BrokerError as exc:
        fail(False, str(exc), 2)
    except ValueError as exc:  # --source outbox on a Redis Cluster
        fail(False, str(exc))
    stop = threading.Event()

    def drain(signum, frame):
        log.info("stopping: finishing the batch, delivering what is queued")
        stop.set()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    log.info("notifying: kafka %s (group %s), charging from %s, %d rules, %d webhooks",
             brokers, group, "the outbox" if source == "outbox" else "the engine's topics",
             len(rules.rules), len(rules.webhooks))
    try:
        notifier.run(stop)
    except (BrokerError, StoreError) as exc:
        fail(False, str(exc), 2)
