"""What the notifier reads from one outbox entry (``notifications.outbox``): top-ups and
adjustments always; with the engine's charging, each charge record's decision and charge
and the final grants that charged nothing, back in the order they were decided."""

from __future__ import annotations

import msgpack
import pytest

from balances.codec import encode_record
from billing.outbox import OutboxError
from notifications.outbox import CHARGE, DECISION, observations


def record(rid: str, balance: str, *, final: bool = False) -> bytes:
    decision = {"id": rid, "kind": "update", "account": "a1", "service": "voice",
                "session": "s1", "seq": 1, "result": "SUCCESS", "granted": 60,
                "validity_s": 600, "final": final, "balance": balance, "charged": "0.10"}
    charge = {"id": rid, "account": "a1", "service": "voice", "session": "s1", "seq": 1,
              "ts": "2026-12-01T10:00:00+01:00", "units": 60, "rated_units": 60,
              "allowance_units": 0, "cost": "0.10", "currency": "EUR", "tariff": "VOICE",
              "rate": "r1", "catalog_version": "v1", "balance": balance, "uncharged": "0.00"}
    return encode_record({"decision": decision, "charge": charge})


def entry(*charges: bytes, ledger=(), finals=()) -> dict[bytes, bytes]:
    r = {"account": "a1", "ledger": [list(x) for x in ledger]}
    if finals:
        r["final_grants"] = [list(g) for g in finals]
    fields = {b"r": msgpack.packb(r)}
    fields.update({b"c%d" % k: c for k, c in enumerate(charges, 1)})
    return fields


def test_final_grants_go_back_between_the_charges_they_came_between():
    fields = entry(record("u1", "4.90"), record("u2", "4.80"),
                   finals=[("i0", "30", "4950000", "0"), ("i1", "60", "4900000", "1")])
    seen = observations("1-0", fields, engine=True)
    assert [(kind, doc["id"]) for kind, doc in seen] == [
        (DECISION, "i0"), (DECISION, "u1"), (CHARGE, "u1"), (DECISION, "i1"),
        (DECISION, "u2"), (CHARGE, "u2")]
    i1 = seen[3][1]
    assert (i1["final"], i1["granted"], i1["balance"], i1["result"]) == (
        True, 60, "4.90", "SUCCESS")
    assert observations("1-0", fields, engine=False) == []  # the engine's: only if asked


def test_top_ups_are_read_in_either_mode_and_junk_is_refused():
    top = ("id", "pay-1", "delta", "1000000", "balance", "5900000", "reason", "topup",
           "actor", "k1")
    for engine in (False, True):
        assert observations("1-0", entry(ledger=[top]), engine=engine) == [
            (DECISION, {"id": "pay-1", "account": "a1", "balance": "5.90",
                        "result": "SUCCESS"})]
    bad = entry(finals=[("i0", "many", "1", "0")])  # an unreadable grant is skipped
    assert observations("1-0", bad, engine=True) == []
    with pytest.raises(OutboxError):
        observations("1-0", {b"r": b"\xc1"}, engine=True)
