"""``Engine.process`` against a real Redis: decisions, charges, replays, rejects, an outage.

The engine is wired as ``flows.runtime.make_engine`` wires it (own client, BalanceStore,
CatalogCache, Charger), under a key prefix unique to the test.
"""

from __future__ import annotations

import base64
import threading
import time
from fractions import Fraction

import orjson
import pytest
import redis

from balances.accounts import parse_accounts
from balances.store import BalanceStore
from flows.engine import Engine, Output
from flows.provision import provision
from flows.runtime import EngineConfig, make_engine
from tests.conftest import REDIS_URL
from tests.flows.conftest import SAMPLE_TEXT
from tests.flows.oracle import (
    LANDLINE,
    MOBILE,
    SAT_MS,
    TUE_PEAK_MS,
    Model,
    check_charge,
    check_decision,
    event,
    strip_latency,
)

TUE = "2026-11-24T10:00:00+01:00"
ACCOUNTS = [
    {"id": "alice", "plan": "PREPAID_S", "balance": "10.00"},
    {"id": "bob", "plan": "PREPAID_S", "balance": "5.00", "status": "blocked"},
    {"id": "carol", "plan": "PREPAID_S", "balance": "0.10"},
]


def prepare(client: redis.Redis, prefix: str, accounts: list[dict]):
    text = "\n".join(orjson.dumps(a).decode() for a in accounts)
    return provision(client, prefix, lambda catalog: parse_accounts(text, catalog),
                     catalog_text=SAMPLE_TEXT)


def new_engine(prefix: str, url: str = REDIS_URL) -> Engine:
    return make_engine(EngineConfig(redis_url=url, prefix=prefix))


def by_kind(outputs: list[Output]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"decision": [], "charge": [], "reject": []}
    for o in outputs:
        out[o.kind].append(orjson.loads(o.value))
    return out


def ledger_sum(store: BalanceStore, account: str) -> int:
    return sum(e["delta"] for e in store.ledger(account))


@pytest.fixture
def setup(redis_client, prefix):
    catalog = prepare(redis_client, prefix, ACCOUNTS)
    clients = []

    def engine() -> Engine:
        e = new_engine(prefix)
        clients.append(e.charger.store.r)
        return e

    yield catalog, engine, BalanceStore(redis_client, prefix=prefix)
    for client in clients:
        client.close()


def mixed_batch() -> list[dict]:
    s = {"account": "alice", "service": "voice", "session": "s1", "destination": MOBILE}
    return [
        event("e-sms", "alice", "sms", 1, TUE),
        event("e-peak", "alice", "voice", 61, TUE, destination=MOBILE),
        event("e-sat", "alice", "voice", 61, SAT_MS, destination=MOBILE),
        event("e-land", "alice", "voice", 1, TUE_PEAK_MS, destination="+" + LANDLINE),
        event("e-data", "alice", "data", 1500, TUE),
        event("e-zero", "alice", "sms", 0, TUE),
        dict(s, id="s1:0", kind="initial", seq=0, ts=TUE),
        dict(s, id="s1:1", kind="update", seq=1, ts=TUE, used=100, requested=60),
        dict(s, id="s1:2", kind="terminate", seq=2, ts=TUE, used=30),
        event("e-ghost", "ghost", "sms", 1, TUE),
        event("e-blocked", "bob", "sms", 1, TUE),
        event("e-fax", "alice", "fax", 1, TUE),
        event("e-carol1", "carol", "sms", 1, TUE),
        event("e-carol2", "carol", "sms", 1, TUE),
        dict(s, id="nos:1", kind="update", seq=1, ts=TUE, used=60, session="nosuch"),
        event("e-cap", "alice", "voice", 100_000, TUE, destination=MOBILE),
    ]


