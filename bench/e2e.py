"""End-to-end benchmark: engine, per-request baseline and echo floor on the same services.

    chargeflow bench e2e [--seconds S] [--rates 2000,5000,10000] [--json] [--out DIR]

In one invocation, on private embedded services (tansu broker and redis-server in a temporary
directory, the sample catalog, 10,000 accounts), one phase at a time, each on a fresh broker
with the system under test freshly started (so an idle system does not tax the broker while
another is measured, and no phase inherits the record batches of the ones before, which make
this broker slower as they accumulate):

1. echo (``bench.echo``: the engine's source and sink with a step that returns its input):
   each offered rate for S seconds, then ``--burst`` requests produced at once; then the
   store floor (``bench.echo --redis``: the same, plus what every engine must do per request
   whatever its rules: one batched script of the data model's Redis commands and outputs of
   the engine's sizes) on the engine's traffic, a burst only;
2. the engine (``chargeflow run``): the same phases, then a crash phase: gateway
   traffic at ``--crash-rate`` while the engine is SIGKILLed and restarted;
3. the baseline (``bench.baseline``: one request at a time, redis-py round trips, the exact
   reference rater): ``--baseline-burst`` requests produced at once.

Before each echo and engine phase but the crash phase, ``--warm`` requests (20,000: two per
account) are answered untimed, so the engine's account cache is as warm as a running
engine's; the cold start after a restart is what the crash phase shows.

A burst's answer rate is the system's sustained throughput; ``ratio`` = engine / baseline,
``of_floor`` = engine / store floor (the share of this machine's ceiling for the data model's
I/O that the engine reaches).
Every phase but the crash phase also reports the CPU time per answered request of each
process it ran on (the system under test, broker, Redis and this load generator, ``cpu_us``):
with all of them on one machine, it shows which of them the machine's cores went to, and
whether they were all busy.
Writes a JSON of every figure (with machine and commit) and two PNGs: throughput, latency and
CPU per request against offered load, and latency over time through the crash and restart.
This module runs the phases; ``bench/e2e_report.py`` makes the figures, the file and plots.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import orjson

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from balances.embedded import PIDFILE as REDIS_PIDFILE
from balances.embedded import running_pid
from bench.baseline.store import provision
from bench.e2e_report import line, report
from bench.echo import charges_topic
from bench.harness import (
    UNTHROTTLED,
    CpuMeter,
    Phase,
    Proc,
    Procs,
    Requests,
    drive,
    echo_requests,
    gateway_requests,
    wait_ready,
)
from flows import provision as provisioning
from flows.broker import PIDFILE as BROKER_PIDFILE
from flows.broker import EmbeddedBroker, ensure_topics, free_port
from flows.cli_common import sample_catalog_path
from flows.dataflow import Topics
from flows.services import Services

ECHO_IN, ECHO_OUT = "bench.echo.in", "bench.echo.out"
FLOOR_IN, FLOOR_OUT = "bench.floor.in", "bench.floor.out"
BASE_IN, BASE_OUT = "bench.baseline.in", "bench.baseline.out"
BASELINE_PREFIX = "bl"
OPENING_MICROS = 1_000_000_000  # 1,000.00 per account: nobody runs dry during a run


def run(seconds: float, rates: list[float], n_accounts: int, out_dir: Path | None, *,
        workers: int = 1, processes: int = 1, burst: int = 100_000,
        baseline_burst: int = 20_000,
        crash_rate: float | None = 2000.0, crash_seconds: float = 20.0,
        drain_s: float = 60.0, warm: int = 20_000, progress=print) -> dict:
    tmp = tempfile.TemporaryDirectory(prefix="cf-bench-")
    data = Path(tmp.name)
    services = Services.from_options(None, str(data))
    phases: list[Phase] = []
    crash: dict | None = None
    try:
        client = services.redis()
        catalog_text = sample_catalog_path().read_text()
        specs = provisioning.synthetic_accounts(n_accounts, "b%05d", OPENING_MICROS)
        accounts = [a.id for a in specs]
        provisioning.provision(client, services.prefix, specs, catalog_text=catalog_text)
        provision(client, BASELINE_PREFIX, catalog_text, specs)
        t = Topics()
        parts = workers * processes  # one partition per worker: each reads one partition

        def engine_args(brokers: str, n: int) -> list[list[str]]:
            run = ["-m", "flows.cli", "run", "--data-dir", str(data), "--kafka", brokers,
                   "--workers", str(workers)]
            if processes == 1:
                return [run]
            addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
            return [[*run, "--process-id", str(i), "--addresses", addresses]
                    for i in range(processes)]

        systems = {
            "echo": (ECHO_IN, ECHO_OUT, parts, lambda b, n: [[
                "-m", "bench.echo", "--kafka", b, "--source", ECHO_IN, "--sink", ECHO_OUT]]),
            "floor": (FLOOR_IN, FLOOR_OUT, parts, lambda b, n: [[
                "-m", "bench.echo", "--kafka", b, "--source", FLOOR_IN, "--sink", FLOOR_OUT,
                "--redis", services.embedded.url]]),
            "engine": (t.requests, t.decisions, parts, engine_args),
            "baseline": (BASE_IN, BASE_OUT, 1, lambda b, n: [[
                "-m", "bench.baseline", "--kafka", b, "--redis", services.embedded.url,
                "--prefix", BASELINE_PREFIX, "--source", BASE_IN, "--decisions", BASE_OUT,
                "--charges", f"{BASE_OUT}.charges", "--rejects", f"{BASE_OUT}.rejects"]]),
        }
        traffic = {"echo": echo_requests(), "engine": gateway_requests(accounts),
                   "floor": gateway_requests(accounts),
                   "baseline": gateway_requests(accounts)}

        def measure(system: str, rate: float, count: int = burst,
                    crash_s: float | None = None) -> None:
            """One phase on a fresh broker and a freshly started process: the embedded
            broker's cost per request grows with the record batches it holds (bench/README),
            so no phase inherits the load of the ones before."""
            nonlocal crash
            topic_in, topic_out, n_parts, args = systems[system]
            what = f"{rate:,.0f}/s for {crash_s or seconds:g} s" if rate else \
                f"{count:,} at once"
            progress(f"{system}: {what}" + (", SIGKILL and restart" if crash_s else ""))
            bdir = data / f"broker-{len(phases)}"
            bdir.mkdir()
            brokers = EmbeddedBroker(bdir).start()
            proc = None
            try:
                ensure_topics(brokers, {t.requests: parts, t.decisions: parts,
                                        t.charges: parts, t.rejects: 1, topic_in: n_parts,
                                        topic_out: n_parts, charges_topic(topic_out): n_parts})
                proc = Procs([Proc(a, data / f"{system}-{i}.log")
                              for i, a in enumerate(args(brokers, len(phases)))]).start()
                wait_ready(brokers, topic_in, topic_out, traffic[system], n_parts)
                if warm and system != "baseline" and not crash_s:
                    # a running engine's account cache is warm: the cold start has a phase
                    # of its own (the crash phase); echo gets the same, for the broker's sake
                    drive(brokers, topic_in, topic_out, _touching(accounts, traffic[system])
                          if system != "echo" else traffic[system], system, UNTHROTTLED,
                          0, count=warm_count(warm, len(accounts)), partitions=n_parts,
                          drain_s=drain_s)
                if crash_s:
                    crash = _crash_phase(brokers, t, traffic[system], proc, rate, crash_s,
                                         n_parts, drain_s)
                    proc = crash["engine"]
                    phase = crash["phase"]
                else:
                    broker = running_pid(bdir / BROKER_PIDFILE, "tansu")
                    redis_pid = running_pid(services.data_dir / REDIS_PIDFILE, "redis-server")
                    cpu = CpuMeter({system: [p.pid for p in proc.procs],
                                    "broker": [broker] if broker else [],
                                    "redis": [redis_pid] if redis_pid else [],
                                    "generator": [os.getpid()]})
                    phase = drive(brokers, topic_in, topic_out, traffic[system], system,
                                  rate, seconds, count=count, partitions=n_parts,
                                  drain_s=drain_s if system != "baseline" else
                                  max(drain_s, 180.0), cpu=cpu)
            finally:
                if proc is not None:
                    proc.stop()
                EmbeddedBroker(bdir).stop()
            phases.append(phase)
            progress(f"  {line(phase.summary())}" + (
                f"; decisions again {crash['recovered_after_s']} s after the kill"
                if crash_s else ""))

        for rate in [*rates, UNTHROTTLED]:
            measure("echo", rate)
        measure("floor", UNTHROTTLED)
        for rate in [*rates, UNTHROTTLED]:
            measure("engine", rate)
        if crash_rate:
            measure("engine", crash_rate, crash_s=crash_seconds)
        measure("baseline", UNTHROTTLED, count=baseline_burst)
    finally:
        services.embedded.stop()
        tmp.cleanup()
    return report(phases, crash, seconds=seconds, accounts=n_accounts, workers=workers,
                  processes=processes, warm=warm, out_dir=out_dir)


def warm_count(warm: int, accounts: int) -> int:
    """Requests of a warm-up: ``warm``, and at least one per account."""
    return max(warm, accounts)


def _touching(accounts: list[str], traffic: Requests) -> Requests:
    """One SMS event for every account first, then the traffic: every account cached (the
    gateway's own traffic reaches only about a third of them in 20,000 requests)."""
    todo = iter(accounts)

    def next_request():
        a = next(todo, None)
        if a is None:
            return traffic()
        rid = f"warm-{a}"
        return rid, a.encode(), orjson.dumps({"id": rid, "kind": "event", "account": a,
                                             "service": "sms", "ts": 1795510800000, "used": 1})
    return next_request


def _crash_phase(brokers: str, topics: Topics, traffic, engine: Procs, rate: float,
                 seconds: float, parts: int, drain_s: float) -> dict:
    """Gateway traffic at ``rate`` while the engine is SIGKILLed a quarter of the way in and
    started again at once (it resumes from its group's committed offsets)."""
    t0 = time.monotonic_ns()
    events: dict = {"engine": engine}

    def kill_and_restart() -> None:
        time.sleep(seconds / 4)
        engine.kill()
        events["killed_s"] = round((time.monotonic_ns() - t0) / 1e9, 3)
        events["engine"] = engine.again()
        events["restarted_s"] = round((time.monotonic_ns() - t0) / 1e9, 3)

    killer = threading.Thread(target=kill_and_restart, daemon=True)
    killer.start()
    phase = drive(brokers, topics.requests, topics.decisions, traffic, "engine", rate, seconds,
                  partitions=parts, drain_s=drain_s, label="crash", keep=20_000, t0_ns=t0)
    killer.join()
    # Back: the end of the longest silence (no decision at all) that began after the kill.
    times = sorted(t for t, _ in phase.series)
    killed = events.get("killed_s")
    gaps = [(b - a, b) for a, b in zip(times, times[1:]) if killed is not None and
            b > killed]
    back = round(max(gaps)[1] - killed, 2) if gaps else None
    return {"phase": phase, "engine": events["engine"], "killed_s": events.get("killed_s"),
            "restarted_s": events.get("restarted_s"), "recovered_after_s": back}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="chargeflow bench e2e",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per paced phase")
    ap.add_argument("--rates", default="2000,5000,10000,15000",
                    help="offered rates of the paced phases, comma-separated")
    ap.add_argument("--burst", type=int, default=100_000,
                    help="requests produced at once to measure engine and echo throughput")
    ap.add_argument("--baseline-burst", type=int, default=20_000,
                    help="requests produced at once to measure the baseline")
    ap.add_argument("--crash-rate", type=float, default=2000.0,
                    help="offered rate of the crash phase (0: no crash phase)")
    ap.add_argument("--crash-seconds", type=float, default=20.0)
    ap.add_argument("--drain", type=float, default=60.0,
                    help="seconds to wait for the last replies of a phase")
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--warm", type=int, default=20_000,
                    help="untimed requests before each echo and engine phase but the crash "
                    "phase, so the engine's account cache is warm (0: none)")
    ap.add_argument("--workers", type=int, default=1, help="engine worker threads per process")
    ap.add_argument("--processes", type=int, default=1,
                    help="engine processes (a Bytewax cluster; one partition per worker)")
    ap.add_argument("--out", default="bench/results", help="directory for JSON and PNGs "
                    "('' to write nothing)")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    quiet = args.json
    result = run(args.seconds, rates, args.accounts, Path(args.out) if args.out else None,
                 workers=args.workers, processes=args.processes, burst=args.burst,
                 baseline_burst=args.baseline_burst,
                 crash_rate=args.crash_rate or None, crash_seconds=args.crash_seconds,
                 drain_s=args.drain, warm=args.warm,
                 progress=(lambda *_: None) if quiet else print)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(f"engine {result['engine_rps']} req/s, baseline {result['baseline_rps']} req/s: "
              f"ratio {result['ratio']}; echo floor {result['echo_rps']} req/s; store floor "
              f"{result['store_floor_rps']} req/s (engine at {result['of_floor']} of it)")
        print(f"at {result['offered_rps']} req/s offered: engine p50/p99/p99.9 "
              f"{result['p50_ms']}/{result['p99_ms']}/{result['p999_ms']} ms, echo floor p99 "
              f"{result['floor_p99_ms']} ms; every request answered: {result['complete']}")
        for plot in result.get("plots", []):
            print(f"plot: {plot}")
    return result


if __name__ == "__main__":
    main()
