"""Administration of the balances in Redis: provisioning, top-ups and inspection.

``Administration`` is the part of ``BalanceStore`` (balances/store.py) the CLI, the account
API, the demo and the tests use around the engine, never per request: create and update
accounts (``upsert_accounts``, with the identity index), credit or debit them idempotently
(``topup``, ``lua/topup.lua``), and read one account's state, attributes and ledger.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack
import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot

from balances.accounts import AccountSpec, account_attributes
from balances.codec import Keys
from balances.redis_errors import store_errors
from balances.topups import MAX_ID_RETENTION_S, Topup, check_topup_id, decode_reply
from charging.decide import BALANCE_LIMIT
from charging.state import Account


def ledger_reconciles(entries: Sequence[dict], balance: int) -> bool:
    """True when ledger ``entries`` (oldest first) account for ``balance`` exactly: the
    balance before the oldest kept entry plus every delta since (the whole ledger when
    nothing was trimmed, where that opening balance is 0)."""
    if not entries:
        return False
    opening = entries[0]["balance"] - entries[0]["delta"]
    return opening + sum(e["delta"] for e in entries) == balance


class Administration:
    """Provisioning, top-ups and inspection: mixed into ``BalanceStore``, which sets the
    attributes below (and gives ``load``, which ``view`` reads through)."""

    r: redis.Redis | RedisCluster
    cluster: bool
    keys: Keys
    ledger_retention_s: int
    _topup: Script
    _upsert: Script

    def upsert_accounts(self, specs: Sequence[AccountSpec], actor: str = "cli"
                        ) -> tuple[int, int]:
        """Create new accounts (with an ``open`` ledger entry) and update existing ones'
        plan, status, allow_negative and the attributes given; returns (created, updated).
        Every account written gets an outbox entry (its attributes, its opening).

        One atomic script on a single Redis, the identity index (msisdn, imsi) included; on
        a cluster one per slot, and the index after it, one key at a time (the file was
        fully validated before, so only a server failure can leave it half-applied there).
        """
        rows = [[s.id, s.plan, str(s.balance), s.status, "1" if s.allow_negative else "0",
                 account_attributes(s)] for s in specs]
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(specs):
            slot = key_slot(self.keys.account(s.id).encode()) if self.cluster else 0
            groups.setdefault(slot, []).append(i)
        created = updated = 0
        with store_errors("cannot write accounts to Redis"):
            for idx in groups.values():
                first = specs[idx[0]].id
                keys = [k for i in idx for k in (self.keys.account(specs[i].id),
                                                 self.keys.ledger(specs[i].id))]
                c, u = self._upsert(keys=keys, args=[
                    msgpack.packb([rows[i] for i in idx], use_bin_type=False),
                    self.keys.outbox(first), actor, self.keys.prefix,
                    "0" if self.cluster else "1"])
                created += c
                updated += u
            if self.cluster:
                self._index_identities(specs)
        return created, updated

    def _index_identities(self, specs: Sequence[AccountSpec]) -> None:
        """On a cluster: the msisdn and imsi index keys (each in its own slot)."""
        pipe = self.r.pipeline(transaction=False)
        for s in specs:
            for kind in ("msisdn", "imsi"):
                value = getattr(s, kind)
                if value is not None:
                    pipe.set(self.keys.identity(kind, value), s.id)
        pipe.execute()

    def attributes(self, account: str) -> dict[str, str]:
        """An account's attributes (name, country, vat_id, customer, msisdn, imsi)."""
        with store_errors("cannot read an account from Redis"):
            raw = self.r.hgetall(self.keys.account(account))
        return {k.decode()[2:]: v.decode() for k, v in raw.items() if k.startswith(b"a:")}

    def view(self, account: str) -> Account | None:
        """One account's current state (``chargeflow balance``)."""
        return self.load([account])[0][account]  # type: ignore[attr-defined]

    def topup(self, account: str, micros: int, *, topup_id: str | None = None,
              reason: str = "topup", id_retention_s: int | None = None,
              actor: str = "cli", note: str = "") -> Topup:
        """Credit an account (debit with a negative amount), ledgered; idempotent by id.

        A top-up id is remembered ``id_retention_s`` (0: for ever; by default as long as the
        ledger keeps entries, ``ledger_retention_s``, 90 days), not the requests' retention:
        a payment id may come again long after a request id would. It is remembered with
        its amount: the same id with another amount is a ``conflict``, not a replay. The
        ledger entry names the ``actor`` (an API key id, ``cli``) and ``note``; it reaches
        the archive's outbox in the same script.

        Returns a ``Topup`` (``balances.topups`` says what each status means); nothing is
        written unless its status is ``ok``. ValueError for an id or a retention out of
        range (checked before anything is sent).
        """
        check_topup_id(topup_id)
        if abs(micros) > BALANCE_LIMIT:  # the script's Lua numbers would round it
            return Topup("limit")
        ttl = self.ledger_retention_s if id_retention_s is None else id_retention_s
        if type(ttl) is not int or not 0 <= ttl <= MAX_ID_RETENTION_S:
            # checked here: the script's last write (SET EX) would refuse it after the others
            raise ValueError(f"a top-up id's retention must be whole seconds from 0 (for ever) "
                             f"to {MAX_ID_RETENTION_S:,}, got {ttl!r}")
        keys = [self.keys.account(account), self.keys.ledger(account),
                self.keys.topup(account, topup_id or ""), self.keys.outbox(account)]
        with store_errors("cannot top up in Redis"):
            reply = self._topup(keys=keys, args=[micros, reason, topup_id or "",
                                                 ttl, BALANCE_LIMIT,
                                                 "1" if topup_id else "0", actor, note,
                                                 account])
        return decode_reply(reply)

    def ledger(self, account: str) -> list[dict]:
        """The account's ledger entries, oldest first, with integer micros."""
        with store_errors(f"cannot read the ledger of {account!r}"):
            rows = self.r.xrange(self.keys.ledger(account))
        out = []
        for entry_id, fields in rows:
            row = {k.decode(): v.decode() for k, v in fields.items()}
            row["entry"] = entry_id.decode()
            row["time_ms"] = int(row["entry"].split("-")[0])
            for name in ("delta", "balance"):
                if name in row:
                    row[name] = int(row[name])
            out.append(row)
        return out

    def reconciles(self, account: str, balance: int) -> bool:
        """True when the account's ledger accounts for ``balance`` exactly."""
        return ledger_reconciles(self.ledger(account), balance)