def test_decisions_charges_and_latency(setup):
    catalog, engine, store = setup
    eng = engine()
    batch = mixed_batch()
    model = Model(catalog, ACCOUNTS)
    entered = time.monotonic_ns() - 3_000_000  # entered the engine 3 ms ago
    outputs = eng.process([orjson.dumps(r) for r in batch], [entered] * len(batch))
    kinds = by_kind(outputs)
    assert kinds["reject"] == []
    decisions = kinds["decision"]
    assert [d["id"] for d in decisions] == [r["id"] for r in batch]  # one each, in order
    charges = {c["id"]: c for c in kinds["charge"]}
    for r, d in zip(batch, decisions):
        exp = model.apply(r)
        check_decision(d, r, exp)
        assert 3000 <= d["latency_us"] < 60_000_000
        if exp.charge is None:
            assert r["id"] not in charges, (r, charges.get(r["id"]))
        else:
            check_charge(charges.pop(r["id"]), r, exp, catalog)
    assert charges == {}
    for o in outputs:  # decisions and charges are keyed by account, rejects by nothing
        assert o.key == orjson.loads(o.value)["account"].encode()

    # the contract's worked examples, written out (independent of the model)
    d = {x["id"]: x for x in decisions}
    assert (d["e-sms"]["charged"], d["e-peak"]["charged"], d["e-sat"]["charged"],
            d["e-land"]["charged"], d["e-cap"]["charged"]) == (
        "0.0900", "0.1515", "0.1220", "0.2000", "5.0000")
    assert d["e-data"]["charged"] == "0.0000" and d["e-data"]["result"] == "SUCCESS"
    assert (d["s1:0"]["granted"], d["s1:0"]["validity_s"], d["s1:0"]["final"]) == (300, 600, False)
    assert (d["s1:1"]["granted"], d["s1:1"]["charged"]) == (60, "0.2100")
    assert d["s1:2"]["charged"] == "0.0450" and d["s1:2"]["granted"] == 0
    assert d["e-ghost"]["result"] == "USER_UNKNOWN" and d["e-ghost"]["balance"] is None
    assert d["e-blocked"]["result"] == d["e-fax"]["result"] == "END_USER_SERVICE_DENIED"
    assert (d["e-carol1"]["result"], d["e-carol2"]["result"]) == (
        "SUCCESS", "CREDIT_LIMIT_REACHED")
    assert d["nos:1"]["result"] == "SESSION_UNKNOWN" and d["nos:1"]["charged"] == "0.1500"
    data_charge = [c for c in kinds["charge"] if c["id"] == "e-data"][0]
    assert data_charge["allowance_units"] == 1500 and data_charge["cost"] == "0.0000"

    for acct in ("alice", "bob", "carol"):
        view = store.view(acct)
        assert Fraction(view.balance, 1_000_000) == model.balance(acct)
        assert ledger_sum(store, acct) == view.balance
        assert view.reserved == 0 and view.sessions == {}
    assert store.view("ghost") is None


def test_replays_return_the_same_decision_and_change_nothing(setup):
    catalog, engine, store = setup
    batch = [orjson.dumps(r) for r in mixed_batch()]
    first = by_kind(engine().process(batch))
    balances = {a: store.view(a).balance for a in ("alice", "bob", "carol")}
    ledgers = {a: store.ledger(a) for a in ("alice", "bob", "carol")}
    assert first["charge"]

    for eng in (engine(), engine()):  # the same batch on a warm engine and a fresh one
        for _ in range(2):
            again = by_kind(eng.process(batch))
            # a replay re-emits the first outputs (at-least-once; consumers dedupe by id)
            assert again["charge"] == first["charge"] and again["reject"] == []
            assert [strip_latency(d) for d in again["decision"]] == \
                [strip_latency(d) for d in first["decision"]]
    # duplicates inside one batch: the copies replay the first, charged once, re-emitted
    dup = event("e-dup", "alice", "sms", 1, TUE)
    out = by_kind(engine().process([orjson.dumps(dup)] * 3))
    assert len(out["decision"]) == 3 and len(out["charge"]) == 3
    assert len({orjson.dumps(c) for c in out["charge"]}) == 1
    assert len({orjson.dumps(strip_latency(d)) for d in out["decision"]}) == 1
    assert out["decision"][0]["charged"] == "0.0900"

    assert store.view("alice").balance == balances["alice"] - 90_000
    for a in ("bob", "carol"):
        assert store.view(a).balance == balances[a]
        assert store.ledger(a) == ledgers[a]
    assert [e["id"] for e in store.ledger("alice")] == \
        [e["id"] for e in ledgers["alice"]] + ["e-dup"]
    assert ledger_sum(store, "alice") == store.view("alice").balance


GOOD = event("good-1", "alice", "sms", 1, TUE)
GOOD2 = event("good-2", "alice", "sms", 1, TUE)


