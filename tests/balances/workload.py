"""Workloads run in separate OS processes (multiprocessing, spawn) by the concurrency and
crash-safety tests. Every process builds its own client, store, catalog cache and Charger.

A worker returns what the caller saw: for every request id the decision it got back (a
retried batch after a store error is re-sent as is, so its ids replay).
"""

from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass, field

import redis

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from balances.charger import Charger
from balances.store import BalanceStore
from catalog_cache.store import CatalogCache
from charging.errors import StoreError
from charging.requests import parse

TS = "2026-11-24T10:00:00+01:00"  # Tuesday, peak band
T0_MS = 1795856400000


@dataclass
class Plan:
    """What a charging worker does."""

    worker: str
    redis_url: str
    prefix: str
    accounts: list[str]
    batches: int
    batch_size: int = 8
    seed: int = 0
    shared_ids: int = 0  # events "dup-<k>" every worker sends (duplicate delivery)
    store_error_retries: int = 20


@dataclass
class Result:
    worker: str
    decisions: dict[str, dict] = field(default_factory=dict)
    requests: dict[str, dict] = field(default_factory=dict)
    open_sessions: dict[str, str] = field(default_factory=dict)  # session -> account
    store_errors: int = 0
    error: str | None = None


def shared_event(k: int, accounts: list[str]) -> dict:
    return {"id": f"dup-{k}", "kind": "event", "account": accounts[k % len(accounts)],
            "service": "sms", "ts": TS, "used": 1 + k % 3}


def _ops(plan: Plan, rng: random.Random, open_sessions: dict[str, tuple[str, str, int]],
         counter: list[int], pending_dups: list[int]) -> list[dict]:
    """One batch: at most one step per session, sessions of this worker only."""
    batch: list[dict] = []
    used_sessions: set[str] = set()
    while len(batch) < plan.batch_size:
        counter[0] += 1
        n = counter[0]
        rid = f"{plan.worker}-{n}"
        acct = rng.choice(plan.accounts)
        roll = rng.random()
        if pending_dups and roll < 0.1:
            batch.append(shared_event(pending_dups.pop(), plan.accounts))
            continue
        free = [s for s in open_sessions if s not in used_sessions]
        if free and roll < 0.55:
            sid = rng.choice(free)
            used_sessions.add(sid)
            account, service, seq = open_sessions[sid]
            kind = "terminate" if rng.random() < 0.3 else "update"
            used = rng.randint(0, 200) if service == "voice" else rng.randint(0, 2)
            batch.append({"id": f"{sid}:{seq + 1}", "kind": kind, "account": account,
                          "service": service, "session": sid, "seq": seq + 1, "ts": TS,
                          "destination": "4917612345", "used": used,
                          "requested": rng.choice([0, 60, 300])})
            open_sessions[sid] = (account, service, seq + 1)
        elif roll < 0.75:
            sid = f"{plan.worker}-s{n}"
            used_sessions.add(sid)
            service = rng.choice(["voice", "voice", "sms", "data"])
            batch.append({"id": f"{sid}:0", "kind": "initial", "account": acct,
                          "service": service, "session": sid, "seq": 0, "ts": TS,
                          "destination": "4917612345",
                          "requested": rng.choice([0, 60, 120, 600])})
        else:
            service = rng.choice(["voice", "sms", "data"])
            used = {"voice": rng.randint(1, 300), "sms": rng.randint(1, 3),
                    "data": rng.randint(1, 3_000_000)}[service]
            batch.append({"id": rid, "kind": "event", "account": acct, "service": service,
                          "ts": TS, "destination": "4930123456", "used": used})
    return batch


def charge_worker(plan: Plan, barrier, queue) -> None:
    result = Result(plan.worker)
    try:
        client = redis.Redis.from_url(plan.redis_url, socket_timeout=30)
        cache = CatalogCache(client, prefix=plan.prefix, check_interval_s=3600)
        store = BalanceStore(client, prefix=plan.prefix)
        charger = Charger(store, cache, lambda: T0_MS)
        cache.refresh()
        _ = cache.current  # compile before the start line
        rng = random.Random(plan.seed)
        open_sessions: dict[str, tuple[str, str, int]] = {}
        pending_dups = list(range(plan.shared_ids))
        rng.shuffle(pending_dups)
        counter = [0]
        barrier.wait(timeout=120)
        for _ in range(plan.batches):
            batch = _ops(plan, rng, open_sessions, counter, pending_dups)
            requests = [parse(r) for r in batch]
            for attempt in range(plan.store_error_retries):
                try:
                    outs = charger.charge(requests)
                    break
                except StoreError:  # too many conflicts: re-send the batch, as a caller would
                    result.store_errors += 1
                    time.sleep(0.001 * attempt)
            else:
                raise RuntimeError(f"batch kept failing after {plan.store_error_retries} tries")
            for raw, out in zip(batch, outs, strict=True):
                result.decisions[raw["id"]] = out.record()["decision"]
                result.requests[raw["id"]] = raw
                sid = raw.get("session")
                if raw["kind"] == "initial" and out.decision.result == "SUCCESS":
                    open_sessions[sid] = (raw["account"], raw["service"], 0)
                elif raw["kind"] == "initial":
                    open_sessions.pop(sid, None)
                elif raw["kind"] == "terminate":
                    open_sessions.pop(sid, None)
        result.open_sessions = {sid: a for sid, (a, _s, _q) in open_sessions.items()}
        client.close()
    except Exception:  # reported to the test, which fails with it
        result.error = traceback.format_exc()
    queue.put(result)


@dataclass
class TopupPlan:
    redis_url: str
    prefix: str
    accounts: list[str]
    count: int
    seed: int = 1


def topup_worker(plan: TopupPlan, barrier, queue) -> None:
    """Top-ups (some debits, some re-sent ids) while the chargers run; returns the applied
    ones as {topup_id: (account, micros)}."""
    applied: dict[str, tuple[str, int]] = {}
    error = None
    try:
        client = redis.Redis.from_url(plan.redis_url, socket_timeout=30)
        store = BalanceStore(client, prefix=plan.prefix)
        rng = random.Random(plan.seed)
        barrier.wait(timeout=120)
        sent: list[tuple[str, str, int]] = []
        for k in range(plan.count):
            if sent and rng.random() < 0.2:
                tid, acct, amount = rng.choice(sent)  # a re-sent top-up: must not apply again
            else:
                tid, acct = f"top-{k}", rng.choice(plan.accounts)
                amount = rng.choice([100_000, 250_000, 1_000_000, -50_000, -200_000])
                sent.append((tid, acct, amount))
            status = store.topup(acct, amount, topup_id=tid).status
            if status == "ok":
                assert tid not in applied, f"top-up {tid} applied twice"
                applied[tid] = (acct, amount)
            time.sleep(rng.random() * 0.004)
        client.close()
    except Exception:
        error = traceback.format_exc()
    queue.put(("topups", applied, error))
