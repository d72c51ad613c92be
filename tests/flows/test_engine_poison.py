"""``Engine.process`` never raises for what a message holds (CONTRACT §2: the engine never
stops on bad input), on a real charger and the shared Redis (the ``rig`` fixture).

A poison message (an ``id`` nested 1,000 deep, a key given twice, a map in ``kind``) gets its
reject; an exception met while reading one message or serialising its outputs becomes an
``INTERNAL_ERROR`` reject of that message; every other message of the batch is decided as
if the poison were not there. A hypothesis test mixes fuzzed payloads into valid batches.
"""

from __future__ import annotations

import dataclasses
import itertools

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charging.decide import Outcome
from charging.requests import decode, parse
from flows.engine import Engine, Output
from tests.charging.poison_payloads import engine_recursion_limit, payloads, valid_request

ACCOUNTS = "\n".join(orjson.dumps({"id": f"acct{i}", "plan": "PREPAID_S",
                                   "balance": "1000.00"}).decode() for i in range(3))
TUE = 1_795_510_800_000


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def with_field(req: dict, field: str, raw: bytes) -> bytes:
    body = orjson.dumps({k: v for k, v in req.items() if k != field})[:-1]
    return body + b',"' + field.encode() + b'":' + raw + b"}"


def kinds(outputs: list[Output]) -> dict[str, list[dict]]:
    # a request with reply_to also gets its decision on the gateway's reply topic ("reply")
    out: dict[str, list[dict]] = {"decision": [], "charge": [], "reject": [], "reply": []}
    for o in outputs:
        out[o.kind].append(orjson.loads(o.value))
    return out


@pytest.fixture
def engine_on(rig):
    """``engine_on(sub=None, **engine_kwargs)``: an Engine over a fresh rig with three
    accounts (``sub``: a namespace of its own under the test's prefix)."""
    def make(sub: str | None = None, **kw) -> tuple[Engine, object]:
        r = rig(accounts=ACCOUNTS, sub=sub)
        return Engine(r.charger, **kw), r
    return make


POISON = {
    "id-nested-1000": (with_field(valid_request(0), "id", nested(1000)), "MALFORMED", "id"),
    "kind-nested-1000": (with_field(valid_request(0), "kind", nested(1000)), "MALFORMED",
                         "kind"),
    "used-nested-1022": (with_field(valid_request(0), "used", nested(1022)), "MALFORMED",
                         "used"),
    "ts-nested-1000": (with_field(valid_request(0), "ts", b'{"a":' * 999 + b"1" + b"}" * 999),
                       "MALFORMED", "ts"),
    "account-twice": (orjson.dumps(valid_request(0))[:-1] + b',"account":"acct2"}',
                      "MALFORMED", "account"),
    "huge-number": (with_field(valid_request(0), "used", b"9" * 5000), "MALFORMED", None),
}


@pytest.mark.parametrize("name", POISON)
def test_a_poison_message_is_rejected_and_its_batch_decided(engine_on, name):
    payload, code, field = POISON[name]
    eng, r = engine_on()
    before = r.store.view("acct2").balance
    batch = [orjson.dumps(valid_request(1)), payload, orjson.dumps(valid_request(2))]
    out = kinds(eng.process(batch))
    assert [d["id"] for d in out["decision"]] == ["ok-1", "ok-2"]
    assert {d["result"] for d in out["decision"]} == {"SUCCESS"}
    (rej,) = out["reject"]
    assert rej["error"] == code and rej["raw"] == payload.decode()
    if field is not None:
        assert f"field '{field}'" in rej["detail"], rej
    assert r.store.view("acct2").balance == before  # "account": "acct2" second charged no one


@pytest.mark.parametrize("field", ["id", "kind", "used", "ts"])
def test_a_msgpack_map_nested_1000_deep_is_rejected(engine_on, field):
    eng, _ = engine_on(fmt="msgpack")
    rest = {k: v for k, v in valid_request(0).items() if k != field}
    poison = (bytes([0x80 | (len(rest) + 1)])
              + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in rest.items())
              + msgpack.packb(field) + b"\x81\xa1k" * 1000 + b"\xc0")
    out = kinds(eng.process([msgpack.packb(valid_request(1)), poison,
                             msgpack.packb(valid_request(2))]))
    assert [d["id"] for d in out["decision"]] == ["ok-1", "ok-2"]
    assert [(r["error"], f"field '{field}'" in r["detail"]) for r in out["reject"]] == [
        ("MALFORMED", True)]


