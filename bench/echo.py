"""The do-nothing floor: the engine's dataflow shape with a step that only echoes.

    python -m bench.echo --kafka HOST:PORT --source TOPIC --sink TOPIC

Kafka source → flat_map_batch (returns each message as it came) → Kafka sink, with the same
source and sink as the engine, so the benchmark can show how much of a latency or
throughput figure is the broker, Bytewax and the machine rather than charging.
"""

from __future__ import annotations

import argparse
import signal
import threading
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main

from flows.dataflow import OutputSink, RequestSource, split_marks
from flows.engine import Output


def echo_flow(brokers: str, source: str, sink: str, stop: threading.Event) -> Dataflow:
    """The engine's flow with nothing in the middle: same source, same sink."""
    flow = Dataflow("echo")
    inp = op.input("in", flow, RequestSource(brokers, source, stop))

    def echo(items: list) -> list:
        payloads, marks = split_marks(items)
        return [Output("echo", None, p) for p in payloads] + marks

    out = op.flat_map_batch("echo", inp, echo)
    op.output("out", out, OutputSink(brokers, lambda kind: sink))
    return flow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kafka", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--sink", required=True)
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cli_main(echo_flow(args.kafka, args.source, args.sink, stop),
             epoch_interval=timedelta(seconds=2))


if __name__ == "__main__":
    main()
