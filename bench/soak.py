"""Soak: the engine at a fixed fraction of its capacity for minutes, watching what grows.

    chargeflow bench soak [--minutes M] [--fraction 0.5 | --rate R] [--json] [--out DIR]

On a private embedded Redis (sample catalog, ``--accounts`` accounts), the engine process
(``chargeflow run``) is fed through a pipe by default (``--transport pipe``: its JSONL mode,
which reads requests as they arrive and writes each batch's decisions at once), because the
embedded broker slows down as record batches accumulate and a soak through it measures the
broker (``--transport kafka`` does that); ``--transport serve`` soaks the one-box OCS,
``chargeflow serve`` with its engine in the doors' process, through its Diameter door. The
engine runs with
short retentions (idempotency records ``--idempotency-retention-s``, ledger entries
``--ledger-retention-s``) so that within the run both reach their steady state. Capacity is
first measured with a burst (or given by ``--rate``); then gateway traffic is offered at
``fraction × capacity`` in windows of ``--window`` seconds. Per window: achieved rate, p50 /
p99 latency, the engine's RSS, Redis memory, idempotency records (in the accounts' hashes,
and keys of unknown accounts), open sessions and the
mean ledger length of the accounts. The summary says how much RSS grew and p99 drifted from
the first windows to the last, Redis memory per account, and whether idempotency records and
ledgers stayed bounded.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

import orjson
import psutil

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from balances.accounts import AccountSpec
from balances.codec import KEEP_RECORDS, Keys
from bench.harness import (
    Phase,
    Proc,
    drive,
    gateway_requests,
    measure,
    run_facts,
    save_result,
    sign,
    stamp,
    wait_ready,
)
from flows.broker import EmbeddedBroker, ensure_topics
from flows.dataflow import Topics
from flows.provision import provision, synthetic_accounts
from flows.services import Services

WINDOW_FIGURES = ("sent", "received", "achieved_rps", "p50_ms", "p99_ms")
SAMPLE_LEDGERS = 200  # accounts whose ledger length is read each window


class PipeEngine:
    """``chargeflow run --input - --output DIR`` fed through a pipe: requests are written to
    its stdin as they are due, decisions read back from ``DIR/decisions.jsonl`` as it grows.
    The real engine process (its batching, Redis writes, memory) without a broker."""

    def __init__(self, data: Path, extra: list[str]):
        self.out = data / "out"
        self.p = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", "--data-dir", str(data), "--input", "-",
             "--output", str(self.out), *extra], stdin=subprocess.PIPE,
            stdout=open(data / "engine.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        self.pid = self.p.pid
        self.sent: dict[str, int] = {}
        self.window_of: dict[str, int] = {}  # request id -> the window that sent it
        # window -> its replies: (reply monotonic s, latency ms)
        self.by_window: dict[int, list[tuple[float, float]]] = {}
        self.n_window = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        path = self.out / "decisions.jsonl"
        while not path.exists() and not self.done.is_set():
            time.sleep(0.01)
        tail = b""
        with open(path, "rb") as f:
            while not self.done.is_set():
                chunk = f.read(1 << 20)
                if not chunk:
                    time.sleep(0.0005)
                    continue
                now = time.monotonic_ns()
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    rid = orjson.loads(line)["id"]
                    with self.lock:
                        start = self.sent.pop(rid, None)
                        if start is not None:
                            self.by_window.setdefault(self.window_of.pop(rid), []).append(
                                (now / 1e9, (now - start) / 1e6))

    def window(self, traffic, rate: float, seconds: float, count: int = 0) -> Phase:
        """Offer ``rate`` for ``seconds`` (``rate`` 0: ``count`` at once); wait for the
        replies (up to 30 s) and return the window's figures."""
        self.n_window += 1
        me = self.n_window
        phase = Phase("engine", rate, seconds)
        begin = time.monotonic()
        while True:
            elapsed = time.monotonic() - begin
            due = (int(elapsed * rate) if rate else count) - phase.sent
            if (rate and elapsed >= seconds) or (not rate and phase.sent >= count):
                break
            lines = []
            for _ in range(max(0, due)):
                rid, _, value = traffic()
                with self.lock:
                    self.sent[rid] = time.monotonic_ns()
                    self.window_of[rid] = me
                lines.append(value)
            if lines:
                self.p.stdin.write(b"\n".join(lines) + b"\n")
                self.p.stdin.flush()
                phase.sent += len(lines)
            time.sleep(0.001)
        deadline = time.monotonic() + 30
        while len(self.by_window.get(me, ())) < phase.sent and time.monotonic() < deadline:
            time.sleep(0.02)
        with self.lock:
            got = list(self.by_window.pop(me, []))
        measure(phase, got, keep=1)
        return phase

    def stop(self) -> None:
        try:
            self.p.stdin.close()  # end of input: the engine decides what it has and exits
            self.p.wait(60)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()
        self.done.set()
        self.reader.join(5)


