"""The archive's pure parts: outbox entries decoded into records (billing.outbox) and the
hash chain's canonical form (billing.chain). The entries are built as the Lua scripts
build them (cmsgpack of the same shapes) and the charge records with the store's own
``encode_record``."""

from __future__ import annotations

from datetime import UTC, datetime

import msgpack
import pytest

from balances.codec import encode_record, ledger_fields
from billing.chain import COLUMNS, ZERO, canonical, link
from billing.outbox import OutboxError, decode_entry, id_key, micros, stream_time
from charging.records import CHARGE_FIELDS, DECISION_FIELDS

SID = b"1795856400123-4"
AT = datetime(2026, 11, 28, 9, 0, 0, 123000, tzinfo=UTC)


def charge(**kw) -> dict:
    c = {"id": "r1", "account": "alice", "service": "voice", "session": "s1", "seq": 2,
         "ts": "2026-11-24T09:00:00.000Z", "units": 61, "rated_units": 120,
         "allowance_units": 0, "cost": "0.2500", "currency": "EUR", "tariff": "VOICE_STD",
         "rate": "v-peak", "catalog_version": "test-a", "balance": "9.7500", "uncharged": "0"}
    c.update(kw)
    return c


def record(c: dict) -> bytes:
    decision = dict.fromkeys(DECISION_FIELDS)
    decision.update(id=c["id"], kind="update", account=c["account"], service=c["service"],
                    session=c["session"], seq=c["seq"], result="SUCCESS", granted=60,
                    validity_s=300, final=False, balance=c["balance"], charged=c["cost"])
    return encode_record({"decision": decision, "charge": dict(zip(CHARGE_FIELDS,
                                                                  map(c.get, CHARGE_FIELDS)))})


def entry(r: dict, *charges: bytes) -> dict[bytes, bytes]:
    fields = {b"r": msgpack.packb(r)}
    fields.update({b"c%d" % k: blob for k, blob in enumerate(charges, 1)})
    return fields


def test_a_charging_write_gives_its_ledger_entries_then_its_charges():
    ledger = [ledger_fields({"id": "r1", "delta": -250000, "balance": 9750000,
                             "reason": "update", "catalog_version": "test-a"})]
    e = decode_entry(SID, entry({"account": "alice", "ledger": ledger}, record(charge())))
    assert e.ts == AT and e.attrs is None and not e.opened
    assert [k for k, _ in e.records] == ["ledger", "charge"]
    (_, led), (_, ch) = e.records
    assert led == {"account": "alice", "entry_id": "r1", "ts": AT, "reason": "update",
                   "delta": -250000, "balance": 9750000, "released": None, "actor": "engine",
                   "note": None, "catalog_version": "test-a", "stream_id": SID.decode()}
    assert ch["ts"] == datetime(2026, 11, 24, 9, tzinfo=UTC) and ch["charged_at"] == AT
    assert (ch["cost"], ch["balance"], ch["uncharged"]) == (250000, 9750000, 0)
    assert (ch["session"], ch["seq"], ch["rate"], ch["units"]) == ("s1", 2, "v-peak", 61)


def test_an_account_load_gives_its_attributes_and_its_opening():
    opened = ["id", "open", "delta", "10000000", "balance", "10000000", "reason", "open",
              "actor", "cli"]
    attrs = {"plan": "PREPAID_S", "status": "active", "allow_negative": False,
             "country": "DE", "customer": "business", "vat_id": "DE136695976"}
    e = decode_entry(SID, entry({"account": "alice", "ledger": [opened],
                                 "account_attrs": attrs}))
    assert e.opened and e.attrs == attrs
    assert [k for k, _ in e.records] == ["account", "ledger"]
    assert e.records[0][1]["opened"] is True and e.records[1][1]["actor"] == "cli"
    # an update of an existing account: no ledger entry (Lua packs the empty table as a map)
    e = decode_entry(SID, entry({"account": "alice", "ledger": {}, "account_attrs": attrs}))
    assert not e.opened and [k for k, _ in e.records] == ["account"]


