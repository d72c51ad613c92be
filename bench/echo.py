"""The floors: the engine's dataflow shape with a step that does (almost) nothing.

    python -m bench.echo --kafka HOST:PORT --source TOPIC --sink TOPIC [--redis URL]

Kafka source → flat_map_batch → Kafka sink, with the same source and sink as the engine, so
the benchmark can show how much of a latency or throughput figure is the broker, Bytewax,
Redis and the machine rather than charging. Two steps:

- **echo** (without ``--redis``): each message goes out as it came.
- **store floor** (with ``--redis``): what every engine must do per request whatever its
  rules, and nothing else. The step reads each request's id and account (``orjson.loads``),
  makes one ``FLOOR_LUA`` call per batch (the Redis commands the data model needs per
  operation: version check, a 114-byte idempotency record in the account's hash, state; a
  ledger entry for 4 requests in 7; ``bench.store``), and produces a decision of a real
  one's size (about 225 bytes) for every request and a charge (about 305 bytes, to
  ``SINK.charges``) for 10 in 13. Those shares are the engine's on gateway traffic
  (``flows.gateway_sim``; measured by ``tests/bench/test_echo_floor.py``: ledger entries
  ~0.56 and charges ~0.77 a request).
  Where the floor is lighter than the engine: it writes an account's state once per
  request, where the engine writes it once per account per batch but with more in it
  (sessions, allowances, the compare-and-set); Redis's time per request was ~35 µs for the
  floor against ~47 µs for the engine in one measurement (review 5, ``INFO commandstats``).
  The gap between this floor and the engine is what the engine's own work costs.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from datetime import timedelta

import bytewax.operators as op
import msgpack
import orjson
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from balances.store import DEFAULT_RETENTION_S
from bench.store import FLOOR_LUA
from flows.engine import Output
from flows.kafka import KafkaSettings
from flows.kafka_io import OutputSink, RequestSource, Workers, split_marks
from flows.services import connect

FLOOR_PREFIX = "floor"  # keys of their own: the engine's accounts are not touched
RECORD = bytes(114)  # a session step's idempotency record
# a decision and a charge of the engine's sizes on gateway traffic, the id spliced in
DECISION = (b'{"id":"', b'","kind":"update","account":"b01234","service":"data","session":'
            b'"g11-24443-s","seq":4,"result":"SUCCESS","granted":0,"validity_s":0,"final"'
            b':false,"balance":"1000.00","charged":"0.0000","latency_us":109229}')
CHARGE = (b'{"id":"', b'","account":"b06304","service":"voice","session":"g11-24200-s",'
          b'"seq":4,"ts":"2026-11-24T09:02:52.088Z","units":92,"rated_units":120,'
          b'"allowance_units":0,"cost":"0.4000","currency":"EUR","tariff":"VOICE_STD","rate"'
          b':"other","catalog_version":"2026-11-a","balance":"996.00","uncharged":"0"}')
# the engine's shares on gateway traffic: a ledger entry for 4 requests in 7 (~0.57), a
# charge for 10 in 13 (~0.77), counted over the stream, not per batch
LEDGER_SHARE = (4, 7)
CHARGE_SHARE = (10, 13)


def _share(n: int, share: tuple[int, int]) -> bool:
    return n % share[1] < share[0]


def charges_topic(sink: str) -> str:
    return f"{sink}.charges"


def echo_step(items: list) -> list:
    payloads, marks = split_marks(items)
    return [Output("echo", None, p) for p in payloads] + marks


def store_floor_step(redis_url: str, prefix: str = FLOOR_PREFIX) -> Callable[[list], list]:
    """The store floor's step (above), with Redis's work overlapped with the step's own as
    the engine's is: the script is sent, the outputs built, then the reply read."""
    local = threading.local()

    def step(items: list) -> list:
        payloads, marks = split_marks(items)
        if not payloads:
            return marks
        conn = getattr(local, "conn", None)
        if conn is None:
            client = connect(redis_url)
            local.sha = client.script_load(FLOOR_LUA)
            conn = local.conn = client.connection_pool.get_connection()
            local.n = 0  # requests so far: the shares run over the stream
        docs = [orjson.loads(p) for p in payloads]
        first = local.n
        local.n += len(docs)
        ops: list = []
        for k, doc in enumerate(docs, first):
            ops += (doc["account"], doc["id"], RECORD, int(_share(k, LEDGER_SHARE)))
        conn.send_command("EVALSHA", local.sha, 0, msgpack.packb(ops, use_bin_type=False),
                          prefix, DEFAULT_RETENTION_S, "each")
        outputs: list = []
        for k, doc in enumerate(docs, first):
            rid, key = doc["id"].encode(), doc["account"].encode()
            outputs.append(Output("decision", key, DECISION[0] + rid + DECISION[1]))
            if _share(k, CHARGE_SHARE):
                outputs.append(Output("charge", key, CHARGE[0] + rid + CHARGE[1]))
        conn.read_response()
        return outputs + marks

    return step


def echo_flow(brokers: str, source: str, sink: str, stop: threading.Event,
              redis_url: str | None = None) -> Dataflow:
    """The engine's flow with nothing (or only the store floor) in the middle: same source,
    same sink; decisions (and echoes) go to ``sink``, charges to ``charges_topic(sink)``."""
    flow = Dataflow("echo")
    settings = KafkaSettings(brokers, group=f"echo-{source}")
    workers = Workers()
    inp = op.input("in", flow, RequestSource(settings, source, stop, workers=workers))
    step = echo_step if redis_url is None else store_floor_step(redis_url)
    out = op.flat_map_batch("echo", inp, step)
    op.output("out", out, OutputSink(settings, lambda kind: charges_topic(sink)
                                     if kind == "charge" else sink, workers=workers))
    return flow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kafka", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--sink", required=True)
    ap.add_argument("--redis", default=None,
                    help="the store floor against this Redis URL (default: echo)")
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cli_main(echo_flow(args.kafka, args.source, args.sink, stop, args.redis),
             epoch_interval=timedelta(seconds=2))


if __name__ == "__main__":
    main()
