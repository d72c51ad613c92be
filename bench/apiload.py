"""The account API under load beside a charging engine (issue 17, "Performance"): balance
reads/s and top-ups/s with p50 / p99, measured with locust (``bench/locust_api.py``) against
``chargeflow serve`` while the engine charges at ``--engine-rate`` requests/s, and the
engine's p99 with and without the API load, in one run. Figures are reported, never asserted.

    python -m bench.apiload [--engine-rate 2000] [--read-rate 2000] [--topup-rate 100]
                            [--seconds 20] [--out DIR] [--json]
    chargeflow bench api ...                      # the same

One embedded Redis in a private data dir, the sample catalog with rating groups, ``--accounts``
subscribers (an MSISDN each); ``chargeflow serve`` on it (its engine in the doors' process,
the Diameter door and the API on free ports, the Nchf door closed); one ``selfcare`` key per
read user (its own account) and one ``agent`` key per top-up user, made by ``api.keys``
as ``chargeflow apikey create`` makes them. Engine load: CCR-EVENTs (one SMS, rating group
300) through the Gy door, open loop (``bench.doors.GyLoad``, latency from when a request was
due). Three phases of ``--seconds`` each:

* ``engine``: the Gy load alone;
* ``api``: locust alone (reads and top-ups);
* ``engine+api``: both at once (locust starts ``--warm`` seconds before the Gy load and its
  statistics are reset when its users are all running).

Everything — serve, Redis, locust, the Gy load generator — runs on the same machine, so the
load generators' cost is in every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from api.keys import KeyStore
from balances.accounts import AccountSpec
from bench.doors import (
    DRAIN_S,
    GyLoad,
    _line,
    _sms_requests,
    announced,
    catalog_text,
    imsi,
    msisdn,
    offer,
)
from bench.harness import Phase, drive, run_facts, save_result, wait_ready
from flows import provision as provisioning
from flows.broker import EmbeddedBroker, ensure_topics
from flows.dataflow import Topics
from flows.services import Services

REPO = Path(__file__).resolve().parent.parent


def _start_serve(data: Path, log: Path, api_server: str, brokers: str | None
                 ) -> tuple[subprocess.Popen, dict[str, int]]:
    """``chargeflow serve`` with the API on a free port, and either its engine over
    ``brokers`` (the Diameter and Nchf doors closed) or, without, its engine in process
    behind the Diameter door (on a free port)."""
    doors = ["--no-diameter", "--kafka", brokers] if brokers else \
        ["--diameter", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--data-dir", str(data), *doors,
         "--no-nchf", "--api", "127.0.0.1:0", "--api-server", api_server],
        stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True)
    return proc, announced(proc, 1 if brokers else 2, log, "chargeflow serve")


def _locust_stats(prefix: Path) -> dict[str, dict]:
    """Per request name of locust's ``_stats.csv``: count, failures, rate, p50, p99 (ms)."""
    out = {}
    with open(f"{prefix}_stats.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] in ("read", "topup"):
                n = int(row["Request Count"])
                out[row["Name"]] = {
                    "requests": n, "failures": int(row["Failure Count"]),
                    "rps": round(float(row["Requests/s"]), 1),
                    "p50_ms": float(row["50%"]) if n else None,
                    "p99_ms": float(row["99%"]) if n else None,
                    "max_ms": round(float(row["Max Response Time"]), 1) if n else None}
    return out


async def _locust(port: int, keys: Path, read_rate: float, topup_rate: float,
                  seconds: float, users: int, prefix: Path, log: Path) -> dict[str, dict]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "locust", "-f", str(REPO / "bench" / "locust_api.py"),
        "--headless", "--host", f"http://127.0.0.1:{port}", "-u", str(users),
        "-r", str(users), "-t", f"{seconds:g}s", "--reset-stats", "--only-summary",
        "--stop-timeout", "5", "--csv", str(prefix), "--keys", str(keys),
        "--read-rate", f"{read_rate:g}", "--topup-rate", f"{topup_rate:g}",
        "--loglevel", "WARNING", stdout=open(log, "ab"), stderr=subprocess.STDOUT,
        cwd=str(REPO))
    await proc.wait()
    if proc.returncode not in (0, 1):  # 1: some requests failed (counted, reported)
        raise SystemExit(f"locust exited {proc.returncode}; see {log}:\n"
                         + log.read_text()[-2000:])
    return _locust_stats(prefix)


