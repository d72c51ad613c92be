"""Store benchmark: charging operations per second against Redis, batched vs one at a time.

    python -m bench.store [--accounts N] [--ops N] [--batches 1,64,512] [--redis URL] [--json]

A realistic mix (70 % update, 15 % initial, 10 % terminate, 5 % event) over N prepaid
accounts, driven through ``Charger.charge`` — the charging rules plus the versioned Lua write
— at each batch size, on a private embedded redis-server (AOF, appendfsync everysec) unless
``--redis`` names one. Batch size 1 is the per-request round-trip implementation: the same
rules and the same script, one request per call. The figures separate the whole path from
the Redis write alone (entries prepared in advance, one script call per batch), and put
both next to a floor: the Redis commands that any write of this data model needs per
operation, in the leanest script (``FLOOR_LUA``), with and without the ledger append.

As in a running engine (``chargeflow run``): the charger's account cache holds every account
before the timing starts, and the garbage collector is tuned (``flows.runtime.tune_gc``).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import msgpack
import orjson
import redis

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from balances.accounts import AccountSpec
from balances.charger import Charger
from balances.embedded import EmbeddedRedis
from balances.store import DEFAULT_RETENTION_S, BalanceStore
from charging.catalog import load_catalog
from charging.compiler import compile_catalog
from charging.decide import FixedCatalogs
from charging.requests import Request
from flows.cli import sample_catalog_path
from flows.runtime import tune_gc

MIX = (("update", 0.70), ("initial", 0.15), ("terminate", 0.10), ("event", 0.05))
TS = 1_795_510_800_000  # Tue 2026-11-24 10:00 Berlin


class Workload:
    """Requests in the mix; sessions are opened by initials and closed by terminates."""

    def __init__(self, accounts: int, seed: int = 1):
        self.rnd = random.Random(seed)
        self.accounts = accounts
        self.open: list[tuple[str, str, int]] = []  # (account, session, next seq)
        self.n = 0

    def next(self) -> Request:
        self.n += 1
        kind = self.rnd.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        if kind in ("update", "terminate") and not self.open:
            kind = "initial"
        if kind == "event":
            acct = f"a{self.rnd.randrange(self.accounts)}"
            return Request(id=f"r{self.n}", kind="event", account=acct, service="sms",
                           ts_ms=TS, used=1)
        if kind == "initial":
            acct = f"a{self.rnd.randrange(self.accounts)}"
            sid = f"s{self.n}"
            self.open.append((acct, sid, 1))
            return Request(id=f"r{self.n}", kind="initial", account=acct, service="voice",
                           ts_ms=TS, session=sid, seq=0, destination="4917612345")
        k = self.rnd.randrange(len(self.open))
        acct, sid, seq = self.open[k]
        if kind == "terminate":
            self.open[k] = self.open[-1]
            self.open.pop()
        else:
            self.open[k] = (acct, sid, seq + 1)
        return Request(id=f"r{self.n}", kind=kind, account=acct, service="voice", ts_ms=TS,
                       session=sid, seq=seq, used=self.rnd.randint(1, 300))


def run_batches(charger: Charger, work: Workload, batch: int, seconds: float) -> float:
    """Operations per second through ``Charger.charge`` at one batch size."""
    done, spent, begin = 0, 0.0, time.perf_counter()
    while time.perf_counter() - begin < seconds:
        reqs = [work.next() for _ in range(batch)]  # the generator is not the charger
        t0 = time.perf_counter()
        charger.charge(reqs)
        spent += time.perf_counter() - t0
        done += batch
    return done / spent


def write_only(store: BalanceStore, charger: Charger, work: Workload, batch: int,
               rounds: int) -> float:
    """Redis write alone: decide batches first, then time only the script calls."""
    prepared = []
    for _ in range(rounds):
        reqs = [work.next() for _ in range(batch)]
        accounts, previous = charger._accounts(reqs)  # warm cache: no Redis round trip
        from charging.decide import decide_batch

        working = {a: accounts[a] for a in {r.account for r in reqs}}
        outcomes, changes = decide_batch(reqs, working, charger.catalogs, 0, previous)
        prepared.append((working, changes, outcomes))
    t0 = time.perf_counter()
    for working, changes, outcomes in prepared:
        store.save(working, changes, outcomes)
    return rounds * batch / (time.perf_counter() - t0)


#: The floor: per operation, the commands a write of this data model cannot do without — the
#: version check (HGET), the idempotency record in the account's hash (HSETNX, a 114-byte
#: record: a session step's; a claimed id writes nothing more), the new state (HSET of
#: version and balance) and the ledger entry with the real one's fields (XADD MINID ~) — on
#: the same keys as the real write, with the least Lua around them: no CAS outcome, nothing
#: returned but a count. It touches fields of its own ("fv", "fb", "fi:<id>"), so the
#: accounts' state stays as it was. (Until 2026-12-03 the record was a key of its own with
#: an expiry, SET NX EX, as the engine kept it.) ARGV[4] says which
#: operations append to the ledger: "1" all, "0" none, "each" those whose fourth element is
#: 1 (operations are then of four elements: account, id, record, flag).
FLOOR_LUA = """
local ops, prefix, ttl, mode = cmsgpack.unpack(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local width = mode == 'each' and 4 or 3
local n = 0
for i = 1, #ops, width do
  local tag = prefix .. ':{' .. ops[i] .. '}:'
  local acct = tag .. 'acct'
  local ver = redis.call('HGET', acct, 'fv') or '0'
  if redis.call('HSETNX', acct, 'fi:' .. ops[i + 1], ops[i + 2]) == 1 then
    redis.call('HSET', acct, 'fv', ver + 1, 'fb', -100 * n)
    if mode == '1' or (mode == 'each' and ops[i + 3] == 1) then
      redis.call('XADD', tag .. 'ledger', 'MINID', '~', '0', '*', 'id', ops[i + 1],
                 'delta', '-100', 'balance', '999999900', 'reason', 'update',
                 'catalog_version', 'v1')
    end
    n = n + 1
  end
end
return n
"""


def floor(client: redis.Redis, prefix: str, accounts: int, batch: int, rounds: int,
          ledger: bool, seed: int = 2) -> float:
    """Operations per second of ``FLOOR_LUA`` at one batch size (batches packed before the
    timing, random accounts, fresh request ids)."""
    script = client.register_script(FLOOR_LUA)
    rnd = random.Random(seed)
    record = bytes(114)
    mark = f"floor{int(ledger)}-{batch}-{seed}"  # ids never met before: every claim succeeds
    packed = [msgpack.packb([x for k in range(batch) for x in
                             (f"a{rnd.randrange(accounts)}", f"{mark}-{r}-{k}", record)],
                            use_bin_type=False) for r in range(rounds)]
    args = [prefix, DEFAULT_RETENTION_S, "1" if ledger else "0"]
    t0 = time.perf_counter()
    for blob in packed:
        script(args=[blob, *args])
    return rounds * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,64,512")
    ap.add_argument("--redis", default=None, help="Redis URL (default: embedded, AOF)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=None, help="also write the figures as JSON into DIR")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]

    tmp = tempfile.TemporaryDirectory()
    embedded = None
    if args.redis:
        client = redis.Redis.from_url(args.redis)
    else:
        embedded = EmbeddedRedis(Path(tmp.name), "everysec")
        client = redis.Redis.from_url(embedded.start())
    prefix = f"bench{os.getpid()}"
    try:
        store = BalanceStore(client, prefix=prefix)
        cc = compile_catalog(load_catalog(sample_catalog_path()))
        t0 = time.perf_counter()
        for start in range(0, args.accounts, 10_000):
            store.upsert_accounts([AccountSpec(f"a{i}", "PREPAID_S", 1_000_000_000)
                                   for i in range(start, min(start + 10_000, args.accounts))])
        provision_s = time.perf_counter() - t0
        charger = Charger(store, FixedCatalogs(cc), lambda: int(time.time() * 1000))
        work = Workload(args.accounts)
        names = [f"a{i}" for i in range(args.accounts)]
        for start in range(0, len(names), 2000):  # an engine's steady state: every account cached
            charger._accounts([Request(id="warm", kind="event", account=a, service="sms",
                                       ts_ms=TS) for a in names[start:start + 2000]])
        charger.charge([work.next() for _ in range(512)])  # compile kernels, open sessions
        tune_gc()
        results = {}
        for batch in batches:
            runs = [run_batches(charger, work, batch, args.seconds) for _ in range(args.repeats)]
            results[batch] = {"ops_per_s": round(statistics.median(runs)),
                              "runs": [round(r) for r in runs]}
        writes = {b: round(write_only(store, charger, work, b, max(4, 4096 // b)))
                  for b in batches if b > 1}
        floors = {}
        for b in batches:
            if b > 1:
                rounds = max(4, 40_960 // b)
                floors[b] = {
                    name: round(statistics.median(
                        floor(client, prefix, args.accounts, b, rounds, ledger, seed)
                        for seed in range(args.repeats)))
                    for name, ledger in (("with_ledger", True), ("without_ledger", False))}
        info = client.info()
    finally:
        for key in client.scan_iter(f"{prefix}:*", count=5000):
            client.delete(key)
        if embedded:
            embedded.stop()
        tmp.cleanup()
    base = results[min(batches)]["ops_per_s"]
    out = {
        "accounts": args.accounts, "mix": dict(MIX), "redis_version": info["redis_version"],
        "aof": bool(info.get("aof_enabled")), "provision_s": round(provision_s, 2),
        "charger": {str(b): r for b, r in results.items()},
        "speedup_vs_batch_1": {str(b): round(r["ops_per_s"] / base, 1)
                               for b, r in results.items()},
        "write_only_ops_per_s": {str(b): v for b, v in writes.items()},
        "floor_ops_per_s": {str(b): v for b, v in floors.items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    if args.out:
        from bench.harness import save_result

        save_result(Path(args.out), "store", out)
    if args.json:
        print(orjson.dumps(out).decode())
    else:
        print(f"{args.accounts:,} accounts, Redis {out['redis_version']} (AOF "
              f"{'on' if out['aof'] else 'off'}); mix {dict(MIX)}")
        for b, r in results.items():
            print(f"batch {b:>4}: {r['ops_per_s']:>9,} ops/s through Charger "
                  f"({out['speedup_vs_batch_1'][str(b)]}x batch 1); runs {r['runs']}")
        for b, v in writes.items():
            print(f"batch {b:>4}: {v:>9,} ops/s Redis write alone")
        for b, v in floors.items():
            print(f"batch {b:>4}: {v['with_ledger']:>9,} ops/s floor: the required commands "
                  f"alone ({v['without_ledger']:,} without the ledger append)")
    return out


if __name__ == "__main__":
    main()
