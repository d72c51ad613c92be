"""``chargeflow demo``: the engine, live, on embedded services.

Starts (or reuses) the private Redis and broker of the data directory, loads the sample
catalog and demo accounts, starts the engine (``chargeflow run``) as a child process, and
plays a gateway at a fixed rate for a while, showing requests/s, latency (produce to decision
consumed) and decisions by result as they happen. It closes with a summary: throughput,
latency percentiles, results, revenue, and a reconciliation of the ledger with the balances
and with the charges that came out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from balances.admin import ledger_reconciles
from balances.store import BalanceStore
from charging.money import MICROS, format_micros, parse_decimal
from flows.broker import EmbeddedBroker, ensure_topics
from flows.dataflow import Topics
from flows.gateway_sim import Gateway
from flows.provision import provision, synthetic_accounts
from flows.services import ENV_URL, Services

DRY_SHARE = 0.1  # accounts that start with little credit and run dry
CATCH_UP_S = 15.0  # at most this long, after the engine stopped, to read its last outputs


@dataclass
class Tally:
    sent: dict[str, int] = field(default_factory=dict)  # id -> monotonic ns when produced
    latencies_ms: list[float] = field(default_factory=list)
    results: Counter = field(default_factory=Counter)
    decided: set[str] = field(default_factory=set)
    revenue_micros: int = 0
    charged: set[str] = field(default_factory=set)  # ids whose charge was counted
    first_sent_ns: int | None = None
    last_decided_ns: int | None = None
    rejects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_engine_demo(catalog_path: Path, data_dir: Path, duration_s: float, rate: float,
                    n_accounts: int, as_json: bool) -> dict:
    console = Console(stderr=as_json, quiet=as_json)
    # private services, always: the demo makes the sample catalog the active version and
    # loads 10,000 accounts, which must not land in a Redis that $CHARGEFLOW_REDIS_URL
    # names for the engine and the administrative commands
    services = Services(None, data_dir)
    step = _Steps(console)
    step("starting Redis (embedded, in " + str(services.data_dir) + ")")
    client = services.redis()
    step(f"loading the catalog and {n_accounts:,} accounts")
    accounts = [f"demo-{i:05d}" for i in range(n_accounts)]

    def specs(catalog):
        plan = "PREPAID_S" if "PREPAID_S" in catalog.plans else catalog.first_plan()
        return synthetic_accounts(n_accounts, "demo-%05d", 20_000_000, plan=plan,
                                  dry_share=DRY_SHARE, dry_micros=500_000)

    catalog = provision(client, services.prefix, specs, catalog_text=catalog_path.read_text(),
                        source=str(catalog_path))
    store = BalanceStore(client, prefix=services.prefix)
    topics = Topics()
    step("starting the Kafka-protocol broker (embedded tansu)")
    brokers = EmbeddedBroker(services.data_dir).start()
    ensure_topics(brokers, {topics.requests: 1, topics.decisions: 1, topics.charges: 1,
                            topics.rejects: 1})  # one engine worker: one partition
    log = open(services.data_dir / "engine.log", "ab")  # noqa: SIM115 - closed below
    private = {k: v for k, v in os.environ.items() if k != ENV_URL}
    step("starting the engine (a first start compiles its kernels)")
    engine = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--data-dir",
                               str(services.data_dir)], stdout=log, stderr=subprocess.STDOUT,
                              env=private)
    started = time.time()
    tally = Tally()
    stop = threading.Event()
    reader = threading.Thread(target=_consume, args=(brokers, topics, tally, stop), daemon=True)
    reader.start()
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 2})
    try:
        with console.status("waiting for the engine's first decision ..."):
            _await_engine(producer, topics, tally, accounts[0], engine)
        step.done()
        # ids of their own for every run: a second demo on the same data dir would otherwise
        # send the first one's ids again, and be answered with its replays
        gateway = Gateway(accounts, seed=time.time_ns() % 2**31)
        _drive(producer, topics, gateway, tally, rate, duration_s, console)
        _drain(tally, timeout_s=15)
    finally:
        engine.terminate()  # it finishes the batches it read and flushes their outputs
        try:
            engine.wait(timeout=30)
        except subprocess.TimeoutExpired:
            engine.kill()
        log.close()
        # the reader stops once it has read every output now on the broker: a decision can
        # arrive before the charge produced with it, which then counts in the summary too
        stop.set()
        reader.join(timeout=CATCH_UP_S + 5)
    summary = _summary(tally, store, accounts, catalog.currency, started, duration_s)
    if as_json:
        print(orjson.dumps(summary).decode())
    else:
        _print_summary(console, summary)
    return summary


class _Steps:
    """The demo's start-up, a line per step with the seconds since it began."""

    def __init__(self, console: Console):
        self.console = console
        self.t = time.monotonic()

    def __call__(self, what: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.t:5.1f} s[/dim]  {what}")

    def done(self) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.t:5.1f} s[/dim]  the engine "
                           "answers: load starts")


