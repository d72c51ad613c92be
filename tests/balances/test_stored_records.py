"""Idempotency records stored before decisions were typed still replay, byte for byte.

The charging rules return typed decisions and charges (charging.records); the store
keeps their wire form, as it did when the rules built wire dicts themselves. The records
below were written by that earlier code (commit 718b5b3, ``encode_record`` of each
outcome of the requests in ``_requests``): today's code must write the same bytes for the
same requests, read them as the typed outputs they were, and — from a Redis that holds them,
as after a rolling restart — emit them again unchanged.
"""

from __future__ import annotations

import orjson

from balances.codec import decode_record, encode_record, read_record
from charging.catalog import parse_catalog
from charging.compiler import compile_catalog
from charging.decide import FixedCatalogs, decide_batch
from charging.records import Result, charge_wire, decision_wire
from charging.requests import Request, parse_rfc3339
from charging.state import Account
from flows.engine import Engine
from tests.charging.decide_helpers import load
from tests.charging.test_decide import HUGE_TEXT
from tests.conftest import CATALOG_A, TUE_PEAK, req

TS = parse_rfc3339(TUE_PEAK)

#: request id -> the record commit 718b5b3 stored for it
OLD = {
    "e1": bytes.fromhex(
        "929ca26531a56576656e74a161a3736d73c0c0a7535543434553530000c2a4392e3832a6302e3138"
        "303099b8323032362d31312d32345430393a30303a30302e3235305a020200a3455552a7534d535f"
        "535444a3736d73a6746573742d61a130"),
    "s:0": bytes.fromhex(
        "929ca3733a30a7696e697469616ca161a5766f696365a17300a753554343455353cd012ccd0258c2"
        "a4392e3832a6302e30303030c0"),
    "s:1": bytes.fromhex(
        "929ca3733a31a97465726d696e617465a161a5766f696365a17301a7535543434553530000c2a539"
        "2e363235a6302e3139353099b8323032362d31312d32345430393a30313a33302e3030305a5a5a00"
        "a3455552a9564f4943455f535444ab6d6f62696c655f7065616ba6746573742d61a130"),
    "x": bytes.fromhex(
        "929ca178a56576656e74a567686f7374a3736d73c0c0ac555345525f554e4b4e4f574e0000c2c0a4"
        "302e3030c0"),
    "u": bytes.fromhex(
        "929ca175a6757064617465a170a5766f696365a4676f6e6503af53455353494f4e5f554e4b4e4f57"
        "4e0000c2a4302e3030a8302e31323334353699b8323032362d31312d32345430393a30303a30302e"
        "3030305a1e3c00a3455552a9564f4943455f535444ab6d6f62696c655f7065616ba6746573742d61"
        "a8302e303236353434"),
    "h": bytes.fromhex(
        "82a86465636973696f6e8da26964a168a46b696e64a56576656e74a76163636f756e74a161a77365"
        "7276696365a3736d73a773657373696f6ec0a3736571c0a6726573756c74ad524154494e475f4641"
        "494c4544a76772616e74656400aa76616c69646974795f7300a566696e616cc2a762616c616e6365"
        "a531302e3030a763686172676564a6302e30303030a664657461696cd95474686520636f7374206f"
        "6620313030303020756e697473206578636565647320392c3030302c3030302c3030302c3030302c"
        "20746865206c6172676573742074686520656e67696e6520726570726573656e7473a66368617267"
        "65c0"),
}


def _requests() -> list[Request]:
    return [Request(id="e1", kind="event", account="a", service="sms", ts_ms=TS + 250, used=2),
            Request(id="s:0", kind="initial", account="a", service="voice", ts_ms=TS,
                    session="s", seq=0, destination="4917612345"),
            Request(id="s:1", kind="terminate", account="a", service="voice",
                    ts_ms=TS + 90_000, session="s", seq=1, used=90),
            Request(id="x", kind="event", account="ghost", service="sms", ts_ms=TS, used=1),
            Request(id="u", kind="update", account="p", service="voice", ts_ms=TS,
                    session="gone", seq=3, used=30, destination="4917612345")]