class KafkaEngine:
    """``chargeflow run`` on the embedded broker, measured with ``bench.harness.drive``.
    On tansu's in-memory storage the broker slows down as record batches accumulate
    (bench/README), so a long soak this way measures mostly the broker."""

    def __init__(self, data: Path, extra: list[str]):
        self.data = data
        self.brokers = EmbeddedBroker(data).start()
        self.t = Topics()
        ensure_topics(self.brokers, {self.t.requests: 1, self.t.decisions: 1,
                                     self.t.charges: 1, self.t.rejects: 1})
        self.proc = Proc(["-m", "flows.cli", "run", "--data-dir", str(data), "--kafka",
                          self.brokers, *extra], data / "engine.log").start()
        self.pid = self.proc.pid

    def ready(self, traffic) -> None:
        wait_ready(self.brokers, self.t.requests, self.t.decisions, traffic, 1)

    def window(self, traffic, rate: float, seconds: float, count: int = 0) -> Phase:
        return drive(self.brokers, self.t.requests, self.t.decisions, traffic, "engine",
                     rate, seconds, count=count, drain_s=30, keep=1)

    def stop(self) -> None:
        self.proc.stop()
        EmbeddedBroker(self.data).stop()


class ServeEngine:
    """``chargeflow serve`` (its engine in the doors' process, no broker: the one-box OCS)
    with only its Diameter door open, loaded with CCR-EVENTs (one SMS by direct debit, to
    accounts by MSISDN) over 4 TCP connections (``bench.doors.GyLoad``), open loop on an
    event loop of a thread of this process. RSS is the serve process's: doors and engine."""

    def __init__(self, data: Path, extra: list[str], n_accounts: int):
        import asyncio

        from bench.doors import GyLoad, announced

        self.log = data / "serve.log"
        self.p = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--data-dir", str(data),
             "--diameter", "127.0.0.1:0", "--no-nchf", "--no-api", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(self.log, "ab"), text=True)  # noqa: SIM115
        self.pid = self.p.pid
        port = announced(self.p, 1, self.log, "chargeflow serve")["diameter"]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.load = GyLoad(port, n_accounts)
        self._call(self.load.open())

    def _call(self, coro, timeout: float | None = None):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def window(self, traffic, rate: float, seconds: float, count: int = 0) -> Phase:
        from bench.doors import offer

        return self._call(offer(self.load, "serve", rate, seconds, count))

    def stop(self) -> None:
        try:
            self._call(self.load.close(), 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.p.terminate()  # SIGTERM: the doors drain, the engine stops
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()


def run(minutes: float, *, fraction: float = 0.5, rate: float | None = None,
        window_s: float = 30.0, n_accounts: int = 1000, idem_s: int = 60,
        ledger_s: int = 60, burst: int = 30_000, transport: str = "pipe",
        redis_config: dict[str, str] | None = None, out_dir: Path | None = None,
        progress=print) -> dict:
    facts = run_facts()  # the commit that runs, read before a long run lets anyone move it
    tmp = tempfile.TemporaryDirectory(prefix="cf-soak-")
    data = Path(tmp.name)
    services = Services.from_options(None, str(data))
    engine: PipeEngine | KafkaEngine | ServeEngine | None = None
    windows: list[dict] = []
    try:
        client = services.redis()
        for key, value in (redis_config or {}).items():  # e.g. AOF rewrite thresholds
            client.config_set(key, value)
        if transport == "serve":  # reached by MSISDN; rating groups for the Gy door
            from bench.doors import catalog_text, imsi, msisdn

            specs = [AccountSpec(f"s{i:05d}", "PREPAID_S", 10**14, msisdn=msisdn(i),
                                 imsi=imsi(i)) for i in range(n_accounts)]
            provision(client, services.prefix, specs, catalog_text=catalog_text(),
                      source="sample catalog with rating groups")
        else:
            specs = synthetic_accounts(n_accounts, "s%05d", 10**14)
            provision(client, services.prefix, specs)
        accounts = [a.id for a in specs]
        memory_before = int(client.info("memory")["used_memory"])
        extra = ["--idempotency-retention-s", str(idem_s), "--ledger-retention-s",
                 str(ledger_s)]
        traffic = gateway_requests(accounts)
        if transport == "kafka":
            engine = KafkaEngine(data, extra)
            engine.ready(traffic)
        elif transport == "serve":
            engine = ServeEngine(data, extra, n_accounts)
            engine.window(traffic, 0, 0, count=100)  # started and deciding
        else:
            engine = PipeEngine(data, extra)
            engine.window(traffic, 0, 0, count=1)  # started and deciding
        capacity = None
        if rate is None:
            progress(f"capacity: {burst:,} requests at once")
            capacity = engine.window(traffic, 0, 0, count=burst).achieved_rps
            rate = round(fraction * capacity)
            progress(f"  {capacity:,.0f}/s: soaking at {rate:,}/s")
        keys = Keys(services.prefix)
        sample = random.Random(1).sample(accounts, min(SAMPLE_LEDGERS, n_accounts))
        proc = psutil.Process(engine.pid)
        begin = time.monotonic()
        cpu, clock = sum(proc.cpu_times()[:2]), time.monotonic()
        while time.monotonic() - begin < minutes * 60:
            phase = engine.window(traffic, rate, window_s)
            w = {"t_s": 0.0} | {k: getattr(phase, k) for k in WINDOW_FIGURES}
            cpu_now, clock_now = sum(proc.cpu_times()[:2]), time.monotonic()
            w["engine_cpu_pct"] = round(100 * (cpu_now - cpu) / (clock_now - clock), 1)
            cpu, clock = cpu_now, clock_now
            info = client.info()
            db = info.get("db0", {})
            ledgers = [client.xlen(keys.ledger(a)) for a in sample]
            records, sessions = _records_and_sessions(client, keys, accounts)
            w |= {"t_s": round(time.monotonic() - begin, 1),
                  "engine_rss_mb": round(proc.memory_info().rss / 2**20, 1),
                  "redis_used_mb": round(int(info["used_memory"]) / 2**20, 2),
                  "keys": int(db.get("keys", 0)),
                  # in the accounts' hashes, and keys of their own (unknown accounts)
                  "idem_records": records + int(db.get("expires", 0)),
                  "open_sessions": sessions,
                  "ledger_mean": round(sum(ledgers) / len(ledgers), 1),
                  "ledger_max": max(ledgers),
                  # forks are AOF rewrites here (the embedded server takes no RDB snapshots)
                  "redis_forks": int(info.get("total_forks", 0)),
                  "aof_mb": round(int(info.get("aof_current_size", 0)) / 2**20, 1)}
            windows.append(w)
            progress(f"  {w['t_s']:>6.0f} s: {w['achieved_rps']:>7,.0f}/s p50 {w['p50_ms']} "
                     f"p99 {w['p99_ms']} ms, engine CPU {w['engine_cpu_pct']} %, RSS "
                     f"{w['engine_rss_mb']} MB, Redis "
                     f"{w['redis_used_mb']} MB (AOF {w['aof_mb']} MB, {w['redis_forks']} "
                     f"rewrites), idem {w['idem_records']:,}, sessions "
                     f"{w['open_sessions']:,}, ledger mean {w['ledger_mean']} "
                     f"max {w['ledger_max']}")
    finally:
        if engine is not None:
            engine.stop()
        services.embedded.stop()
        tmp.cleanup()
    result = summarise(windows, rate=rate, capacity=capacity, n_accounts=n_accounts,
                       idem_s=idem_s, ledger_s=ledger_s, memory_before=memory_before)
    result |= {"minutes": minutes, "window_s": window_s, "fraction": fraction,
               "transport": transport, "redis_config": redis_config or {}, **facts}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        when = stamp()
        result["plot"] = str(plot(result, out_dir / f"soak-{when}.png"))
        save_result(out_dir, "soak", result, when)
    return result


def _records_and_sessions(client, keys: Keys, accounts: list[str]) -> tuple[int, int]:
    """The idempotency records and open sessions in the accounts' hashes (their fields
    ``i:<id>`` and ``s:<session>``), counted over every account in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for a in accounts:
        pipe.hkeys(keys.account(a))
    records = sessions = 0
    for fields in pipe.execute():
        for f in fields:
            if f.startswith(b"i:"):
                records += 1
            elif f.startswith(b"s:"):
                sessions += 1
    return records, sessions


def summarise(windows: list[dict], *, rate: float, capacity: float | None, n_accounts: int,
              idem_s: int, ledger_s: int, memory_before: int) -> dict:
    """Growth and drift from the first windows to the last, and the retention checked.

    The first window is warm-up (caches filling). RSS growth and p99 drift compare the median
    over the first third of the other windows with the median over the last third. A kept
    record count is bounded when, once its retention has passed, it stops growing: its mean
    over the second half of those windows is within 10 % of the first half (too few such
    windows: within 1.5 × what the rate and retention allow); for ledgers, no sampled
    account ever holds more than its retention allows.
    """
    out: dict = {"offered_rps": rate, "capacity_rps": capacity, "accounts": n_accounts,
                 "idempotency_retention_s": idem_s, "ledger_retention_s": ledger_s,
                 "windows": windows}
    if len(windows) < 4:
        return out | {"note": "fewer than 4 windows: no growth or drift figures"}
    rest = windows[1:]
    third = max(1, len(rest) // 3)
    early, late = rest[:third], rest[-third:]

    def change(key: str) -> float | None:
        a = median(w[key] for w in early if w[key] is not None)
        b = median(w[key] for w in late if w[key] is not None)
        return round(100 * (b - a) / a, 1) if a else None

    def plateau(key: str, retention_s: int, limit: float) -> tuple[float | None, bool]:
        steady = [w[key] for w in windows if w["t_s"] >= retention_s + windows[0]["t_s"]]
        if len(steady) < 4:
            return None, windows[-1][key] <= 1.5 * limit
        half = len(steady) // 2
        a, b = sum(steady[:half]) / half, sum(steady[half:]) / (len(steady) - half)
        growth = round(100 * (b - a) / a, 1) if a else 0.0
        return growth, growth < 10

    last = windows[-1]
    # A request makes at most one idempotency record, kept idem_s after which the account's
    # next write drops it, each account keeping its last KEEP_RECORDS; an account's ledger
    # keeps ledger_s of entries plus up to one stream node (100 entries) not yet trimmed.
    idem_limit = rate * idem_s + n_accounts * KEEP_RECORDS
    ledger_limit = rate / n_accounts * ledger_s + 100
    idem_growth, idem_ok = plateau("idem_records", idem_s, idem_limit)
    ledger_growth, _ = plateau("ledger_mean", ledger_s, ledger_limit)
    # The ledger's length follows the share of requests that take money, which drifts as the
    # generator's clock runs through allowance periods; what must hold is that no account
    # keeps more than its retention allows (with 25 % for accounts busier than the mean).
    ledger_ok = max(w["ledger_max"] for w in windows) <= 1.25 * ledger_limit
    return out | {
        "engine_rss_mb_first": median(w["engine_rss_mb"] for w in early),
        "engine_rss_mb_last": median(w["engine_rss_mb"] for w in late),
        "rss_growth_pct": change("engine_rss_mb"),
        "p99_ms_first": median(w["p99_ms"] for w in early if w["p99_ms"]),
        "p99_ms_last": median(w["p99_ms"] for w in late if w["p99_ms"]),
        "p99_drift_pct": change("p99_ms"),
        "redis_bytes_per_account_start": round(memory_before / n_accounts),
        "redis_bytes_per_account_end": round(last["redis_used_mb"] * 2**20 / n_accounts),
        "idem_records_last": last["idem_records"], "idem_records_bound": round(idem_limit),
        "open_sessions_last": last["open_sessions"],
        "idem_growth_pct": idem_growth, "idem_bounded": idem_ok,
        "ledger_mean_last": last["ledger_mean"],
        "ledger_bound_per_account": round(ledger_limit), "ledger_growth_pct": ledger_growth,
        "ledger_bounded": ledger_ok,
        "every_request_answered": all(w["received"] == w["sent"] for w in windows),
    }


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = result["windows"]
    t = [w["t_s"] / 60 for w in ws]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    axes[0].plot(t, [w["p50_ms"] for w in ws], "o-", label="p50")
    axes[0].plot(t, [w["p99_ms"] for w in ws], "s--", label="p99")
    axes[0].set(ylabel="latency (ms)", title=f"latency at {result['offered_rps']:,.0f}/s")
    axes[1].plot(t, [w["engine_rss_mb"] for w in ws], "o-", label="engine RSS (MB)")
    axes[1].plot(t, [w["redis_used_mb"] for w in ws], "s--", label="Redis used (MB)")
    axes[1].set(title="memory")
    axes[2].plot(t, [w["idem_records"] for w in ws], "o-", label="idempotency records")
    ax2 = axes[2].twinx()
    ax2.plot(t, [w["ledger_mean"] for w in ws], "s--", color="tab:orange",
             label="ledger entries per account (mean)")
    axes[2].set(title="retained records")
    ax2.legend(loc="lower right", fontsize=8)
    for ax in axes:
        ax.set_xlabel("minutes")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    sign(fig, result)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="chargeflow bench soak",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--fraction", type=float, default=0.5,
                    help="share of the capacity measured by a burst to offer")
    ap.add_argument("--rate", type=float, default=None, help="offer this rate instead")
    ap.add_argument("--window", type=float, default=30.0, help="seconds per window")
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--idempotency-retention-s", type=int, default=60)
    ap.add_argument("--ledger-retention-s", type=int, default=60)
    ap.add_argument("--burst", type=int, default=30_000)
    ap.add_argument("--transport", choices=("pipe", "kafka", "serve"), default="pipe",
                    help="pipe: requests through the engine's stdin (JSONL mode), no broker; "
                    "kafka: through the embedded broker; serve: Diameter CCR-EVENTs through "
                    "chargeflow serve's Gy door, its engine in the same process")
    ap.add_argument("--redis-config", action="append", default=[], metavar="KEY=VALUE",
                    help="CONFIG SET on the embedded Redis before the run (repeatable), e.g. "
                    "auto-aof-rewrite-percentage=1000")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = run(args.minutes, fraction=args.fraction, rate=args.rate, window_s=args.window,
                 n_accounts=args.accounts, idem_s=args.idempotency_retention_s,
                 ledger_s=args.ledger_retention_s, burst=args.burst,
                 transport=args.transport,
                 redis_config=dict(kv.split("=", 1) for kv in args.redis_config),
                 out_dir=Path(args.out) if args.out else None,
                 progress=(lambda *_: None) if args.json else print)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        keys = ("offered_rps", "rss_growth_pct", "p99_drift_pct", "redis_bytes_per_account_end",
                "idem_records_last", "idem_growth_pct", "idem_bounded", "ledger_mean_last",
                "ledger_growth_pct", "ledger_bounded",
                "every_request_answered", "plot")
        for k in keys:
            print(f"{k}: {result.get(k)}")
    return result


if __name__ == "__main__":
    main()
