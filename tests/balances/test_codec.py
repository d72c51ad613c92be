"""How the store encodes what it keeps per request id (pure: no Redis)."""

from __future__ import annotations

import msgpack
import orjson
import pytest

from balances.codec import decode_record, encode_record
from charging.catalog import parse_catalog
from charging.compiler import compile_catalog
from charging.decide import FixedCatalogs, decide_batch
from charging.records import CHARGE_FIELDS, DECISION_FIELDS
from charging.requests import Request, parse_rfc3339
from charging.state import Account
from tests.conftest import CATALOG_A, TUE_PEAK

TS = parse_rfc3339(TUE_PEAK)


def outcomes():
    cc = compile_catalog(parse_catalog(CATALOG_A))
    accounts = {"a": Account(id="a", plan="PREPAID_S", balance=10_000_000)}
    reqs = [Request(id="i", kind="initial", account="a", service="voice", ts_ms=TS,
                    session="s", seq=0, destination="4917612345"),
            Request(id="t", kind="terminate", account="a", service="voice", ts_ms=TS,
                    session="s", seq=1, used=75),
            Request(id="x", kind="event", account="nobody", service="sms", ts_ms=TS,
                    used=1)]
    outs, _ = decide_batch(reqs, accounts, FixedCatalogs(cc), TS)
    return outs


def test_records_round_trip_in_field_order_and_are_smaller_than_json():
    outs = outcomes()
    assert any(o.charge for o in outs) and any(o.charge is None for o in outs)
    for out in outs:
        wire = out.record()
        assert tuple(wire["decision"]) == DECISION_FIELDS
        assert wire["charge"] is None or tuple(wire["charge"]) == CHARGE_FIELDS
        blob = encode_record(out.record())
        assert decode_record(blob) == out.record()
        assert len(blob) < len(orjson.dumps(out.record())) / 2


def test_a_record_leaves_out_the_charge_fields_that_repeat_the_decision():
    out = outcomes()[1]
    wire = out.record()
    values, charge = msgpack.unpackb(encode_record(wire))
    assert values == list(wire["decision"].values())
    assert len(charge) == len(CHARGE_FIELDS) - 7
    assert charge[0] == wire["charge"]["ts"] and wire["charge"]["ts"] not in values


def test_a_charge_that_differs_from_its_decision_is_kept_whole():
    record = outcomes()[1].record()
    record["charge"] = {**record["charge"], "balance": "1.00"}
    values, charge = msgpack.unpackb(encode_record(record))
    assert charge == list(record["charge"].values())
    assert decode_record(encode_record(record)) == record


def test_records_of_another_shape_keep_their_field_names():
    record = {"decision": {"id": "r", "result": "SUCCESS"}, "charge": None}
    blob = encode_record(record)
    assert isinstance(msgpack.unpackb(blob), dict)
    assert decode_record(blob) == record


def test_records_stored_by_earlier_versions_still_read():
    record = outcomes()[1].record()
    assert decode_record(orjson.dumps(record)) == record  # JSON
    whole = msgpack.packb([list(record["decision"].values()), list(record["charge"].values())])
    assert decode_record(whole) == record  # positional, the charge whole


@pytest.mark.parametrize("record", [
    [["r1", "event", "a", "sms", None, None, 7, 0, 0, False, "1.00", "0.00"], None],  # result 7
    {"decision": "SUCCESS", "charge": None},
    {"decision": {"result": "SUCCESS"}, "charge": "0.10"},
])
def test_a_record_that_is_not_one_is_refused_not_replayed(record):
    with pytest.raises(ValueError, match="unreadable idempotency record"):
        decode_record(msgpack.packb(record))