def _big(size: int, fill: bytes = b"x") -> bytes:
    head = b'{"id":"big","kind":"event","account":"alice","service":"sms","ts":1,"used":1,"pad":"'
    body = fill * ((size - len(head) - 2) // len(fill))
    doc = head + body + b'"}'
    return doc + b" " * (size - len(doc))


MALFORMED_CASES = [
    # (name, payload, code, field named in the detail, id carried by the reject)
    ("invalid-json", b'{"id": "x1", "kind": "event", ', "MALFORMED", None, None),
    ("not-json-text", "this is not json", "MALFORMED", None, None),
    ("empty", b"", "MALFORMED", None, None),
    ("json-array", b'["id", "x"]', "MALFORMED", None, None),
    ("json-number", b"42", "MALFORMED", None, None),
    ("invalid-utf8", b'{"id":"x2","kind":"event","account":"alice\xff\xfe","service":"sms"}',
     "MALFORMED", None, None),
    ("lone-continuation", b"\x80\x81{}", "MALFORMED", None, None),
    ("1MiB", _big(1 << 20), "TOO_LARGE", None, None),
    ("64KiB+1", _big(64 * 1024 + 1), "TOO_LARGE", None, None),
    ("1MiB-multibyte", _big(1 << 20, "é".encode()), "TOO_LARGE", None, None),
    ("used-string", orjson.dumps(dict(GOOD, id="x3", used="10")), "INVALID_FIELD", "used", "x3"),
    ("used-float", orjson.dumps(dict(GOOD, id="x4", used=1.5)), "INVALID_FIELD", "used", "x4"),
    ("used-bool", orjson.dumps(dict(GOOD, id="x5", used=True)), "INVALID_FIELD", "used", "x5"),
    ("used-negative", orjson.dumps(dict(GOOD, id="x6", used=-1)), "INVALID_FIELD", "used", "x6"),
    ("used-too-big", orjson.dumps(dict(GOOD, id="x7", used=2**40 + 1)), "INVALID_FIELD", "used",
     "x7"),
    ("requested-negative", orjson.dumps(dict(GOOD, id="x8", requested=-5)), "INVALID_FIELD",
     "requested", "x8"),
    ("seq-negative", orjson.dumps(dict(GOOD, id="x9", kind="update", session="s", seq=-1)),
     "INVALID_FIELD", "seq", "x9"),
    ("id-number", orjson.dumps(dict(GOOD, id=17)), "INVALID_FIELD", "id", None),
    ("id-empty", orjson.dumps(dict(GOOD, id="")), "INVALID_FIELD", "id", None),
    ("id-129", orjson.dumps(dict(GOOD, id="i" * 129)), "INVALID_FIELD", "id", None),
    ("account-list", orjson.dumps(dict(GOOD, id="x10", account=["alice"])), "INVALID_FIELD",
     "account", "x10"),
    ("kind-unknown", orjson.dumps(dict(GOOD, id="x11", kind="refund")), "INVALID_FIELD", "kind",
     "x11"),
    ("ts-bool", orjson.dumps(dict(GOOD, id="x12", ts=True)), "INVALID_FIELD", "ts", "x12"),
    ("ts-no-offset", orjson.dumps(dict(GOOD, id="x13", ts="2026-11-24T10:00:00")),
     "INVALID_FIELD", "ts", "x13"),
    ("destination-letters", orjson.dumps(dict(GOOD, id="x14", destination="49abc")),
     "INVALID_FIELD", "destination", "x14"),
    ("missing-id", orjson.dumps({k: v for k, v in GOOD.items() if k != "id"}), "MISSING_FIELD",
     "id", None),
    ("missing-kind", orjson.dumps({k: v for k, v in dict(GOOD, id="x15").items() if k != "kind"}),
     "MISSING_FIELD", "kind", "x15"),
    ("missing-account", orjson.dumps({k: v for k, v in dict(GOOD, id="x16").items()
                                      if k != "account"}), "MISSING_FIELD", "account", "x16"),
    ("missing-service", orjson.dumps({k: v for k, v in dict(GOOD, id="x17").items()
                                      if k != "service"}), "MISSING_FIELD", "service", "x17"),
    ("missing-ts", orjson.dumps({k: v for k, v in dict(GOOD, id="x18").items() if k != "ts"}),
     "MISSING_FIELD", "ts", "x18"),
    ("missing-session", orjson.dumps(dict(GOOD, id="x19", kind="initial", seq=0)),
     "MISSING_FIELD", "session", "x19"),
    ("missing-seq", orjson.dumps(dict(GOOD, id="x20", kind="update", session="s")),
     "MISSING_FIELD", "seq", "x20"),
]


@pytest.mark.parametrize("name,payload,code,field,rid", MALFORMED_CASES,
                         ids=[c[0] for c in MALFORMED_CASES])
def test_malformed_input_is_rejected_and_changes_nothing(setup, name, payload, code, field,
                                                        rid):
    catalog, engine, store = setup
    before = store.view("alice").balance
    out = by_kind(engine().process([orjson.dumps(GOOD), payload, orjson.dumps(GOOD2)]))
    assert [d["id"] for d in out["decision"]] == ["good-1", "good-2"]
    assert [d["result"] for d in out["decision"]] == ["SUCCESS", "SUCCESS"]
    assert [c["id"] for c in out["charge"]] == ["good-1", "good-2"]
    (rej,) = out["reject"]
    assert rej["error"] == code, rej
    assert rej["detail"], rej
    if field is not None:
        assert f"'{field}'" in rej["detail"], rej
    assert rej.get("id") == rid
    raw = payload.encode() if isinstance(payload, str) else payload
    head = raw[:64 * 1024]
    if rej.get("raw_encoding") == "base64":
        assert base64.b64decode(rej["raw"]) == head
        with pytest.raises(UnicodeDecodeError):
            head.decode("utf-8")  # base64 only when the bytes are not UTF-8
    else:
        assert "raw_encoding" not in rej
        assert rej["raw"] == head.decode("utf-8")
    if len(raw) > 64 * 1024:
        assert rej["raw_truncated_from"] == len(raw)
    else:
        assert "raw_truncated_from" not in rej
    if name == "invalid-utf8":
        assert rej["raw_encoding"] == "base64"
    assert len(orjson.dumps(rej)) < 100 * 1024  # fits a default Kafka message
    # only the two valid requests changed the balance; the ledger names exactly them
    assert store.view("alice").balance == before - 180_000
    assert [e["id"] for e in store.ledger("alice")[1:]] == ["good-1", "good-2"]


def test_payload_limit_is_64_kib_inclusive(setup):
    _, engine, store = setup
    exact = _big(64 * 1024).replace(b'"id":"big"', b'"id":"b64"').replace(b'"ts":1', b'"ts":2')
    exact = exact[:64 * 1024]
    assert len(exact) == 64 * 1024
    out = by_kind(engine().process([exact, exact.decode()]))  # bytes and str payloads
    assert out["reject"] == []
    assert [d["result"] for d in out["decision"]] == ["SUCCESS", "SUCCESS"]
    assert len(out["charge"]) == 2  # the second is a replay of the same id: the same charge
    assert out["charge"][0] == out["charge"][1]


def test_redis_outage_blocks_the_batch_until_redis_returns(start_redis, prefix):
    # a private server whose state survives a SIGKILL (append-only file, fsync always)
    persist = ("--appendonly", "yes", "--appendfsync", "always")
    port, proc = start_redis(*persist)
    client = redis.Redis(port=port, socket_timeout=5)
    accounts = [{"id": f"o{i}", "plan": "PREPAID_S", "balance": "3.00"} for i in range(20)]
    catalog = prepare(client, prefix, accounts)
    client.close()
    eng = new_engine(prefix, f"redis://127.0.0.1:{port}/0")
    model = Model(catalog, accounts)

    def sess(acct, sid, kind, seq, **kw):
        return {"id": f"{sid}:{seq}", "kind": kind, "account": acct, "service": "voice",
                "session": sid, "seq": seq, "ts": TUE, "destination": MOBILE, **kw}

    first = [sess(a["id"], f"{a['id']}-v", "initial", 0) for a in accounts]
    first += [event(f"{a['id']}-m0", a["id"], "sms", 1, TUE) for a in accounts]
    second = [sess(a["id"], f"{a['id']}-v", "update", 1, used=200) for a in accounts]
    second += [event(f"{a['id']}-m{k}", a["id"], "sms", 1, TUE)
               for a in accounts for k in range(1, 30)]  # the balance runs dry on the way
    second += [sess(a["id"], f"{a['id']}-v", "terminate", 2, used=50) for a in accounts]
    out1 = by_kind(eng.process([orjson.dumps(r) for r in first]))
    for r, d in zip(first, out1["decision"]):
        check_decision(d, r, model.apply(r))

    proc.kill()
    proc.wait()
    result: dict = {}

    def work():
        try:
            result["out"] = eng.process([orjson.dumps(r) for r in second])
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    deadline = time.monotonic() + 20
    while eng.counters.store_retries < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert eng.counters.store_retries >= 3, "the engine did not retry while Redis was down"
    assert worker.is_alive() and "out" not in result  # the batch waits: nothing decided
    start_redis(*persist, port=port)  # the same port and directory: the AOF is replayed
    worker.join(timeout=30)
    assert not worker.is_alive(), "the batch did not complete after Redis came back"
    assert "error" not in result, result.get("error")
    out2 = by_kind(result["out"])
    assert [d["id"] for d in out2["decision"]] == [r["id"] for r in second]
    charges = {c["id"]: c for c in out2["charge"]}
    assert len(charges) == len(out2["charge"])
    results = set()
    for r, d in zip(second, out2["decision"]):
        exp = model.apply(r)
        check_decision(d, r, exp)
        results.add(d["result"])
        if exp.charge is not None:
            check_charge(charges.pop(r["id"]), r, exp, catalog)
    assert charges == {}
    assert {"SUCCESS", "CREDIT_LIMIT_REACHED"} <= results

    # nothing doubled: each request id at most once in the ledger, sums equal balances;
    # replaying the batch now changes nothing
    again = by_kind(eng.process([orjson.dumps(r) for r in second]))
    assert again["charge"] == out2["charge"]  # re-emitted as first written
    assert [strip_latency(d) for d in again["decision"]] == \
        [strip_latency(d) for d in out2["decision"]]
    client = redis.Redis(port=port, socket_timeout=5)
    store = BalanceStore(client, prefix=prefix)
    for a in accounts:
        view = store.view(a["id"])
        ids = [e["id"] for e in store.ledger(a["id"])]
        assert len(ids) == len(set(ids)), ids
        assert Fraction(view.balance, 1_000_000) == model.balance(a["id"])
        assert ledger_sum(store, a["id"]) == view.balance
        assert view.reserved == 0 and view.sessions == {}
    for k in client.scan_iter(match=f"{prefix}:*"):  # a private server, but tidy anyway
        client.delete(k)
    client.close()
    eng.charger.store.r.close()


def test_reprocessing_after_a_lost_output_still_emits_the_charge(setup):
    _, engine, store = setup
    req = orjson.dumps(event("lost-1", "alice", "sms", 1, TUE))
    engine().process([req])  # decided and written; the process dies before producing
    out = by_kind(engine().process([req]))  # the restarted engine reads the request again
    assert [d["charged"] for d in out["decision"]] == ["0.0900"]
    assert [c["id"] for c in out["charge"]] == ["lost-1"]


def test_engine_releases_silent_sessions_between_batches(setup):
    """The sweeper runs from the engine every sweep_every_s (here: each batch)."""
    _, engine, store = setup
    eng = engine()
    released: list[int] = []
    eng.sweeper = lambda now_ms: released.append(now_ms) or 0
    eng.sweep_every_ns = 0
    eng.process([orjson.dumps(event("sw-1", "alice", "sms", 1, TUE))])
    eng.process([orjson.dumps(event("sw-2", "alice", "sms", 1, TUE))])
    assert len(released) == 2 and released[0] <= released[1]


def test_a_sweep_that_cannot_reach_redis_waits_for_its_next_turn(setup, caplog):
    """The engine's sweep meets a Redis that does not answer (a real client to a closed
    port): the batch is still answered and the sweep is only logged as skipped."""
    from functools import partial

    from balances.sweeper import sweep

    _, engine, _ = setup
    eng = engine()
    dead = BalanceStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2),
                        prefix="nowhere")
    eng.sweeper = partial(sweep, dead)
    eng.sweep_every_ns = 0
    out = by_kind(eng.process([orjson.dumps(event("sw-3", "alice", "sms", 1, TUE)),
                               b"not json"]))
    assert [d["id"] for d in out["decision"]] == ["sw-3"] and len(out["reject"]) == 1
    assert "sweep skipped" in caplog.text


