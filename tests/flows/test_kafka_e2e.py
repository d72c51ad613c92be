"""``chargeflow run`` over the embedded (tansu) broker, end to end, for 1,000 accounts.

Scripted traffic: voice sessions (initial / updates / terminate) at three rates, SMS and data
events, sessions that hit the tariff cap, heavy data users past their allowance, accounts that
run dry (refused events, a cut grant, usage beyond the grant reported as uncharged), a blocked
account, unknown accounts, unknown sessions and gateway retries (duplicate ids). Every result
is checked against the reference model; final balances against the model and against a
direct sum of reference ratings; ledgers against balances; charges against balances.
"""

from __future__ import annotations

import random
import signal
import time
from collections import defaultdict
from fractions import Fraction

import pytest

from charging.reference import rate_units, select_rate, tariff_for
from flows.broker import free_port
from tests.flows.conftest import accounts_of, drain, wait_for
from tests.flows.oracle import (
    MOBILE,
    TUE_PEAK_MS,
    Model,
    account_traffic,
    check_charge,
    check_decision,
    dec,
    event,
    interleave,
    strip_latency,
    ts_ms,
    voice_session,
)

TUE = "2026-11-24T10:00:00+01:00"
MIB = 1 << 20


def scripted_traffic(rng: random.Random):
    normal = accounts_of(1000, "1000.00")
    dry_sms = accounts_of(8, "0.50", prefix="drysms")
    dry_voice = accounts_of(3, "0.20", prefix="dryvoice")
    blocked = [{"id": "blocked1", "plan": "PREPAID_S", "balance": "5.00", "status": "blocked"}]
    accounts = normal + dry_sms + dry_voice + blocked
    per: dict[str, list[dict]] = {}
    for k, a in enumerate(normal):
        acct = a["id"]
        reqs = account_traffic(acct, rng, rng.choice([0, 1, 1, 2]), rng.randint(0, 3),
                               rng.randint(0, 2))
        if k % 100 == 0:  # heavy data: 3 × 600 MiB, the third past the 1 GiB allowance
            reqs += [event(f"{acct}-big{j}", acct, "data", 600 * MIB, TUE_PEAK_MS + j)
                     for j in range(3)]
        if k % 100 == 1:  # a long call: the session's charges stop at the 5.00 cap
            reqs += voice_session(f"{acct}-long", acct, rng, updates=3, ts=TUE_PEAK_MS,
                                  seconds=(1500, 2500), requested=3000)
        if k % 250 == 2:  # an update of a session the engine never saw
            reqs.append({"id": f"{acct}-nosess:3", "kind": "update", "account": acct,
                         "service": "voice", "session": f"{acct}-nosess", "seq": 3,
                         "ts": TUE, "destination": MOBILE, "used": 75})
        per[acct] = reqs
    for a in dry_sms:
        per[a["id"]] = [event(f"{a['id']}-m{j}", a["id"], "sms", 1, TUE) for j in range(8)]
    for a in dry_voice:  # grant cut to 93 s, update refused, terminate reports 10 s more
        sid = f"{a['id']}-v"
        base = {"account": a["id"], "service": "voice", "session": sid, "destination": MOBILE,
                "ts": TUE}
        per[a["id"]] = [dict(base, id=f"{sid}:0", kind="initial", seq=0),
                        dict(base, id=f"{sid}:1", kind="update", seq=1, used=93),
                        dict(base, id=f"{sid}:2", kind="terminate", seq=2, used=10)]
    per["blocked1"] = [event("blocked1-m0", "blocked1", "sms", 1, TUE),
                       event("blocked1-d0", "blocked1", "data", 10, TUE)]
    for g in range(20):
        per[f"ghost{g}"] = [event(f"ghost{g}-m0", f"ghost{g}", "sms", 1, TUE)]
    # gateway retries: the same request again, later (a replay of the first decision)
    flat = [r for reqs in per.values() for r in reqs]
    for r in rng.sample(flat, 60):
        per[r["account"]].append(dict(r))
    return accounts, per


