"""Cost of decoding and validating one request (``decode`` + ``parse``), per message.

    python -m bench.decode [--runs 7] [--number 200000]

Typical gateway requests (a voice update of flows.gateway_sim's shape, an SMS event), in JSON
and MessagePack, each timed with ``timeit`` over ``--number`` messages, ``--runs`` times;
prints the median and the spread in nanoseconds (of this process's CPU time) per message,
and whether the compiled (mypyc) modules ran. The engine does exactly this for every
message it reads.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit

import msgpack
import orjson

import chargeflow_native as native
from charging.requests import decode, parse

UPDATE = {"id": "g7-1234", "kind": "update", "account": "acct00042", "service": "voice",
          "session": "g7-1200-s", "seq": 3, "ts": 1_795_510_808_400, "used": 60,
          "requested": 60}
EVENT = {"id": "g7-1235", "kind": "event", "account": "acct00042", "service": "sms",
         "ts": 1_795_510_808_407, "destination": "4917612345", "used": 1}
CASES = {
    "json update": (orjson.dumps(UPDATE), "json"),
    "json event": (orjson.dumps(EVENT), "json"),
    "msgpack update": (msgpack.packb(UPDATE), "msgpack"),
}


def measure(payload: bytes, fmt: str, runs: int, number: int) -> list[float]:
    """Nanoseconds per message of ``parse(decode(payload, fmt))``, one figure per run."""
    parse(decode(payload, fmt))  # it must be valid: a reject would time the wrong path
    # CPU time of this process: on a shared machine, time other processes take is not ours
    timer = timeit.Timer(lambda: parse(decode(payload, fmt)), timer=time.process_time)
    return [t / number * 1e9 for t in timer.repeat(runs, number)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--number", type=int, default=200_000)
    args = ap.parse_args(argv)
    print(f"decode+parse per message ({native.describe()}; median of {args.runs} runs "
          f"of {args.number:,})")
    for name, (payload, fmt) in CASES.items():
        ns = measure(payload, fmt, args.runs, args.number)
        print(f"  {name:15s} {len(payload):4d} B  {statistics.median(ns):7.0f} ns  "
              f"(min {min(ns):.0f}, max {max(ns):.0f})")


if __name__ == "__main__":
    main()