def run(engine_rate: float, read_rate: float, topup_rate: float, seconds: float,
        warm: float, n_accounts: int, readers: int, payers: int,
        out_dir: Path | None, only: frozenset[str] = frozenset({"api", "both"}),
        api_server: str = "hypercorn", engine_via: str = "kafka") -> dict:
    if readers > n_accounts:
        raise SystemExit(f"--readers {readers} needs as many accounts (--accounts "
                         f"{n_accounts})")
    tmp = tempfile.TemporaryDirectory(prefix="cf-bench-api-")
    data = Path(tmp.name)
    services = Services(None, data)
    phases: list[Phase] = []
    api: dict[str, dict] = {}
    answers: dict[str, int] = {}
    serve = None
    brokers = None
    try:
        client = services.redis()
        specs = [AccountSpec(f"g{i:05d}", "PREPAID_S", 10**13, msisdn=msisdn(i),
                             imsi=imsi(i)) for i in range(n_accounts)]
        provisioning.provision(client, services.prefix, specs, catalog_text=catalog_text(),
                               source="sample catalog with rating groups")
        store = KeyStore(client, services.prefix)
        keys = {"selfcare": [[store.create("selfcare", f"g{i:05d}", "bench")[1],
                              f"g{i:05d}"] for i in range(readers)],
                "agent": [store.create("agent", None, "bench")[1] for _ in range(payers)]}
        keys_file = data / "keys.json"
        keys_file.write_bytes(orjson.dumps(keys))
        t = Topics()
        if engine_via == "kafka":
            brokers = EmbeddedBroker(data).start()
            ensure_topics(brokers, {t.requests: 1, t.decisions: 1, t.charges: 1,
                                    t.rejects: 1})
        serve, ports = _start_serve(data, data / "serve.log", api_server, brokers)
        if brokers:
            wait_ready(brokers, t.requests, t.decisions, _sms_requests(n_accounts), 1)
        users = readers + payers

        async def phases_run() -> None:
            gy = None
            if brokers is None:
                gy = GyLoad(ports["diameter"], n_accounts)
                await gy.open()
                await offer(gy, "diameter", 200, 2, 0)  # warm-up

            async def engine(label: str) -> None:
                if gy is not None:
                    phase = await offer(gy, "engine", engine_rate, seconds, 0)
                else:
                    phase = await asyncio.to_thread(
                        drive, brokers, t.requests, t.decisions, _sms_requests(n_accounts),
                        "engine", engine_rate, seconds, drain_s=DRAIN_S)
                phase.label = label
                phases.append(phase)
                print(_line(phase), flush=True)

            if "api" in only:
                api["api"] = await _locust(ports["api"], keys_file, read_rate, topup_rate,
                                           seconds + warm, users, data / "api",
                                           data / "locust.log")
                _print_api("api", api["api"])
            if only != {"api"}:
                await engine(f"engine {engine_rate:g}/s")
                load = asyncio.create_task(_locust(
                    ports["api"], keys_file, read_rate, topup_rate, seconds + warm + 1, users,
                    data / "both", data / "locust.log"))
                await asyncio.sleep(warm)
                await engine(f"engine {engine_rate:g}/s + api")
                api["engine+api"] = await load
                _print_api("engine+api", api["engine+api"])
            if gy is not None:
                answers.update({str(k): v for k, v in gy.results.items()})
                await gy.close()

        asyncio.run(phases_run())
    finally:
        if serve is not None:
            serve.terminate()
            try:
                serve.wait(60)
            except subprocess.TimeoutExpired:
                serve.kill()
        if brokers:
            EmbeddedBroker(data).stop()
        services.embedded.stop()
        tmp.cleanup()
    alone, both = phases if len(phases) == 2 else (Phase("engine", 0, 0),) * 2
    result = {**run_facts(), "api_server": api_server, "engine_via": engine_via,
              "accounts": n_accounts, "seconds": seconds,
              "engine_rate": engine_rate, "read_rate": read_rate, "topup_rate": topup_rate,
              "readers": readers, "payers": payers, "gy_answers": answers,
              "phases": [p.summary() for p in phases], "api": api,
              "engine_p99_ms": alone.p99_ms, "engine_p99_with_api_ms": both.p99_ms,
              "engine_p99_ratio": round(both.p99_ms / alone.p99_ms, 2)
              if alone.p99_ms and both.p99_ms else None}
    if out_dir is not None:
        print(f"wrote {save_result(out_dir, 'api', result)}")
    return result


def _print_api(label: str, stats: dict[str, dict]) -> None:
    for name, s in stats.items():
        print(f"{label + ' ' + name:<22} sent {s['requests']:>7,}  failed {s['failures']:>7,}  "
              f"{s['rps']:>9,.0f}/s  p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="chargeflow bench api",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine-rate", type=float, default=2000.0,
                    help="CCR-EVENTs/s offered to the Gy door")
    ap.add_argument("--read-rate", type=float, default=2000.0, help="balance reads/s offered")
    ap.add_argument("--topup-rate", type=float, default=100.0, help="top-ups/s offered")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per phase")
    ap.add_argument("--warm", type=float, default=3.0,
                    help="seconds of API load before the engine phase beside it")
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--readers", type=int, default=100,
                    help="read users (one selfcare key each; each offers read-rate/readers)")
    ap.add_argument("--payers", type=int, default=10, help="top-up users (one agent key each)")
    ap.add_argument("--api-server", choices=("hypercorn", "granian"), default="hypercorn",
                    help="chargeflow serve --api-server")
    ap.add_argument("--engine-via", choices=("kafka", "gy"), default="kafka",
                    help="kafka: serve --kafka, engine requests produced to chargeflow.requests "
                         "and their decisions read back; gy: CCR-EVENTs through serve's "
                         "Diameter door to its engine in process")
    ap.add_argument("--phases", default="api,both",
                    help="api: the API alone; both: the engine alone, then beside the API")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = ap.parse_args(argv)
    result = run(args.engine_rate, args.read_rate, args.topup_rate, args.seconds, args.warm,
                 args.accounts, args.readers, args.payers, args.out,
                 frozenset(p.strip() for p in args.phases.split(",") if p.strip()),
                 args.api_server, args.engine_via)
    if args.json:
        print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