def direct_expectation(catalog, per: dict[str, list[dict]], opening: Fraction) -> Fraction:
    """opening − Σ reference ratings, for an account that is never refused: each session
    rated once on its total use at the rate of its initial, each event on what its
    allowance did not cover (the data allowance of the month, used in order)."""
    plan = "PREPAID_S"
    total = Fraction(0)
    allowance = catalog.plans[plan].allowances[0].units
    sessions: dict[str, list] = {}
    seen = set()
    for r in per:
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        tariff = tariff_for(catalog, plan, r["service"])
        if r["kind"] == "event":
            used = r.get("used", 0)
            if r["service"] == "data":
                free = min(used, allowance)
                allowance -= free
                used -= free
            rate = select_rate(catalog, tariff, ts_ms(r["ts"]), r.get("destination"))
            total += rate_units(tariff, rate, used)[0]
        elif r["kind"] == "initial":
            rate = select_rate(catalog, tariff, ts_ms(r["ts"]), r.get("destination"))
            sessions[r["session"]] = [tariff, rate, r.get("used", 0)]
        elif r["session"] in sessions:
            sessions[r["session"]][2] += r.get("used", 0)
        else:  # unknown session: rated like an event at its own time and destination
            rate = select_rate(catalog, tariff, ts_ms(r["ts"]), r.get("destination"))
            total += rate_units(tariff, rate, r.get("used", 0))[0]
    for tariff, rate, used in sessions.values():
        total += rate_units(tariff, rate, used)[0]
    return opening - total


def start_cluster(env, processes: int, workers: int, *first: str):
    """One engine process, or a Bytewax cluster of several, against topics of one partition
    per worker of the whole cluster (2 or 4 here); ``first`` are more options of the first
    process. Returns the engines, the first first."""
    if processes == 1:
        return [env.start_engine("--workers", str(workers), *first)]
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    engines = [env.spawn_engine("--workers", str(workers), "--process-id", str(i),
                                "--addresses", addresses, *(first if i == 0 else ()))
               for i in range(processes)]
    addr = env.data_dir / "broker.addr"
    wait_for(lambda: addr.exists() and addr.read_text().strip() != "", 120,
             "the embedded broker", engine=engines[0])
    env.probe(engines[0], 120)
    return engines


