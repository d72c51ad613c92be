"""The end-to-end benchmark's report: its figures from the phases (``report``), the JSON
result file and the two plots (throughput, latency and CPU per request against offered load;
latency over time through the crash and restart), and the progress line of a phase.

The phases themselves are run by ``bench/e2e.py``, which hands them here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.harness import UNTHROTTLED, Phase, run_facts, save_result, stamp

NAMES = {"floor": "store floor"}  # in the plots
#: the plots' colours: the systems, then the processes they run on (in the CPU panel's order)
COLORS = {"engine": "tab:blue", "echo": "tab:gray", "floor": "tab:olive", "baseline": "tab:red",
          "broker": "tab:orange", "redis": "tab:brown", "generator": "tab:purple"}


def report(phases: list[Phase], crash: dict | None, *, seconds: float, accounts: int,
           workers: int, processes: int = 1, warm: int = 0, out_dir: Path | None) -> dict:
    """The run's figures from its phases (and the crash phase's marks); with ``out_dir``,
    also its JSON (``save_result``, with machine and commit) and plots there."""

    def pick(system: str, rate: float, label: str = "") -> Phase | None:
        return next((p for p in phases if p.system == system and p.offered_rps == rate
                     and p.label == label), None)

    paced = sorted({p.offered_rps for p in phases if p.offered_rps and not p.label})
    reference = 10000.0 if 10000.0 in paced else (paced[-1] if paced else None)
    engine_max, echo_max = pick("engine", UNTHROTTLED), pick("echo", UNTHROTTLED)
    base_max, store_floor = pick("baseline", UNTHROTTLED), pick("floor", UNTHROTTLED)
    at_ref = pick("engine", reference) if reference else None
    floor_ref = pick("echo", reference) if reference else None
    engine_rps = engine_max.achieved_rps if engine_max else None
    baseline_rps = base_max.achieved_rps if base_max else None
    result = {
        "engine_rps": engine_rps,
        "baseline_rps": baseline_rps,
        "ratio": round(engine_rps / baseline_rps, 2) if engine_rps and baseline_rps else None,
        "echo_rps": echo_max.achieved_rps if echo_max else None,
        "store_floor_rps": store_floor.achieved_rps if store_floor else None,
        "of_floor": (round(engine_rps / store_floor.achieved_rps, 3)
                     if engine_rps and store_floor and store_floor.achieved_rps else None),
        "offered_rps": reference,
        "p50_ms": at_ref.p50_ms if at_ref else None,
        "p99_ms": at_ref.p99_ms if at_ref else None,
        "p999_ms": at_ref.p999_ms if at_ref else None,
        "floor_p50_ms": floor_ref.p50_ms if floor_ref else None,
        "floor_p99_ms": floor_ref.p99_ms if floor_ref else None,
        "offered_rates": paced,
        "complete": all(p.complete for p in phases),
        "phases": [p.summary() for p in phases],
        "crash": ({k: v for k, v in crash.items() if k not in ("phase", "engine")}
                  | {"phase": crash["phase"].summary()}) if crash else None,
        "seconds_per_phase": seconds, "accounts": accounts, "workers": workers,
        "processes": processes, "warm": warm,
        **run_facts(),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        when = stamp()
        result["plots"] = [str(plot_load(phases, out_dir / f"e2e-{when}-load.png"))]
        if crash:
            result["plots"].append(str(plot_crash(crash, out_dir / f"e2e-{when}-crash.png")))
        save_result(out_dir, "e2e", result, when)
    return result


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_load(phases: list[Phase], path: Path) -> Path:
    """Throughput and latency percentiles against offered load; latency over time at the
    highest offered rate."""
    plt = _pyplot()
    fig, ((ax0, ax1), (ax2, ax3)) = plt.subplots(2, 2, figsize=(15, 9.5))
    for system in ("engine", "echo"):
        ps = sorted((p for p in phases if p.system == system and p.offered_rps
                     and not p.label), key=lambda p: p.offered_rps)
        if ps:
            ax0.plot([p.offered_rps for p in ps], [p.achieved_rps for p in ps], "o-",
                     color=COLORS[system], label=f"{system}, paced")
        for q, style in (("p50_ms", "o-"), ("p99_ms", "s--"), ("p999_ms", "^:")):
            pts = [(p.offered_rps, getattr(p, q)) for p in ps if getattr(p, q)]
            if pts:
                ax1.plot(*zip(*pts), style, color=COLORS[system], alpha=0.9,
                         label=f"{system} {q[:-3].replace('p999', 'p99.9')}")
    for p in phases:
        if not p.offered_rps:
            ax0.axhline(p.achieved_rps, color=COLORS.get(p.system, "k"), ls="--", lw=1,
                        label=f"{NAMES.get(p.system, p.system)}, burst of {p.sent:,}: "
                              f"{p.achieved_rps:,.0f}/s")
    top = max((p.offered_rps for p in phases if p.offered_rps), default=0)
    if top:
        ax0.plot([0, top], [0, top], color="k", lw=0.5, alpha=0.4)
    ax0.set(xlabel="offered requests/s", ylabel="answered requests/s", title="throughput")
    ax1.set(xlabel="offered requests/s", ylabel="ms, produce → reply consumed",
            title="latency against offered load", yscale="log")
    ax1.axhline(50, color="green", lw=0.8, alpha=0.6)
    for ax in (ax0, ax1):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    rated = [p for p in phases if p.system == "engine" and p.offered_rps and not p.label]
    if rated:
        last = max(rated, key=lambda p: p.offered_rps)
        if last.series:
            ts, ms = zip(*last.series)
            ax2.plot(np.array(ts) - ts[0], ms, ".", markersize=2)
        ax2.set(xlabel="seconds", ylabel="latency (ms)", yscale="log",
                title=f"engine latency over time at {last.offered_rps:,.0f}/s offered")
        ax2.grid(alpha=0.3)
    plot_cpu(ax3, phases)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_cpu(ax, phases: list[Phase]) -> None:
    """CPU time per answered request of each process, phase by phase, stacked, against
    what the machine's cores allow at the rate the phase reached: where the bar meets the
    mark, every core was busy."""
    shown = [p for p in phases if p.cpu_us]
    cores = os.cpu_count() or 1
    names = [n for n in COLORS if any(n in p.cpu_us for p in shown)]
    labels = [f"{NAMES.get(p.system, p.system)} "
              f"{f'{p.offered_rps:,.0f}/s' if p.offered_rps else 'burst'}" for p in shown]
    left = np.zeros(len(shown))
    for name in names:
        us = np.array([p.cpu_us.get(name, 0.0) for p in shown])
        ax.barh(labels, us, left=left, color=COLORS[name], label=name)
        left += us
    budget = [cores * 1e6 / p.achieved_rps if p.achieved_rps else np.nan for p in shown]
    ax.plot(budget, labels, "k|", markersize=14, mew=2,
            label=f"{cores} cores' time per request at the rate reached")
    ax.invert_yaxis()
    ax.set(xlabel="CPU µs per answered request", title="where the machine's CPU goes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, axis="x")


def plot_crash(crash: dict, path: Path) -> Path:
    """Latency of every request over time while the engine is killed and restarted."""
    plt = _pyplot()
    phase: Phase = crash["phase"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    if phase.series:
        ts, ms = zip(*phase.series)
        ax.plot(ts, ms, ".", markersize=2, label="latency of each request (by reply time)")
    for key, color, text in (("killed_s", "red", "SIGKILL"), ("restarted_s", "orange",
                                                                "restart")):
        if crash.get(key) is not None:
            ax.axvline(crash[key], color=color, lw=1, label=f"{text} at {crash[key]:.1f} s")
    ax.set(xlabel="seconds since the phase began", ylabel="ms, produce → decision",
           yscale="log", title=f"engine at {phase.offered_rps:,.0f}/s offered, killed and "
           f"restarted: {phase.received:,} of {phase.sent:,} answered, "
           f"back {crash.get('recovered_after_s')} s after the kill")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def line(p: dict) -> str:
    """A phase's summary on one line (two with its CPU per request), for the progress."""
    offered = f"{p['offered_rps']:>8,.0f}/s" if p["offered_rps"] else "   burst "
    cpu = p.get("cpu_us") or {}
    return (f"{p['system']:>8} {p['label']:>5} offered {offered}: sent {p['sent']:>7,} "
            f"received {p['received']:>7,} achieved {p['achieved_rps']:>9,.0f}/s  p50 "
            f"{p['p50_ms']} p99 {p['p99_ms']} p99.9 {p['p999_ms']} ms" + (
                "\n" + " " * 15 + "CPU per request: " + ", ".join(
                    f"{name} {us:,.0f} µs" for name, us in cpu.items()) if cpu else ""))
