"""What the notifier observes in one outbox entry (docs/billing.md; pure: no Redis).

Every script that changes an account appends, atomically with the change, one entry to the
outbox stream. The notifier reads two kinds of observations from them:

* **balance changes made outside the engine** (always): each top-up or adjustment ledger
  entry (``topup.lua``) becomes a decision with the balance it left, its id the ledger
  entry's;
* **the engine's charging** (``--source outbox``): each charge record ``c1``, ``c2``, ...
  is the request's idempotency record — its CONTRACT §3.1 decision (with the balance after
  it) and §3.2 charge, exactly what a Kafka engine writes to ``chargeflow.decisions`` and
  ``chargeflow.charges`` — and each final grant that charged nothing (``final_grants`` of
  the entry's ``r``: ``[id, granted, balance micros, after]``, put back after the first
  ``after`` charges) becomes its decision. Replays write nothing to the outbox, so none is
  seen twice by the engine's doing; what the outbox lacks are decisions that neither
  charged nor granted finally (refusals, reservations), which move no balance.
"""

from __future__ import annotations

import logging

import msgpack

from balances.codec import decode_record
from billing.outbox import OutboxError, decode_entry
from charging.records import format_balance

log = logging.getLogger("chargeflow.notify")

DECISION, CHARGE = "decision", "charge"
#: the ledger reasons of balance changes made outside the engine (balances/lua/topup.lua)
OUTSIDE_REASONS = ("topup", "adjustment")


def observations(stream_id: bytes | str, fields: dict[bytes, bytes], *, engine: bool
                 ) -> list[tuple[str, dict]]:
    """(DECISION or CHARGE, the engine output's document) of one entry, in the order they
    were decided; the engine's own only with ``engine``. ``OutboxError`` when the entry is
    not what the scripts write."""
    entry = decode_entry(stream_id, fields)
    out: list[tuple[str, dict]] = [
        (DECISION, {"id": row["entry_id"], "account": row["account"],
                    "balance": format_balance(row["balance"]), "result": "SUCCESS"})
        for kind, row in entry.records
        if kind == "ledger" and row["reason"] in OUTSIDE_REASONS]
    if not engine:
        return out
    finals = _final_grants(entry.account, entry.stream_id, fields[b"r"])
    k = 1
    while (blob := fields.get(b"c%d" % k)) is not None:
        out += [(DECISION, doc) for after, doc in finals if after == k - 1]
        try:
            record = decode_record(blob)
        except ValueError as exc:  # decode_entry read it: not expected
            raise OutboxError(f"charge record c{k}: {exc}") from exc
        out.append((DECISION, record["decision"]))
        if record["charge"] is not None:
            out.append((CHARGE, record["charge"]))
        k += 1
    out += [(DECISION, doc) for after, doc in finals if after >= k - 1]
    return out


def _final_grants(account: str, stream_id: str, r: bytes) -> list[tuple[int, dict]]:
    doc = msgpack.unpackb(r, raw=False)  # decode_entry unpacked it already: it is a map
    out = []
    for g in doc.get("final_grants") or []:
        try:
            rid, granted, balance, after = g
            item = (int(after), {"id": str(rid), "account": account, "result": "SUCCESS",
                                 "final": True, "granted": int(granted),
                                 "balance": format_balance(int(balance))})
        except (TypeError, ValueError):
            log.warning("outbox entry %s: final grant %r is unreadable; skipped",
                        stream_id, g)
            continue
        out.append(item)
    return out