def scrape(port: int) -> dict[str, dict[tuple[str, ...], float]]:
    """The engine's /metrics over HTTP: sample name -> label values -> value."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(v for k, v in sorted(sample.labels.items()) if k != "le")
            if "le" not in sample.labels:
                found[sample.name][labels] = sample.value
    return found


@pytest.mark.parametrize("processes", [1, 2], ids=["1proc-2workers", "2procs-2workers"])
def test_kafka_end_to_end_1000_accounts(cf_env, processes):
    rng = random.Random(20261124)
    accounts, per = scripted_traffic(rng)
    env = cf_env(accounts)
    metrics_port = free_port()
    engines = start_cluster(env, processes, 2, "--metrics-port", str(metrics_port))
    engine = engines[0]
    decisions, charges, rejects = (env.reader(k) for k in ("decisions", "charges", "rejects"))
    requests = list(interleave(per, rng))
    ids = {r["id"] for r in requests}

    t0 = time.monotonic()
    env.kafka.send(requests)
    env.kafka.flush()
    wait_for(lambda: ids <= decisions.by_id.keys(), 180, "a decision for every request",
             [decisions], engine)
    elapsed = time.monotonic() - t0
    drain([decisions, charges, rejects])
    lat = sorted(ds[0]["latency_us"] for rid, ds in decisions.by_id.items() if rid in ids)
    print(f"\n[e2e] {len(requests)} requests ({len(ids)} ids) decided in {elapsed:.2f} s "
          f"= {len(requests) / elapsed:,.0f} req/s; engine latency p50 "
          f"{lat[len(lat) // 2] / 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99)] / 1000:.1f} ms")

    model = Model(env.catalog, accounts)
    results: dict[str, int] = defaultdict(int)
    expected_charges: dict[str, tuple] = {}
    for r in requests:  # per-account input order; a retry replays the first decision
        exp = model.apply(r)
        copies = decisions.by_id[r["id"]]
        assert all(strip_latency(c) == strip_latency(copies[0]) for c in copies), copies
        check_decision(copies[0], r, exp)
        results[exp.result] += 1
        if exp.charge is not None:
            expected_charges[r["id"]] = (r, exp)
    print(f"[e2e] results {dict(results)}")
    assert {"SUCCESS", "CREDIT_LIMIT_REACHED", "USER_UNKNOWN", "END_USER_SERVICE_DENIED",
            "SESSION_UNKNOWN"} <= results.keys()
    retried = [rid for rid, ds in decisions.by_id.items() if len(ds) > 1]
    assert len(retried) >= 50  # the 60 gateway retries were answered again

    # charges: one per request that took money or allowance, none for the others
    got_charges = {rid: cs for rid, cs in charges.by_id.items()}
    assert got_charges.keys() == expected_charges.keys()
    for rid, (r, exp) in expected_charges.items():
        cs = got_charges[rid]
        assert all(c == cs[0] for c in cs)
        check_charge(cs[0], r, exp, env.catalog)
    assert any(dec(c[0]["uncharged"]) > 0 for c in got_charges.values())
    assert rejects.docs == []
    if processes == 1:  # the whole run on the metrics endpoint (a cluster: per process)
        metrics = scrape(metrics_port)
        decided = sum(len(ds) for rid, ds in decisions.by_id.items())  # probes and retries too
        assert sum(metrics["chargeflow_decisions_total"].values()) == decided
        assert metrics["chargeflow_decisions_total"][("SUCCESS",)] == sum(
            len(ds) for ds in decisions.by_id.values() if ds[0]["result"] == "SUCCESS")
        assert metrics["chargeflow_decision_latency_seconds_count"][()] == decided
        assert metrics["chargeflow_batch_size_count"][()] >= 1
        assert metrics["chargeflow_store_seconds_count"][()] >= 1
        assert sum(metrics.get("chargeflow_rejects_total", {}).values()) == 0

    # the topics have a partition per worker of the cluster, and the load spread over all
    assert sorted(decisions.partitions) == list(range(2 * processes))
    assert all(decisions.partitions.values())
    # an account's decisions come out on one partition, in the order of its requests
    for p, docs in decisions.partitions.items():
        order: dict[str, list[str]] = defaultdict(list)
        seen = set()
        for d in docs:
            if d["id"] in ids and d["id"] not in seen:
                seen.add(d["id"])
                order[d["account"]].append(d["id"])
        for acct, got in order.items():
            want = list(dict.fromkeys(r["id"] for r in per[acct]))
            assert got == want, (acct, p)

    # final state
    charged = defaultdict(Fraction)
    for cs in got_charges.values():
        charged[cs[0]["account"]] += dec(cs[0]["cost"])
    for a in accounts:
        acct, opening = a["id"], Fraction(a["balance"])
        view = env.store.view(acct)
        balance = Fraction(view.balance, 1_000_000)
        assert balance == model.balance(acct), acct
        assert env.ledger_sum(acct) == view.balance, acct
        assert view.reserved == 0 and view.sessions == {}, acct
        assert opening - charged[acct] == balance, acct  # the charges topic adds up
        if acct.startswith("acct"):
            assert balance == direct_expectation(env.catalog, per[acct], opening), acct
    for g in range(20):
        assert env.store.view(f"ghost{g}") is None
    # a graceful stop (SIGTERM): the engine (every process of a cluster) drains and exits 0
    for e in engines:
        assert e.proc.poll() is None  # still running
        e.proc.send_signal(signal.SIGTERM)
    for e in engines:
        assert e.proc.wait(timeout=60) == 0, e.log_tail()