def test_a_top_up_keeps_its_actor_and_note():
    fields = ["id", "pay-1", "delta", "2500000", "balance", "3500000", "reason", "topup",
              "actor", "key-42", "note", "card payment"]
    (kind, row), = decode_entry(SID, entry({"account": "erin", "ledger": [fields]})).records
    assert kind == "ledger" and (row["actor"], row["note"], row["delta"]) == (
        "key-42", "card payment", 2_500_000)


@pytest.mark.parametrize("fields, why", [
    ({b"x": b"1"}, "no field 'r'"),
    ({b"r": b"\xc1"}, "not MessagePack"),
    ({b"r": msgpack.packb([1, 2])}, "not a map"),
    ({b"r": msgpack.packb({"account": ""})}, "empty account"),
    ({b"r": msgpack.packb({"account": "a", "ledger": [["id", "x", "delta"]]})},
     "flat list"),
    ({b"r": msgpack.packb({"account": "a", "ledger": [["id", "x", "delta", "1.5",
                                                       "balance", "0", "reason", "r"]]})},
     "not an integer"),
    ({b"r": msgpack.packb({"account": "a", "ledger": [["id", "x", "delta", "1",
                                                       "balance", "9" * 20, "reason", "r"]]})},
     "64 bits"),
    (entry({"account": "bob"}, record(charge())), "of account 'alice'"),
    (entry({"account": "alice"}, b"junk"), "unreadable charge record"),
    (entry({"account": "alice"}, record(charge(cost="0.1234567"))), "whole micros"),
    (entry({"account": "alice"}, record(charge(ts="2026-11-24T09:00:00"))), "offset"),
    ({**entry({"account": "alice"}, record(charge())), b"c3": b""}, "unexpected fields"),
])
def test_what_the_scripts_do_not_write_is_refused_with_the_reason(fields, why):
    with pytest.raises(OutboxError, match=why):
        decode_entry(SID, fields)


def test_amounts_and_stream_ids():
    assert [micros(t, "x") for t in ("0", "-1.50", "12.3456", "0.000001")] == [
        0, -1_500_000, 12_345_600, 1]
    assert stream_time("0-1") == datetime(1970, 1, 1, tzinfo=UTC)
    assert id_key("1795856400123-4") < id_key("1795856400123-10") < id_key("1795856400124-0")
    with pytest.raises(OutboxError):
        stream_time("12")


ROW = {"id": "r1", "account": "alice", "chain_seq": 3, "ts": AT, "service": "sms",
       "session": None, "seq": None, "charged_at": AT, "units": 1, "rated_units": 1,
       "allowance_units": 0, "cost": 90000, "uncharged": 0, "currency": "EUR",
       "tariff": "SMS_STD", "rate": "sms", "catalog_version": "v", "balance": 1,
       "stream_id": "1-0", "late": False, "invoice_id": None, "archived_at": AT}


def test_the_canonical_form_is_sorted_json_with_times_in_microseconds():
    text = canonical("charge", ROW)
    assert text.startswith(b'{"account":"alice","allowance_units":0,"balance":1,')
    assert b'"kind":"charge"' in text and b'"ts":1795856400123000' in text
    assert b"late" not in text and b"archived_at" not in text  # billing's, not hashed


@pytest.mark.parametrize("column", COLUMNS["charge"])
def test_any_archived_column_changed_changes_the_hash(column):
    before = link(ZERO, "charge", ROW)
    value = ROW[column]
    changed = {**ROW, column: (value + 1 if isinstance(value, int) else
                               AT.replace(microsecond=1) if isinstance(value, datetime) else
                               "x" if value is None else value + "x")}
    assert link(ZERO, "charge", changed) != before
    assert link(b"\x01" * 32, "charge", ROW) != before  # and the previous hash is in it


def test_the_quick_and_the_checked_reading_of_a_charge_agree():
    from balances.codec import decode_record
    from billing.outbox import _charge_row, _checked_charge_row

    for c in (charge(), charge(session=None, seq=None, uncharged="0.0100", cost="0")):
        blob = record(c)
        rec = decode_record(blob)
        assert _charge_row("alice", blob, AT, "1-0") == _checked_charge_row(
            "alice", rec, rec["charge"], AT, "1-0")
