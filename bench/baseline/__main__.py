"""The baseline process: a confluent-kafka consumer loop deciding one request at a time.

    python -m bench.baseline --kafka HOST:PORT --redis URL --prefix P \\
        [--source TOPIC] [--decisions TOPIC] [--charges TOPIC] [--rejects TOPIC]

Topics default to the engine's (``chargeflow.requests`` in; ``chargeflow.decisions``,
``.charges``, ``.rejects`` out) and are created when missing, like ``chargeflow run`` does.
Every partition of the source topic is assigned explicitly and read from its beginning (no
consumer group, no committed offsets): benchmark topics are fresh, and re-reading an old one
is safe, only slow, because every id already decided is a replay. ``fetch.wait.max.ms`` is 5,
as the engine's source has it. Each loop takes one message, decides it
(``store.Baseline.handle``), hands the outputs to the producer (``linger.ms`` 5, librdkafka's
default: with 1 ms nearly every message became a record batch of its own, which the embedded
broker pays for per batch; the engine flushes once per micro-batch) and serves delivery
callbacks with ``poll(0)``. SIGTERM or SIGINT: finish the
message in hand, flush the producer, exit 0. Prints ``baseline ready`` once consuming.
Exit codes: 0 stopped cleanly, 1 no catalog under the prefix, 2 Kafka or Redis unreachable.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from bench.baseline.store import Baseline, BaselineError
from charging.errors import BrokerError
from flows.broker import ensure_topics

log = logging.getLogger("chargeflow.baseline")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.baseline",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--kafka", required=True, metavar="HOST:PORT")
    ap.add_argument("--redis", required=True, metavar="URL", help="redis-py URL")
    ap.add_argument("--prefix", required=True, help="key prefix that provision() set up")
    ap.add_argument("--source", default="chargeflow.requests", metavar="TOPIC")
    ap.add_argument("--decisions", default="chargeflow.decisions", metavar="TOPIC")
    ap.add_argument("--charges", default="chargeflow.charges", metavar="TOPIC")
    ap.add_argument("--rejects", default="chargeflow.rejects", metavar="TOPIC")
    ap.add_argument("--partitions", type=int, default=1,
                    help="partitions of the topics created when missing (default 1)")
    ap.add_argument("--format", dest="fmt", choices=("json", "msgpack"), default="json")
    return ap.parse_args(argv)


class _Stop:
    """Set by SIGTERM / SIGINT; the loop checks it between messages."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        self.requested = True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        client = redis.Redis.from_url(args.redis)
        client.ping()
        baseline = Baseline(client, args.prefix, fmt=args.fmt)
    except redis.RedisError as exc:
        log.error("cannot reach Redis at %s: %s", args.redis, exc)
        return 2
    except BaselineError as exc:
        log.error("%s", exc)
        return 1
    topics = {"decision": args.decisions, "charge": args.charges, "reject": args.rejects}
    try:
        ensure_topics(args.kafka, {args.source: args.partitions,
                                   args.decisions: args.partitions,
                                   args.charges: args.partitions, args.rejects: 1})
    except BrokerError as exc:
        log.error("%s", exc)
        return 2

    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer = Consumer({"bootstrap.servers": args.kafka, "group.id": "chargeflow-baseline",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5,
                         "fetch.min.bytes": 1})
    producer = Producer({"bootstrap.servers": args.kafka, "linger.ms": 5,
                         "compression.type": "none"})
    failures: list = []

    def delivered(err, msg) -> None:
        if err is not None:
            failures.append(err)
            log.error("delivery failed: %s", err)

    parts = sorted(consumer.list_topics(args.source, timeout=30).topics[args.source].partitions)
    consumer.assign([TopicPartition(args.source, p, OFFSET_BEGINNING) for p in parts])
    print("baseline ready", flush=True)
    handled = 0
    started = time.monotonic()
    try:
        while not stop.requested:
            producer.poll(0)
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", err)
                continue
            entered = time.monotonic_ns()
            for kind, key, value in baseline.handle(msg.value() or b"", entered):
                while True:
                    try:
                        producer.produce(topics[kind], value=value, key=key,
                                         on_delivery=delivered)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain
                        producer.poll(0.05)
            handled += 1
    finally:
        left = producer.flush(30)
        consumer.close()
        baseline.close()
        elapsed = time.monotonic() - started
        log.info("stopped: %d requests in %.1f s; %d output(s) undelivered", handled, elapsed,
                 left + len(failures))
    return 0 if left == 0 and not failures else 2


if __name__ == "__main__":
    sys.exit(main())