def _await_engine(producer: Producer, topics: Topics, tally: Tally, account: str,
                  engine: subprocess.Popen, timeout_s: float = 90) -> None:
    """Send a probe until the engine answers it (start-up: broker metadata, kernels)."""
    deadline = time.monotonic() + timeout_s
    probes: list[str] = []
    next_probe = 0.0
    while time.monotonic() < deadline:
        if engine.poll() is not None:
            raise RuntimeError("the engine exited at start; see engine.log in the data dir")
        if time.monotonic() >= next_probe:  # again every 2 s: the reader may join late
            probe = {"id": f"probe-{time.time_ns()}", "kind": "event", "account": account,
                     "service": "sms", "ts": int(time.time() * 1000), "used": 0}
            _send(producer, topics, tally, probe)
            producer.flush(5)
            probes.append(probe["id"])
            next_probe = time.monotonic() + 2.0
        with tally.lock:
            if any(p in tally.decided for p in probes):
                for p in probes:  # probes are not part of the demo's figures
                    tally.sent.pop(p, None)
                    tally.decided.discard(p)
                tally.latencies_ms.clear()
                tally.results.clear()
                return
        time.sleep(0.05)
    raise RuntimeError("the engine did not answer within 90 s; see engine.log")


def _send(producer: Producer, topics: Topics, tally: Tally, req: dict) -> None:
    with tally.lock:
        tally.sent[req["id"]] = time.monotonic_ns()
    producer.produce(topics.requests, key=req["account"].encode(), value=orjson.dumps(req))
    producer.poll(0)


def _drive(producer, topics, gateway, tally, rate, duration_s, console) -> None:
    start = time.monotonic()
    tally.first_sent_ns = time.monotonic_ns()
    sent = 0
    with Live(_table(tally, 0.0, sent), console=console, refresh_per_second=4) as live:
        while (elapsed := time.monotonic() - start) < duration_s:
            due = int(elapsed * rate) - sent
            for _ in range(due):
                _send(producer, topics, tally, gateway.next())
                sent += 1
            producer.poll(0)
            live.update(_table(tally, elapsed, sent))
            time.sleep(0.002)
        producer.flush(10)
        live.update(_table(tally, time.monotonic() - start, sent))


def _drain(tally: Tally, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with tally.lock:
            if len(tally.decided) >= len(tally.sent):
                return
        time.sleep(0.05)


def _consume(brokers: str, topics: Topics, tally: Tally, stop: threading.Event) -> None:
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "chargeflow-demo",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5})
    parts = [TopicPartition(t, 0) for t in (topics.decisions, topics.charges, topics.rejects)]
    for tp in parts:  # from the end: the topics hold earlier runs' outputs
        tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]
    consumer.assign(parts)
    ends: list[int] | None = None  # the partitions' ends once stopped: read up to them
    deadline = 0.0
    try:
        while True:
            if stop.is_set() and ends is None:
                ends = [consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in parts]
                deadline = time.monotonic() + CATCH_UP_S
            if ends is not None and (time.monotonic() > deadline
                                     or _read_up_to(consumer, parts, ends)):
                return
            for msg in consumer.consume(1000, 0.002):  # a longer wait would add to latency
                if msg.error():
                    continue
                doc = orjson.loads(msg.value())
                now = time.monotonic_ns()
                with tally.lock:
                    if msg.topic() == topics.decisions:
                        rid = doc["id"]
                        if rid in tally.decided or rid not in tally.sent:  # late probes too
                            continue
                        tally.decided.add(rid)
                        tally.results[doc["result"]] += 1
                        tally.latencies_ms.append((now - tally.sent[rid]) / 1e6)
                        tally.last_decided_ns = now
                    elif msg.topic() == topics.charges:
                        # once per request of this run: the engine re-emits a replay's charge
                        # (outputs are at-least-once), and the topic holds earlier runs'
                        if doc["id"] in tally.sent and doc["id"] not in tally.charged:
                            tally.charged.add(doc["id"])
                            tally.revenue_micros += int(parse_decimal(doc["cost"]) * MICROS)
                    else:
                        tally.rejects += 1
    finally:
        consumer.close()


