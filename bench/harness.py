"""What the end-to-end and soak benchmarks share: a load generator that produces requests at
an offered rate and times each reply, the processes under test, and the facts of a run
(machine, commit) that go into every result file.

Latency is from produce (the generator's clock) to the reply consumed by the generator, per
request id; a reply for an id already answered (a replay after a crash) does not count twice.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import psutil
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from flows.gateway_sim import Gateway

UNTHROTTLED = 0.0
#: The generator lets librdkafka batch for up to 5 ms, as a fleet of gateways behind one
#: producer would: the embedded broker (tansu) spends ~0.2 ms of CPU per produce request
#: whatever its size (measured), so one request per message would saturate it near 2,000/s.
LINGER_MS = 5

Requests = Callable[[], tuple[str, bytes, bytes]]  # () -> (id, key, payload)


@dataclass
class Phase:
    system: str  # engine | echo | baseline
    offered_rps: float  # 0: a fixed number of requests produced at once
    seconds: float
    label: str = ""
    sent: int = 0
    received: int = 0
    complete: bool = False  # every request answered before the drain timed out
    achieved_rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    #: CPU time per answered request (µs) of each process involved, over the phase
    cpu_us: dict[str, float] = field(default_factory=dict)
    series: list[tuple[float, float]] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "series"}


def drive(brokers: str, topic_in: str, topic_out: str, requests: Requests, system: str,
          rate: float, seconds: float, *, count: int = 100_000, drain_s: float = 60.0,
          partitions: int = 1, label: str = "", keep: int = 4000,
          t0_ns: int | None = None, cpu: CpuMeter | None = None) -> Phase:
    """Produce at ``rate`` for ``seconds`` (``rate`` 0: ``count`` requests at once), collect
    the replies by id, and measure the latency of each.

    ``series`` keeps up to ``keep`` (seconds since ``t0_ns``, latency ms) points, evenly
    subsampled. Achieved rate: replies over the time from the first to the last reply.
    With ``cpu``, ``cpu_us`` is the CPU time its processes spent from the first request
    produced to the last reply, per reply.
    """
    phase = Phase(system, rate, seconds, label)
    sent: dict[str, int] = {}
    lock = threading.Lock()
    latencies: list[tuple[float, float]] = []
    done = threading.Event()
    ready = threading.Event()
    t0 = t0_ns if t0_ns is not None else time.monotonic_ns()

    def consume() -> None:
        c = Consumer({"bootstrap.servers": brokers, "group.id": f"bench-{system}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 5})
        c.assign([TopicPartition(topic_out, p, OFFSET_END) for p in range(partitions)])
        c.consume(1, 0.5)  # resolve the end offsets before any request is produced
        ready.set()
        seen: set[str] = set()
        while not done.is_set():
            # consume(n, timeout) waits for n messages or the timeout: keep it short, or
            # replies sit in the local queue and every latency grows by up to the timeout
            for msg in c.consume(2000, 0.001):
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
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": LINGER_MS,
                         "queue.buffering.max.messages": 1_000_000})
    cpu_before = cpu.sample() if cpu is not None else {}
    begin_ns = time.monotonic_ns()
    begin = begin_ns / 1e9
    while (elapsed := time.monotonic() - begin) < seconds or not rate:
        if not rate and phase.sent >= count:
            break  # as fast as possible, but a bounded amount: the rate is its draining
        due = int(elapsed * rate) - phase.sent if rate else min(2000, count - phase.sent)
        for _ in range(max(0, due)):
            rid, key, value = requests()
            with lock:  # open loop: from when the request was due, not when it got out
                sent[rid] = (begin_ns + int(phase.sent * 1e9 / rate)) if rate else \
                    time.monotonic_ns()
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
        time.sleep(0.01)
    if cpu is not None and latencies:
        phase.cpu_us = cpu.per_request(cpu_before, len(latencies))
    done.set()
    reader.join(10)
    measure(phase, latencies, keep)
    return phase


class CpuMeter:
    """CPU time (user + system, every thread) of named groups of processes: where a
    machine's cores go per request, the system under test's and that of everything it
    needs on the same machine (broker, Redis, this load generator)."""

    def __init__(self, pids: dict[str, list[int]]):
        self.procs: dict[str, list[psutil.Process]] = {}
        for name, group in pids.items():
            for pid in group:
                try:
                    self.procs.setdefault(name, []).append(psutil.Process(pid))
                except psutil.Error:  # gone already: it is left out
                    continue

    def sample(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for name, procs in self.procs.items():
            for proc in procs:
                try:
                    user, system = proc.cpu_times()[:2]
                except psutil.Error:
                    continue
                seconds[name] = seconds.get(name, 0.0) + user + system
        return seconds

    def per_request(self, before: dict[str, float], requests: int) -> dict[str, float]:
        """µs of CPU per request since ``before`` by group, and their ``total``."""
        after = self.sample()
        used = {name: max(0.0, after[name] - before.get(name, 0.0)) for name in after}
        if not used:
            return {}
        used["total"] = sum(used.values())
        return {name: round(s * 1e6 / requests, 1) for name, s in used.items()}


def measure(phase: Phase, latencies: list[tuple[float, float]], keep: int) -> None:
    """Fill ``phase`` from its replies' (reply time s, latency ms), in reply order."""
    phase.received = len(latencies)
    phase.complete = phase.received == phase.sent
    if not latencies:
        return
    times = np.array([t for t, _ in latencies])
    lat = np.array([ms for _, ms in latencies])
    phase.achieved_rps = round(float(len(lat) / max(times.max() - times.min(), 1e-9)), 1)
    phase.p50_ms, phase.p99_ms, phase.p999_ms = (
        round(float(np.percentile(lat, q)), 2) for q in (50, 99, 99.9))
    phase.max_ms = round(float(lat.max()), 2)
    step = max(1, len(latencies) // keep)
    phase.series = [(round(t, 3), round(ms, 3)) for t, ms in latencies[::step]]


def gateway_requests(accounts: list[str], seed: int | None = None) -> Requests:
    """Gateway traffic (``flows.gateway_sim``) as (id, account key, JSON payload)."""
    gw = Gateway(accounts, seed=int(time.time()) if seed is None else seed)

    def next_request() -> tuple[str, bytes, bytes]:
        req = gw.next()
        return req["id"], req["account"].encode(), orjson.dumps(req)

    return next_request


def echo_requests() -> Requests:
    n = 0

    def next_request() -> tuple[str, bytes, bytes]:
        nonlocal n
        n += 1
        rid = f"e{n}"
        return rid, b"k", orjson.dumps({"id": rid, "kind": "event", "account": "x",
                                        "service": "sms", "ts": 1795856400000, "used": 1})

    return next_request


def wait_ready(brokers: str, topic_in: str, topic_out: str, requests: Requests,
               partitions: int, timeout_s: float = 90) -> None:
    """Return once a reply comes back on ``topic_out`` (the process under test runs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if drive(brokers, topic_in, topic_out, requests, "probe", 50, 0.2, drain_s=3,
                 partitions=partitions).received:
            return
    raise RuntimeError(f"nothing came back on {topic_out} within {timeout_s} s")


class Proc:
    """A Python subprocess under test (``python ARGS``), its output appended to a log."""

    def __init__(self, args: list[str], log: Path):
        self.args = args
        self.log = log
        self.p: subprocess.Popen | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.p = subprocess.Popen([sys.executable, *self.args], stdout=out,
                                      stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.p is not None
        return self.p.pid

    def kill(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait(30)

    def stop(self, timeout_s: float = 30) -> None:
        if self.p is None or self.p.poll() is not None:
            return
        self.p.terminate()
        try:
            self.p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def again(self) -> Proc:
        """The same command started anew (after a kill)."""
        return Proc(self.args, self.log).start()


class Procs:
    """The processes of one system under test (an engine cluster: one per process id),
    started, killed, restarted and stopped together."""

    def __init__(self, procs: list[Proc]):
        self.procs = procs

    def start(self) -> Procs:
        for p in self.procs:
            p.start()
        return self

    def kill(self) -> None:
        for p in self.procs:
            p.kill()

    def again(self) -> Procs:
        return Procs([p.again() for p in self.procs])

    def stop(self, timeout_s: float = 30) -> None:
        for p in self.procs:
            p.stop(timeout_s)


def machine() -> dict:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                      .splitlines() if line.startswith("MemTotal"))
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kb / 2**20, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def commit() -> str | None:
    """The git commit of the code measured (``+dirty`` when the tree had changes)."""
    here = Path(__file__).parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, cwd=here).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty.strip() else "")


def run_facts() -> dict:
    """What every result file carries: the commit, the machine, the time of measurement,
    and whether the per-request modules ran compiled (``chargeflow_native``)."""
    import chargeflow_native as native

    old = native.stale()
    return {"commit": commit(), "machine": machine(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "native": native.describe() + (f"; STALE: {', '.join(old)}" if old else "")}


def stamp() -> str:
    """The time part of result file names (one per run: its JSON and PNGs share it)."""
    return time.strftime("%Y%m%dT%H%M%S")


def save_result(out_dir: Path, name: str, result: dict, when: str | None = None) -> Path:
    """Write ``result`` with the run's facts as ``out_dir/name-<when>.json``; a ``machine``
    the result has already is kept, completed by the facts'."""
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = run_facts()
    result.setdefault("commit", facts["commit"])
    result["machine"] = facts["machine"] | result.get("machine", {})
    result.setdefault("measured_at", facts["measured_at"])
    result.setdefault("native", facts["native"])
    path = out_dir / f"{name}-{when or stamp()}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return path