def test_metrics_count_decisions_rejects_and_latency_per_request(redis_client, prefix):
    from prometheus_client import CollectorRegistry

    from flows.observe import EngineMetrics

    prepare(redis_client, prefix, ACCOUNTS)
    registry = CollectorRegistry()
    eng = make_engine(EngineConfig(redis_url=REDIS_URL, prefix=prefix),
                      EngineMetrics(registry))
    try:
        batch = mixed_batch()
        now = time.monotonic_ns()
        entered = [now - 3_000_000] * (len(batch) - 1) + [now - 3_000_000_000]  # 3 ms, 3 s
        outputs = eng.process([orjson.dumps(r) for r in batch] + [b"{"], entered + [now])
    finally:
        eng.charger.store.r.close()
    results: dict[str, int] = {}
    for d in by_kind(outputs)["decision"]:
        results[d["result"]] = results.get(d["result"], 0) + 1

    def sample(name: str, **labels) -> float | None:
        return registry.get_sample_value(name, labels)

    for result, n in results.items():
        assert sample("chargeflow_decisions_total", result=result) == n
    assert sample("chargeflow_rejects_total", code="MALFORMED") == 1
    n = len(batch)
    assert sample("chargeflow_decision_latency_seconds_count") == n
    assert sample("chargeflow_decision_latency_seconds_bucket", le="0.002") == 0
    assert sample("chargeflow_decision_latency_seconds_bucket", le="2.5") == n - 1
    assert sample("chargeflow_decision_latency_seconds_bucket", le="+Inf") == n
    assert 3.0 < sample("chargeflow_decision_latency_seconds_sum") < 4.0 + n
    assert sample("chargeflow_batch_size_count") == 1