def _read_up_to(consumer: Consumer, parts: list[TopicPartition], ends: list[int]) -> bool:
    """Whether the consumer has read each partition up to its end offset in ``ends``
    (``parts`` hold the offsets the reading began at)."""
    for tp, begun, end in zip(consumer.position(parts), parts, ends):
        if max(tp.offset, begun.offset) < end:  # (offset < 0 where nothing was read yet)
            return False
    return True


def _table(tally: Tally, elapsed: float, sent: int) -> Table:
    with tally.lock:
        lat = np.array(tally.latencies_ms[-20000:]) if tally.latencies_ms else None
        decided = len(tally.decided)
        results = dict(tally.results)
    t = Table(title="chargeflow demo — live")
    t.add_column("")
    t.add_column("", justify="right")
    t.add_row("elapsed", f"{elapsed:5.1f} s")
    t.add_row("sent / decided", f"{sent:,} / {decided:,}")
    t.add_row("decided per second", f"{decided / elapsed:,.0f}" if elapsed > 0 else "-")
    if lat is not None:
        t.add_row("latency p50 / p99", f"{np.percentile(lat, 50):.1f} / "
                  f"{np.percentile(lat, 99):.1f} ms")
    for result, count in sorted(results.items()):
        t.add_row(result, f"{count:,}")
    return t


def _summary(tally: Tally, store: BalanceStore, accounts: list[str], currency: str,
             started: float, duration_s: float) -> dict:
    mismatched, charged = 0, 0
    for a in accounts:
        acct = store.view(a)
        ledger = store.ledger(a)
        if acct is None or not ledger_reconciles(ledger, acct.balance):
            mismatched += 1
        charged += sum(-e["delta"] for e in ledger
                       if e["time_ms"] >= started * 1000 and e["reason"] not in ("open", "topup"))
    lat = np.array(tally.latencies_ms)
    # over the time the decisions took, first request sent to last decision received (the
    # send window alone would report the offered rate whenever a backlog drains after it)
    span_s = ((tally.last_decided_ns - tally.first_sent_ns) / 1e9
              if tally.first_sent_ns is not None and tally.last_decided_ns is not None else 0)
    return {
        "duration_s": duration_s, "sent": len(tally.sent), "decided": len(tally.decided),
        "decided_per_s": round(len(tally.decided) / span_s) if span_s > 0 else None,
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
        "results": dict(tally.results), "rejects": tally.rejects,
        "revenue": format_micros(tally.revenue_micros), "currency": currency,
        "ledger_accounts": len(accounts), "ledger_mismatches": mismatched,
        "revenue_matches_ledger": charged == tally.revenue_micros,
        # nothing decided proves nothing: no "yes" for a run that charged nobody
        "reconciles": (mismatched == 0 and charged == tally.revenue_micros
                       if tally.decided else None),
    }


def _print_summary(console: Console, s: dict) -> None:
    t = Table(title="chargeflow demo — summary")
    t.add_column("")
    t.add_column("", justify="right")
    t.add_row("requests sent / decided", f"{s['sent']:,} / {s['decided']:,}")
    rate = s["decided_per_s"]
    t.add_row("decided per second (first sent → last decided)",
              f"{rate:,}" if rate is not None else "—")
    t.add_row("latency p50 / p99 (produce → decision)", f"{s['p50_ms']} / {s['p99_ms']} ms"
              if s["p50_ms"] is not None else "— (nothing decided)")
    for result, count in sorted(s["results"].items()):
        t.add_row(result, f"{count:,}")
    t.add_row("revenue (charges)", f"{s['revenue']} {s['currency']}")
    if s["reconciles"] is None:
        t.add_row("ledger reconciles", "— (nothing was decided: see engine.log in the data dir)")
    else:
        t.add_row("ledger reconciles", ("yes" if s["reconciles"] else "NO") +
                  f" ({s['ledger_accounts']:,} accounts: Σ ledger = balance; charges = ledger)")
    console.print(t)