def test_an_exception_while_reading_one_message_rejects_only_it(engine_on, caplog):
    def read(payload):
        if payload == b"boom":
            raise RecursionError("maximum recursion depth exceeded")
        if payload == b"odd":
            raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")
        return parse(decode(payload))

    eng, _ = engine_on(read=read)
    out = kinds(eng.process([orjson.dumps(valid_request(1)), b"boom", b"odd",
                             orjson.dumps(valid_request(2))]))
    assert [d["id"] for d in out["decision"]] == ["ok-1", "ok-2"]
    assert [(r["error"], r["raw"], r["id"]) for r in out["reject"]] == [
        ("INTERNAL_ERROR", "boom", None), ("INTERNAL_ERROR", "odd", None)]
    assert "RecursionError" in out["reject"][0]["detail"]
    assert "nothing was charged" in out["reject"][0]["detail"]
    assert eng.counters.reject_codes == {"INTERNAL_ERROR": 2}
    assert "reading message 1 of a batch raised" in caplog.text


def test_a_payload_of_the_wrong_type_is_rejected_not_raised(engine_on):
    eng, _ = engine_on()
    out = kinds(eng.process([orjson.dumps(valid_request(1)), None, 7,  # type: ignore[list-item]
                             orjson.dumps(valid_request(2))]))
    assert [d["id"] for d in out["decision"]] == ["ok-1", "ok-2"]
    assert [r["error"] for r in out["reject"]] == ["MALFORMED", "MALFORMED"]


class UnwritableOutputs:
    """The real charger, but the decision of request ``ok-bad`` holds an integer orjson
    cannot write (past 64 bits): serialising its outputs raises."""

    def __init__(self, charger):
        self.charger = charger

    def charge(self, requests):
        outcomes = self.charger.charge(requests)
        return [Outcome(o.request, dataclasses.replace(o.decision, granted=2**70), o.charge,
                        o.ledger, o.replay) if o.request.id == "ok-bad" else o
                for o in outcomes]


def test_outputs_that_cannot_be_serialised_reject_only_their_request(rig, caplog):
    r = rig(accounts=ACCOUNTS)
    eng = Engine(UnwritableOutputs(r.charger))
    bad = dict(valid_request(0), id="ok-bad")
    out = kinds(eng.process([orjson.dumps(valid_request(1)), orjson.dumps(bad),
                             orjson.dumps(valid_request(2))]))
    assert [d["id"] for d in out["decision"]] == ["ok-1", "ok-2"]
    assert [c["id"] for c in out["charge"]] == ["ok-1", "ok-2"]
    (rej,) = out["reject"]
    assert (rej["error"], rej["id"]) == ("INTERNAL_ERROR", "ok-bad")
    assert "charged as decided, but its outputs could not be serialised" in rej["detail"]
    assert eng.counters.requests == 2
    assert "ok-bad" in caplog.text


_ids = itertools.count(1000)


@pytest.fixture
def fuzz_engines(engine_on) -> dict[str, Engine]:
    """One engine per format for all of a fuzz test's examples (each on its own rig)."""
    return {"json": engine_on()[0], "msgpack": engine_on(sub="mp", fmt="msgpack")[0]}


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(st.lists(payloads(), min_size=1, max_size=8), st.integers(0, 8),
       st.sampled_from(["json", "msgpack"]))
def test_fuzzed_payloads_among_valid_ones_each_get_an_output(fuzz_engines, fuzzed, n_valid,
                                                             fmt):
    """Every payload gets exactly one decision or reject, and every valid request its
    decision, whatever the fuzzed payloads beside them hold."""
    eng = fuzz_engines[fmt]
    encode = orjson.dumps if fmt == "json" else msgpack.packb
    valid = [dict(valid_request(next(_ids), account=f"acct{i % 3}")) for i in range(n_valid)]
    batch: list[bytes | str] = [p for p, f in fuzzed if f == fmt] or [b"\xc1"]
    for i, req in enumerate(valid):
        batch.insert((i * 7) % (len(batch) + 1), encode(req))
    with engine_recursion_limit():
        out = kinds(eng.process(batch))
    assert len(out["decision"]) + len(out["reject"]) == len(batch)
    assert all(r in out["decision"] for r in out["reply"])  # a reply is its decision again
    decided = {d["id"]: d["result"] for d in out["decision"]}
    assert all(decided.get(r["id"]) == "SUCCESS" for r in valid), (valid, out)
    for rej in out["reject"]:
        assert rej["error"] != "INTERNAL_ERROR", rej  # every fuzzed payload has its own code

