"""Top-ups and adjustments through the API while the engine charges the same accounts (the
engine of ``chargeflow run`` / ``serve``, flows.runtime.make_engine, on the same Redis): every
balance is its opening plus what the API applied minus what the engine charged, the ledger
accounts for it, and no account that may not go negative ever did."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import orjson

from flows.runtime import EngineConfig, make_engine
from tests.conftest import REDIS_URL, micros
from tests.flows.oracle import event

TUE = "2026-11-24T10:00:00+01:00"
OPENING = {"alice": "3.00", "bob": "1.00"}


def session(sid: str, account: str, seconds: list[int]) -> list[dict]:
    base = {"account": account, "service": "voice", "session": sid, "ts": TUE,
            "destination": "4917612345"}
    steps = [{**base, "id": f"{sid}-0", "kind": "initial", "seq": 0, "requested": 60}]
    for n, used in enumerate(seconds[:-1], 1):
        steps.append({**base, "id": f"{sid}-{n}", "kind": "update", "seq": n, "used": used,
                      "requested": 60})
    steps.append({**base, "id": f"{sid}-{len(seconds)}", "kind": "terminate",
                  "seq": len(seconds), "used": seconds[-1]})
    return steps


def test_api_changes_and_engine_charges_reconcile(make_api):
    env = make_api([{"id": a, "plan": "PREPAID_S", "balance": b} for a, b in OPENING.items()])
    engine = make_engine(EngineConfig(redis_url=REDIS_URL, prefix=env.prefix))
    rng = random.Random(17)
    batches: list[list[dict]] = []
    sessions = {a: session(f"v-{a}", a, [30, 45, 20]) for a in OPENING}
    for i in range(30):
        batch = [event(f"e{i}-{j}", rng.choice(list(OPENING)), "sms", 1, TUE) for j in range(8)]
        for steps in sessions.values():
            if i % 5 == 0 and steps:
                batch.append(steps.pop(0))
        batches.append(batch)
    charged = dict.fromkeys(OPENING, 0)
    results: dict[str, int] = {}

    def charge() -> None:
        for batch in batches:
            for out in engine.process([orjson.dumps(r) for r in batch]):
                doc = orjson.loads(out.value)
                if out.kind == "charge":
                    charged[doc["account"]] += micros(doc["cost"])
                elif out.kind == "decision":
                    results[doc["result"]] = results.get(doc["result"], 0) + 1
            time.sleep(0.01)  # spread the engine's batches over the API's changes

    applied = dict.fromkeys(OPENING, 0)
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def change(n: int) -> None:
        local = random.Random(n)
        with env.http() as http:
            for _ in range(25):
                account = local.choice(list(OPENING))
                if local.random() < 0.5:
                    path, amount = "topups", f"{local.randint(1, 150) / 100:.2f}"
                else:
                    path, amount = "adjustments", f"-{local.randint(1, 250) / 100:.2f}"
                res = http.post(f"/v1/accounts/{account}/{path}", json={
                    "amount": amount, "reason": "race"},
                    headers={**env.auth(local.choice(["admin", "agent"])),
                             "Idempotency-Key": uuid.uuid4().hex})
                with lock:
                    statuses[res.status_code] = statuses.get(res.status_code, 0) + 1
                    if res.status_code == 201:
                        applied[account] += micros(amount)
                    else:
                        assert res.status_code == 409, res.text  # not enough free money

    engine_thread = threading.Thread(target=charge)
    engine_thread.start()
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(change, range(3)))
    engine_thread.join()

    assert sum(charged.values()) > 0 and statuses.get(201, 0) > 10
    assert results.get("SUCCESS"), results
    for account, opening in OPENING.items():
        balance = env.balance(account)
        assert balance == micros(opening) + applied[account] - charged[account], account
        assert env.store.reconciles(account, balance)
        ledger = env.store.ledger(account)
        assert all(e["balance"] >= 0 for e in ledger), "an account went negative"
        api_entries = [e for e in ledger if e["reason"] in ("topup", "adjustment")]
        assert sum(e["delta"] for e in api_entries) == applied[account]
        assert {e["actor"] for e in api_entries} <= {env.ids["admin"], env.ids["agent"]}
