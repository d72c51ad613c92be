"""End-to-end benchmark: the engine through a real broker and Redis, next to an echo floor.

    chargeflow bench e2e [--seconds S] [--rates 2000,5000,10000,20000] [--json] [--out DIR]

On private embedded services (a fresh tansu broker and redis-server in a temporary directory,
sample catalog, 10,000 accounts), for each offered rate: produce gateway traffic at that rate
for S seconds, read the decisions back (waiting up to 60 s for the last), and measure latency
from produce to decision consumed (p50/p99/p99.9) and the rate achieved. Then an unthrottled
phase: 100,000 requests produced at once, the rate at which they are answered is the
sustained throughput. The same phases run, in the same invocation, through a do-nothing
echo dataflow on the same broker (``bench.echo``): the floor that broker, Bytewax and this
machine set.
Writes a JSON of every figure and a PNG (latency against offered load, latency over time).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from balances.accounts import AccountSpec
from balances.store import BalanceStore
from bench.gateway import Gateway
from catalog_cache.store import load_catalog_text
from flows.broker import EmbeddedBroker, ensure_topics
from flows.cli import sample_catalog_path
from flows.dataflow import Topics
from flows.services import Services

ECHO_IN, ECHO_OUT = "bench.echo.in", "bench.echo.out"
UNTHROTTLED = 0.0
UNTHROTTLED_COUNT = 100_000  # requests of the unthrottled phase, produced at once


@dataclass
class Phase:
    system: str  # engine | echo
    offered_rps: float  # 0: as fast as the producer goes
    seconds: float
    sent: int = 0
    received: int = 0
    complete: bool = False  # every request answered before the drain timed out
    achieved_rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    series: list[tuple[float, float]] = field(default_factory=list, repr=False)


def drive(brokers: str, topic_in: str, topic_out: str, requests, system: str, rate: float,
          seconds: float, drain_s: float = 60.0, partitions: int = 1) -> Phase:
    """Produce at ``rate`` for ``seconds``, collect replies by id, measure latency."""
    phase = Phase(system, rate, seconds)
    sent: dict[str, int] = {}
    lock = threading.Lock()
    latencies: list[tuple[float, float]] = []
    done = threading.Event()
    ready = threading.Event()
    t0 = time.monotonic_ns()

    def consume() -> None:
        c = Consumer({"bootstrap.servers": brokers, "group.id": f"bench-{system}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 5})
        c.assign([TopicPartition(topic_out, p, OFFSET_END) for p in range(partitions)])
        c.consume(1, 0.5)  # resolve the end offsets before any request is produced
        ready.set()
        seen: set[str] = set()
        while not done.is_set():
            for msg in c.consume(2000, 0.05):
                if msg.error():
                    continue
                now = time.monotonic_ns()
                rid = orjson.loads(msg.value())["id"]
                with lock:
                    start = sent.get(rid)
                if start is None or rid in seen:
                    continue
                seen.add(rid)
                latencies.append(((now - t0) / 1e9, (now - start) / 1e6))
        c.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    ready.wait(30)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 1,
                         "queue.buffering.max.messages": 1_000_000})
    begin = time.monotonic()
    while (elapsed := time.monotonic() - begin) < seconds:
        if not rate and phase.sent >= UNTHROTTLED_COUNT:
            break  # as fast as possible, but a bounded amount: the rate is its draining
        due = int(elapsed * rate) - phase.sent if rate else 2000
        for _ in range(max(0, due)):
            rid, key, value = requests()
            with lock:
                sent[rid] = time.monotonic_ns()
            while True:
                try:
                    producer.produce(topic_in, key=key, value=value)
                    break
                except BufferError:
                    producer.poll(0.01)
            phase.sent += 1
        producer.poll(0)
        if rate:
            time.sleep(0.001)
    producer.flush(30)
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline and len(latencies) < phase.sent:
        time.sleep(0.05)
    done.set()
    reader.join(10)
    phase.received = len(latencies)
    phase.complete = phase.received == phase.sent
    if latencies:
        times = np.array([t for t, _ in latencies])
        lat = np.array([ms for _, ms in latencies])
        phase.achieved_rps = round(float(len(lat) / max(times.max() - times.min(), 1e-9)), 1)
        phase.p50_ms, phase.p99_ms, phase.p999_ms = (
            round(float(np.percentile(lat, q)), 2) for q in (50, 99, 99.9))
        phase.series = [(round(t, 3), round(ms, 3)) for t, ms in latencies[:: max(1, len(
            latencies) // 4000)]]
    return phase


def _gateway_requests(accounts: list[str]):
    gw = Gateway(accounts, seed=int(time.time()))

    def next_request() -> tuple[str, bytes, bytes]:
        req = gw.next()
        return req["id"], req["account"].encode(), orjson.dumps(req)

    return next_request


def _echo_requests():
    n = 0

    def next_request() -> tuple[str, bytes, bytes]:
        nonlocal n
        n += 1
        rid = f"e{n}"
        return rid, b"k", orjson.dumps({"id": rid, "kind": "event", "account": "x",
                                        "service": "sms", "ts": 1795856400000, "used": 1})

    return next_request


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdout=open(log, "ab"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)


def _wait_ready(brokers: str, topic_in: str, topic_out: str, requests, partitions: int,
                timeout_s=90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if drive(brokers, topic_in, topic_out, requests, "probe", 50, 0.2, 3,
                 partitions).received:
            return
    raise RuntimeError(f"nothing came back on {topic_out} within {timeout_s} s")


def run(seconds: float, rates: list[float], n_accounts: int, out_dir: Path | None,
        workers: int = 1) -> dict:
    tmp = tempfile.TemporaryDirectory(prefix="cf-bench-")
    data = Path(tmp.name)
    services = Services.from_options(None, str(data))
    procs: list[subprocess.Popen] = []
    phases: list[Phase] = []
    try:
        client = services.redis()
        load_catalog_text(client, sample_catalog_path().read_text(), prefix=services.prefix)
        accounts = [f"b{i:05d}" for i in range(n_accounts)]
        BalanceStore(client, prefix=services.prefix).upsert_accounts(
            [AccountSpec(a, "PREPAID_S", 1_000_000_000) for a in accounts])
        brokers = EmbeddedBroker(data).start()
        t = Topics()
        parts = workers  # one partition per worker: each worker reads one partition
        ensure_topics(brokers, {t.requests: parts, t.decisions: parts, t.charges: parts,
                                t.rejects: 1, ECHO_IN: parts, ECHO_OUT: parts})
        procs.append(_start(["-m", "bench.echo", "--kafka", brokers, "--source", ECHO_IN,
                             "--sink", ECHO_OUT], data / "echo.log"))
        procs.append(_start(["-m", "flows.cli", "run", "--data-dir", str(data), "--kafka",
                             brokers, "--workers", str(workers)], data / "engine.log"))
        _wait_ready(brokers, ECHO_IN, ECHO_OUT, _echo_requests(), parts)
        _wait_ready(brokers, t.requests, t.decisions, _gateway_requests(accounts), parts)
        for rate in [*rates, UNTHROTTLED]:
            phases.append(drive(brokers, ECHO_IN, ECHO_OUT, _echo_requests(), "echo", rate,
                                seconds, partitions=parts))
            phases.append(drive(brokers, t.requests, t.decisions, _gateway_requests(accounts),
                                "engine", rate, seconds, partitions=parts))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        services.embedded.stop()
        EmbeddedBroker(data).stop()
        tmp.cleanup()
    return _report(phases, seconds, n_accounts, workers, out_dir)


def _report(phases: list[Phase], seconds: float, n_accounts: int, workers: int,
            out_dir: Path | None) -> dict:
    def pick(system: str, rate: float) -> Phase | None:
        return next((p for p in phases if p.system == system and p.offered_rps == rate), None)

    engine_max = pick("engine", UNTHROTTLED)
    echo_max = pick("echo", UNTHROTTLED)
    at_10k = pick("engine", 10000.0)
    floor_10k = pick("echo", 10000.0)
    result = {
        "engine_rps": engine_max.achieved_rps if engine_max else None,
        "echo_rps": echo_max.achieved_rps if echo_max else None,
        "offered_rps": [p.offered_rps for p in phases if p.system == "engine"],
        "p50_ms": at_10k.p50_ms if at_10k else None,
        "p99_ms": at_10k.p99_ms if at_10k else None,
        "p999_ms": at_10k.p999_ms if at_10k else None,
        "floor_p99_ms": floor_10k.p99_ms if floor_10k else None,
        "phases": [{k: v for k, v in asdict(p).items() if k != "series"} for p in phases],
        "seconds_per_phase": seconds, "accounts": n_accounts, "workers": workers,
        "commit": _commit(), "machine": {"cpus": os.cpu_count(),
                                         "python": platform.python_version()},
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        (out_dir / f"e2e-{stamp}.json").write_bytes(
            orjson.dumps(result, option=orjson.OPT_INDENT_2))
        result["plot"] = str(_plot(phases, out_dir / f"e2e-{stamp}.png"))
    return result


def _plot(phases: list[Phase], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for system, style in (("engine", "o-"), ("echo", "s--")):
        ps = [p for p in phases if p.system == system and p.offered_rps and p.p50_ms]
        for q, alpha in (("p50_ms", 1.0), ("p99_ms", 0.6)):
            ax1.plot([p.offered_rps for p in ps], [getattr(p, q) for p in ps], style,
                     alpha=alpha, label=f"{system} {q[:-3]}")
    ax1.set(xlabel="offered requests/s", ylabel="latency, produce → reply (ms)",
            title="latency against offered load", yscale="log")
    ax1.legend()
    ax1.grid(alpha=0.3)
    rated = [p for p in phases if p.system == "engine" and p.offered_rps]
    if rated:
        top = max(rated, key=lambda p: p.offered_rps)
        if top.series:
            t, ms = zip(*top.series)
            ax2.plot(np.array(t) - t[0], ms, ".", markersize=2)
        ax2.set(xlabel="seconds", ylabel="latency (ms)", yscale="log",
                title=f"engine latency over time at {top.offered_rps:,.0f} req/s offered")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rates", default="2000,5000,10000,20000")
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    result = run(args.seconds, rates, args.accounts, Path(args.out) if args.out else None,
                 args.workers)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        for p in result["phases"]:
            offered = f"{p['offered_rps']:>8,.0f}" if p["offered_rps"] else "     max"
            print(f"{p['system']:>6} offered {offered}/s: sent {p['sent']:>7,} received "
                  f"{p['received']:>7,} achieved {p['achieved_rps']:>9,.0f}/s  p50 "
                  f"{p['p50_ms']} p99 {p['p99_ms']} p99.9 {p['p999_ms']} ms")
        print(f"engine sustained {result['engine_rps']:,} req/s (echo floor "
              f"{result['echo_rps']:,}); at 10,000/s p99 {result['p99_ms']} ms (floor "
              f"{result['floor_p99_ms']} ms); plot {result.get('plot')}")
    return result


if __name__ == "__main__":
    main()