def _records_now() -> dict[str, bytes]:
    cc = compile_catalog(parse_catalog(CATALOG_A))
    accounts = {"a": Account(id="a", plan="PREPAID_S", balance=10_000_000),
                "p": Account(id="p", plan="PREPAID_S", balance=123_456)}
    outs, _ = decide_batch(_requests(), accounts, FixedCatalogs(cc), TS)
    _, _, huge = load(HUGE_TEXT)
    outs += decide_batch([Request(id="h", kind="event", account="a", service="sms", ts_ms=TS,
                                  used=10_000)],
                         {"a": Account(id="a", plan="PREPAID_S", balance=10_000_000)}, huge,
                         TS)[0]
    return {o.request.id: encode_record(o.record()) for o in outs}


def test_the_same_requests_store_the_same_bytes_as_before():
    assert _records_now() == OLD


def test_old_records_read_as_their_typed_outputs_and_format_back_the_same():
    for rid, blob in OLD.items():
        stored = read_record(blob)
        assert stored.wire == decode_record(blob)
        again = {"decision": decision_wire(stored.decision),
                 "charge": None if stored.charge is None else charge_wire(stored.charge)}
        assert again == stored.wire and encode_record(again) == blob, rid
    e1 = read_record(OLD["e1"])
    assert (e1.decision.result, e1.decision.balance, e1.decision.charged) == (
        Result.SUCCESS, 9_820_000, 180_000)
    assert e1.charge is not None and (e1.charge.ts_ms, e1.charge.cost, e1.charge.units) == (
        TS + 250, 180_000, 2)
    u = read_record(OLD["u"])  # a partial take: more places than the tariff's four
    assert u.decision.result is Result.SESSION_UNKNOWN and u.decision.charged == 123_456
    assert u.charge is not None and (u.charge.cost, u.charge.uncharged) == (123_456, 26_544)
    x = read_record(OLD["x"])
    assert (x.decision.result, x.decision.balance, x.charge) == (Result.USER_UNKNOWN, None, None)
    h = read_record(OLD["h"])
    assert h.decision.result is Result.RATING_FAILED and h.decision.detail is not None


def test_a_redis_holding_old_records_replays_them_unchanged(rig):
    r = rig(accounts="[{id: a, plan: PREPAID_S, balance: '10.00'}]")
    for rid, blob in OLD.items():
        account = decode_record(blob)["decision"]["account"]
        r.client.set(r.store.keys.idem(account, rid), blob)
    before = r.raw("a")
    eng = Engine(r.charger)
    payloads = [orjson.dumps(req(id=q.id, kind=q.kind, account=q.account, service=q.service,
                                 used=q.used, **({"session": q.session, "seq": q.seq}
                                                 if q.session else {})))
                for q in _requests()]
    payloads.append(orjson.dumps(req(id="h", kind="event", account="a", service="sms",
                                     used=10_000)))
    outputs = eng.process(payloads)
    decisions = [o for o in outputs if o.kind == "decision"]
    charges = [o for o in outputs if o.kind == "charge"]
    assert [o.kind for o in outputs if o.kind == "reject"] == []
    assert len(decisions) == len(OLD)
    for out in decisions:
        doc = orjson.loads(out.value)
        first = decode_record(OLD[doc["id"]])
        # the decision as first emitted, field for field and byte for byte, latency aside
        assert out.value == orjson.dumps({**first["decision"], "latency_us": doc["latency_us"]})
    assert [orjson.loads(c.value)["id"] for c in charges] == ["e1", "s:1", "u"]
    for c in charges:
        first = decode_record(OLD[orjson.loads(c.value)["id"]])
        assert c.value == orjson.dumps(first["charge"])
    assert r.raw("a") == before  # replays change nothing
    assert eng.counters.results == {"SUCCESS": 3, "USER_UNKNOWN": 1, "SESSION_UNKNOWN": 1,
                                    "RATING_FAILED": 1}