def test_a_request_whose_charging_raises_is_rejected_and_the_rest_decided(
        setup, redis_client, prefix, caplog):
    """A defect met by one request must not stop the stream: the batch is halved until that
    request is alone, it is rejected with INTERNAL_ERROR, and every other request gets
    exactly the outputs of a batch without it. The defect is injected inside the charger,
    after the rules have changed the batch's cached accounts in memory: the store's write
    raises for a batch that holds id "poison" (so the charger must drop what it changed)."""

    _, engine, store = setup
    clean_prefix = f"{prefix}:clean"  # deleted with the test's prefix
    prepare(redis_client, clean_prefix, ACCOUNTS)
    clean = by_kind(new_engine(clean_prefix).process(
        [orjson.dumps(r) for r in mixed_batch()]))

    batch = mixed_batch()
    batch.insert(7, event("poison", "alice", "sms", 1, TUE))  # between a session's steps
    payloads = [orjson.dumps(r) for r in batch]
    eng = engine()
    send_save = eng.charger.store.send_save

    def faulty(accounts, changes, outcomes, *rest, **kw):
        if any(o.request.id == "poison" for o in outcomes):
            raise ZeroDivisionError("injected defect")
        return send_save(accounts, changes, outcomes, *rest, **kw)

    eng.charger.store.send_save = faulty
    for attempt in range(2):  # and again: replays, poison rejected again
        out = by_kind(eng.process(payloads))
        assert [(r["error"], r["id"]) for r in out["reject"]] == [("INTERNAL_ERROR", "poison")]
        assert "injected defect" in out["reject"][0]["detail"]
        assert orjson.loads(out["reject"][0]["raw"]) == batch[7]
        assert [strip_latency(d) for d in out["decision"]] == \
            [strip_latency(d) for d in clean["decision"]], attempt
        assert out["charge"] == clean["charge"]
    clean_store = BalanceStore(redis_client, prefix=clean_prefix)
    for a in ("alice", "bob", "carol"):
        assert store.view(a).balance == clean_store.view(a).balance
        assert ledger_sum(store, a) == ledger_sum(clean_store, a)
    assert eng.counters.reject_codes == {"INTERNAL_ERROR": 2}
    assert "poison" in caplog.text and "injected defect" in caplog.text


def test_a_corrupt_account_is_rejected_not_retried_as_an_outage(setup, redis_client, prefix):
    _, engine, store = setup
    redis_client.hdel(store.keys.account("alice"), "ver")
    eng = engine()
    eng.sleep = lambda s: pytest.fail("a corrupt account was retried like a Redis outage")
    out = by_kind(eng.process([orjson.dumps(event("c1", "alice", "sms", 1, TUE)),
                               orjson.dumps(event("c2", "carol", "sms", 1, TUE))]))
    assert [d["id"] for d in out["decision"]] == ["c2"]
    assert [(r["error"], r["id"]) for r in out["reject"]] == [("INTERNAL_ERROR", "c1")]
    assert "'ver' is missing" in out["reject"][0]["detail"]
