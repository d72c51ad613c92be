"""Soak: the engine at a fixed fraction of its capacity for minutes, watching what grows.

    chargeflow bench soak [--minutes M] [--fraction 0.5 | --rate R] [--json] [--out DIR]

On private embedded services (sample catalog, ``--accounts`` accounts), the engine runs with
short retentions (idempotency records ``--idempotency-retention-s``, ledger entries
``--ledger-retention-s``) so that within the run both reach their steady state. Capacity is
first measured with a burst (or given by ``--rate``); then gateway traffic is offered at
``fraction × capacity`` in windows of ``--window`` seconds. Per window: achieved rate, p50 /
p99 latency, the engine's RSS, Redis memory, idempotency records (keys with a TTL) and the
mean ledger length of the accounts. The summary says how much RSS grew and p99 drifted from
the first windows to the last, Redis memory per account, and whether idempotency records and
ledgers stayed bounded.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from statistics import median

import orjson
import psutil

from balances.accounts import AccountSpec
from balances.codec import Keys
from balances.store import BalanceStore
from bench.harness import UNTHROTTLED, Proc, commit, drive, gateway_requests, machine, wait_ready
from catalog_cache.store import load_catalog_text
from flows.broker import EmbeddedBroker, ensure_topics
from flows.cli_common import sample_catalog_path
from flows.dataflow import Topics
from flows.services import Services

SAMPLE_LEDGERS = 200  # accounts whose ledger length is read each window


def run(minutes: float, *, fraction: float = 0.5, rate: float | None = None,
        window_s: float = 30.0, n_accounts: int = 1000, idem_s: int = 60,
        ledger_s: int = 60, burst: int = 30_000, out_dir: Path | None = None,
        progress=print) -> dict:
    tmp = tempfile.TemporaryDirectory(prefix="cf-soak-")
    data = Path(tmp.name)
    services = Services.from_options(None, str(data))
    engine: Proc | None = None
    windows: list[dict] = []
    try:
        client = services.redis()
        load_catalog_text(client, sample_catalog_path().read_text(), prefix=services.prefix)
        accounts = [f"s{i:05d}" for i in range(n_accounts)]
        BalanceStore(client, prefix=services.prefix).upsert_accounts(
            [AccountSpec(a, "PREPAID_S", 10**14) for a in accounts])
        memory_before = int(client.info("memory")["used_memory"])
        brokers = EmbeddedBroker(data).start()
        t = Topics()
        ensure_topics(brokers, {t.requests: 1, t.decisions: 1, t.charges: 1, t.rejects: 1})
        engine = Proc(["-m", "flows.cli", "run", "--data-dir", str(data), "--kafka", brokers,
                       "--idempotency-retention-s", str(idem_s), "--ledger-retention-s",
                       str(ledger_s)], data / "engine.log").start()
        traffic = gateway_requests(accounts)
        wait_ready(brokers, t.requests, t.decisions, traffic, 1)
        capacity = None
        if rate is None:
            progress(f"capacity: {burst:,} requests at once")
            capacity = drive(brokers, t.requests, t.decisions, traffic, "engine",
                             UNTHROTTLED, 0, count=burst).achieved_rps
            rate = round(fraction * capacity)
            progress(f"  {capacity:,.0f}/s: soaking at {rate:,}/s")
        keys = Keys(services.prefix)
        sample = random.Random(1).sample(accounts, min(SAMPLE_LEDGERS, n_accounts))
        proc = psutil.Process(engine.pid)
        begin = time.monotonic()
        while time.monotonic() - begin < minutes * 60:
            phase = drive(brokers, t.requests, t.decisions, traffic, "engine", rate, window_s,
                          drain_s=30, keep=1)
            info = client.info()
            db = info.get("db0", {})
            ledgers = [client.xlen(keys.ledger(a)) for a in sample]
            w = {"t_s": round(time.monotonic() - begin, 1), "sent": phase.sent,
                 "received": phase.received, "achieved_rps": phase.achieved_rps,
                 "p50_ms": phase.p50_ms, "p99_ms": phase.p99_ms,
                 "engine_rss_mb": round(proc.memory_info().rss / 2**20, 1),
                 "redis_used_mb": round(int(info["used_memory"]) / 2**20, 2),
                 "keys": int(db.get("keys", 0)), "idem_records": int(db.get("expires", 0)),
                 "ledger_mean": round(sum(ledgers) / len(ledgers), 1),
                 "ledger_max": max(ledgers)}
            windows.append(w)
            progress(f"  {w['t_s']:>6.0f} s: {w['achieved_rps']:>7,.0f}/s p50 {w['p50_ms']} "
                     f"p99 {w['p99_ms']} ms, RSS {w['engine_rss_mb']} MB, Redis "
                     f"{w['redis_used_mb']} MB, idem {w['idem_records']:,}, ledger mean "
                     f"{w['ledger_mean']} max {w['ledger_max']}")
    finally:
        if engine is not None:
            engine.stop()
        services.embedded.stop()
        EmbeddedBroker(data).stop()
        tmp.cleanup()
    result = summarise(windows, rate=rate, capacity=capacity, n_accounts=n_accounts,
                       idem_s=idem_s, ledger_s=ledger_s, memory_before=memory_before)
    result |= {"minutes": minutes, "window_s": window_s, "fraction": fraction,
               "commit": commit(), "machine": machine(),
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        result["plot"] = str(plot(result, out_dir / f"soak-{stamp}.png"))
        (out_dir / f"soak-{stamp}.json").write_bytes(
            orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


def summarise(windows: list[dict], *, rate: float, capacity: float | None, n_accounts: int,
              idem_s: int, ledger_s: int, memory_before: int) -> dict:
    """Growth and drift from the first windows to the last, and the bounds checked.

    The first window is warm-up (caches filling, the first idempotency records); growth and
    drift compare the median of windows 2–3 with the median of the last two.
    """
    out: dict = {"offered_rps": rate, "capacity_rps": capacity, "accounts": n_accounts,
                 "idempotency_retention_s": idem_s, "ledger_retention_s": ledger_s,
                 "windows": windows}
    if len(windows) < 3:
        return out | {"note": "fewer than 3 windows: no growth or drift figures"}
    early, late = windows[1:3], windows[-2:]

    def change(key: str) -> float | None:
        a, b = median(w[key] for w in early), median(w[key] for w in late)
        return round(100 * (b - a) / a, 1) if a else None

    last = windows[-1]
    # Bounds: a request makes at most one idempotency record, kept idem_s; the ledger keeps
    # entries for ledger_s plus up to one stream node (100 entries) not yet trimmed.
    idem_bound = rate * idem_s * 1.25
    per_account = rate / n_accounts * ledger_s + 100
    return out | {
        "engine_rss_mb_first": early[0]["engine_rss_mb"], "engine_rss_mb_last":
        last["engine_rss_mb"], "rss_growth_pct": change("engine_rss_mb"),
        "p99_ms_first": median(w["p99_ms"] for w in early if w["p99_ms"]),
        "p99_ms_last": median(w["p99_ms"] for w in late if w["p99_ms"]),
        "p99_drift_pct": change("p99_ms"),
        "redis_bytes_per_account_start": round(memory_before / n_accounts),
        "redis_bytes_per_account_end": round(last["redis_used_mb"] * 2**20 / n_accounts),
        "idem_records_last": last["idem_records"], "idem_records_bound": round(idem_bound),
        "idem_bounded": last["idem_records"] <= idem_bound,
        "ledger_mean_last": last["ledger_mean"], "ledger_bound_per_account":
        round(per_account), "ledger_bounded": last["ledger_max"] <= per_account * 1.25,
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
    fig.tight_layout()
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
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = run(args.minutes, fraction=args.fraction, rate=args.rate, window_s=args.window,
                 n_accounts=args.accounts, idem_s=args.idempotency_retention_s,
                 ledger_s=args.ledger_retention_s, burst=args.burst,
                 out_dir=Path(args.out) if args.out else None,
                 progress=(lambda *_: None) if args.json else print)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        keys = ("offered_rps", "rss_growth_pct", "p99_drift_pct", "redis_bytes_per_account_end",
                "idem_records_last", "idem_bounded", "ledger_mean_last", "ledger_bounded",
                "every_request_answered", "plot")
        for k in keys:
            print(f"{k}: {result.get(k)}")
    return result


if __name__ == "__main__":
    main()
