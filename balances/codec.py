"""Redis key names and the account hash encoding.

Every key of one account carries the account as its hash tag, ``{prefix}:{<account>}:...``,
so all of them live in one Redis Cluster slot and one script can change them atomically:

    {p}:{a}:acct          hash   plan, status, neg, bal, res, ver, b:<service>, s:<session>,
                                 a:<attribute> (name, country, vat_id, customer, msisdn, imsi),
                                 i:<request id> the decision (and charge) returned for the
                                 request, as ``encode_record`` packs them, after the time it
                                 was decided (``STAMP_BYTES``); kept the idempotency retention
                                 and trimmed by later writes (``trimmed``)
    {p}:id:msisdn:<digits>, {p}:id:imsi:<digits>
                          string the account an identity names (gateway.identities)
    {p}:{a}:idem:<id>     string as ``i:<id>``, for a request naming an account that does
                                 not exist, which has no hash (expires after the retention;
                                 releases before 2026-12-03 kept every record so)
    {p}:{a}:topup:<id>    string the balance an idempotent top-up left (expires)
    {p}:{a}:ledger        stream one entry per balance change
    {p}:expiry:{<slot>}   zset   "<account>\\x1f<session>" scored by its release deadline (ms):
                                 on a cluster one per slot, so that it shares the slot of its
                                 accounts; on a single Redis one for all ({p}:expiry:{all})
    {p}:outbox:{<slot>}   stream one entry per account write that moved money, charged or
                                 changed an account's attributes, for the archive: field
                                 ``r``, MessagePack {account, ledger: [[field, value, ...]],
                                 account_attrs?}, and ``c1``, ``c2``, ... the idempotency
                                 record of each charge (``decode_record``)
                                 (per slot tag as the expiry index; docs/billing.md)

Money fields are decimal integers of micros; ``b:`` and ``s:`` fields are MessagePack.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import cache
from operator import itemgetter

import msgpack
import orjson
from redis.crc import key_slot

from charging.decide import Change, Outcome
from charging.errors import CorruptAccountError
from charging.records import CHARGE_FIELDS, DECISION_FIELDS, Result, Stored, stored_from_wire
from charging.state import Account, Bucket, Session

SEP = "\x1f"
SLOTS = 16384
#: Account versions are below this: the scripts' Lua numbers hold them, and their next
#: (``lua/write.lua``: max(version + 1, server time in µs)), exactly.
VERSION_LIMIT = 2**53 - 1


class Keys:
    def __init__(self, prefix: str = "cf", cluster: bool = False):
        self.prefix = prefix
        self.cluster = cluster

    def account(self, account: str) -> str:
        return f"{self.prefix}:{{{account}}}:acct"

    def idem(self, account: str, request_id: str) -> str:
        return f"{self.prefix}:{{{account}}}:idem:{request_id}"

    def topup(self, account: str, topup_id: str) -> str:
        return f"{self.prefix}:{{{account}}}:topup:{topup_id}"

    def ledger(self, account: str) -> str:
        return f"{self.prefix}:{{{account}}}:ledger"

    def expiry(self, account: str) -> str:
        if not self.cluster:
            return f"{self.prefix}:expiry:{{all}}"
        slot = key_slot(self.account(account).encode())
        return f"{self.prefix}:expiry:{{{slot_tag(slot)}}}"

    def outbox(self, account: str) -> str:
        """The outbox stream an account's writes append to (one per expiry-index tag: the
        account's slot on a cluster): what the archive reads (docs/billing.md)."""
        if not self.cluster:
            return f"{self.prefix}:outbox:{{all}}"
        slot = key_slot(self.account(account).encode())
        return f"{self.prefix}:outbox:{{{slot_tag(slot)}}}"

    def identity(self, kind: str, value: str) -> str:
        """The index key of an msisdn or imsi: the account it names."""
        return f"{self.prefix}:id:{kind}:{value}"

    def outbox_pattern(self) -> str:
        return f"{self.prefix}:outbox:{{*}}"

    def expiry_pattern(self) -> str:
        # account keys all start "{prefix}:{", so this matches expiry indexes only
        return f"{self.prefix}:expiry:{{*}}"


@cache
def _slot_tags() -> tuple[str, ...]:
    """A short hash tag for every cluster slot (found once by trying tags in order)."""
    tags: list[str | None] = [None] * SLOTS
    missing = SLOTS
    n = 0
    while missing:
        tag = f"x{n}"
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


def slot_tag(slot: int) -> str:
    return _slot_tags()[slot]


def session_member(account: str, session: str) -> str:
    return f"{account}{SEP}{session}"


def split_member(member: bytes | str) -> tuple[str, str]:
    text = member.decode() if isinstance(member, bytes) else member
    account, _, session = text.partition(SEP)
    return account, session


def encode_session(s: Session) -> bytes:
    return _pack([s.service, s.catalog_version, s.tariff, s.rate_id, s.chargeable, s.used,
                  s.granted, s.money_reserved, s.allowance_reserved, s.validity_s,
                  s.last_seen_ms, s.seq])


def decode_session(sid: str, blob: bytes) -> Session:
    (service, version, tariff, rate_id, chargeable, used, granted, money, alw, validity,
     last_seen, seq) = msgpack.unpackb(blob)
    return Session(id=sid, service=service, catalog_version=version, tariff=tariff,
                   rate_id=rate_id, chargeable=chargeable, used=used, granted=granted,
                   money_reserved=money, allowance_reserved=list(alw), validity_s=validity,
                   last_seen_ms=last_seen, seq=seq)


def encode_buckets(buckets: list[Bucket]) -> bytes:
    return _pack([[b.units, b.reserved, b.period] for b in buckets])


def decode_buckets(blob: bytes) -> list[Bucket]:
    return [Bucket(units=u, reserved=r, period=p) for u, r, p in msgpack.unpackb(blob)]


def changed_fields(acct: Account, sessions: set[str], buckets: set[str]
                   ) -> dict[str, bytes | str]:
    """The fields a charging write changes: money, the named allowances and sessions (plan,
    status and allow_negative change only through ``accounts load``; the version is the
    write script's, ``lua/write.lua``)."""
    fields: dict[str, bytes | str] = {"bal": str(acct.balance), "res": str(acct.reserved)}
    for service in buckets:
        if service in acct.allowances:
            fields[f"b:{service}"] = encode_buckets(acct.allowances[service])
    for sid in sessions:
        if sid in acct.sessions:
            fields[f"s:{sid}"] = encode_session(acct.sessions[sid])
    return fields


def decode_account(account: str, raw: dict | list) -> Account | None:
    """An ``Account`` from HGETALL (a dict, or the flat list a script returns); None if empty.
    Raises ``CorruptAccountError`` when a field is missing or unreadable: a guessed default
    (a balance of 0, version 0) would be written back, or conflict with every write."""
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2]))
    if not raw:
        return None
    fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}

    def text(name: str, default: str | None = None) -> str:
        v = fields.get(name)
        if v is None:
            if default is None:
                raise CorruptAccountError(account, f"field {name!r} is missing")
            return default
        return v.decode() if isinstance(v, bytes) else v

    name = ""
    records: list[tuple[bytes, str]] = []
    try:
        acct = Account(id=account, plan=text("plan"), balance=int(text("bal")),
                       status=text("status", "active"), allow_negative=text("neg", "0") == "1",
                       reserved=int(text("res", "0")), version=int(text("ver")))
        if not 0 <= acct.version < VERSION_LIMIT:
            raise ValueError(f"version {acct.version} is outside 0 to 2**53 - 2")
        for name, value in fields.items():
            if name.startswith("b:"):
                acct.allowances[name[2:]] = decode_buckets(value)
            elif name.startswith("s:"):
                acct.sessions[name[2:]] = decode_session(name[2:], value)
            elif name.startswith("i:"):
                records.append((value, name[2:]))
        if records:  # oldest first: their stamps are fixed-width big-endian, sorted as bytes
            records.sort(key=_stamp_of)
            acct.records = {rid: value for value, rid in records}
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        where = f"field {name!r}" if name else "a money or version field"
        raise CorruptAccountError(account, f"{where}: {exc!r}") from exc
    return acct


def encode_record(record: dict) -> bytes:
    """An idempotency record (``Outcome.record``) as MessagePack values in field order, the
    charge without the fields that repeat the decision's (id, account, service, session,
    seq, balance, and cost = charged), which Redis holds for the retention and writes to
    its AOF."""
    decision, charge = record["decision"], record["charge"]
    if decision.keys() != _DECISION_KEYS or (charge is not None
                                             and charge.keys() != _CHARGE_KEYS):
        return _pack(record)  # not the usual shape: keep the names
    # the fields are in order (``charging.records`` formats them so; checked here as a
    # set, and in tests/balances/test_codec.py as a sequence)
    values = list(decision.values())
    if charge is None:
        return _pack([values, None])
    if _charge_shared(charge) == _decision_shared(decision):
        return _pack([values, _charge_own(charge)])
    return _pack([values, list(charge.values())])  # not so today; then kept whole


_DECISION_KEYS = dict.fromkeys(DECISION_FIELDS).keys()
_CHARGE_KEYS = dict.fromkeys(CHARGE_FIELDS).keys()
#: charge fields that repeat a decision field: (charge field, decision field)
_SHARED = (("id", "id"), ("account", "account"), ("service", "service"),
           ("session", "session"), ("seq", "seq"), ("cost", "charged"),
           ("balance", "balance"))
_CHARGE_OWN = tuple(f for f in CHARGE_FIELDS if f not in dict(_SHARED))
_charge_shared = itemgetter(*(c for c, _ in _SHARED))
_decision_shared = itemgetter(*(d for _, d in _SHARED))
_charge_own = itemgetter(*_CHARGE_OWN)
#: a Packer per thread ident (engine workers are threads): a third cheaper than msgpack.packb,
#: which makes one per call. Not a threading.local: Bytewax's worker threads enter Python with
#: a fresh thread state on every call when there is more than one (flows.dataflow._ChargeStep)
_packers: dict[int, msgpack.Packer] = {}


def _pack(obj: object) -> bytes:
    ident = threading.get_ident()
    packer = _packers.get(ident)
    if packer is None:
        packer = _packers[ident] = msgpack.Packer()
    return packer.pack(obj)


def decode_record(blob: bytes) -> dict:
    """The record ``encode_record`` packed (or, as earlier versions stored it, JSON or a
    whole charge). A record that is not one raises ``ValueError``: its request is then not
    replayed but rejected (INTERNAL_ERROR), as a defect (``Engine._isolate``)."""
    record = _decode_record(blob)
    decision = record.get("decision") if isinstance(record, dict) else None
    if not isinstance(decision, dict) or type(decision.get("result")) is not str \
            or not isinstance(record.get("charge"), (dict, type(None))):
        raise ValueError(f"unreadable idempotency record: {blob[:80]!r}")
    return record


def read_record(blob: bytes) -> Stored:
    """A stored record as the typed outputs a replay returns, with the record itself to
    emit as it was stored (``decode_record``; ``ValueError`` as there)."""
    return stored_from_wire(decode_record(blob))


def _decode_record(blob: bytes) -> dict:
    if blob[:1] == b"{":
        return orjson.loads(blob)
    obj = msgpack.unpackb(blob)
    if isinstance(obj, dict):
        return obj
    values, charge = obj
    decision = dict(zip(DECISION_FIELDS, values))
    if charge is None:
        return {"decision": decision, "charge": None}
    if len(charge) == len(CHARGE_FIELDS):
        return {"decision": decision, "charge": dict(zip(CHARGE_FIELDS, charge))}
    own = dict(zip(_CHARGE_OWN, charge))
    repeated = {c: decision[d] for c, d in _SHARED}
    return {"decision": decision,
            "charge": {f: own[f] if f in own else repeated[f] for f in CHARGE_FIELDS}}


def write_entry(name: str, acct: Account | None, change: Change, outs: list[Outcome],
                extra_ledger: list[dict], expiry: str, outbox: str, now_ms: int = 0,
                retention_ms: int = 0) -> list:
    """One account's entry for ``lua/write.lua`` (layout there): what a batch decided for
    it (``outs``, replays left out), its new state, ledger entries, expiry-index changes,
    and for the outbox the records of the requests that charged and the final grants that
    charged nothing (``final_grant``); ``expiry`` and ``outbox`` are the account's
    expiry-index and outbox keys.

    The requests' idempotency records go into the account's hash (``i:<id>``, stamped with
    ``now_ms``) and into ``acct.records``; records older than ``retention_ms`` are dropped
    from both as new ones come (``trimmed``). An account that does not exist has no hash:
    its records are keys of their own, which expire (``Keys.idem``)."""
    idem: list = []
    records: list[tuple[str, bytes]] = []
    ledger: list[list[str]] = []
    charged: list[bytes] = []
    finals: list[list[str]] = []
    for o in outs:
        record = encode_record(o.record())
        records.append((o.request.id, record))
        if o.charge is not None:
            charged.append(record)
        else:
            grant = final_grant(o, len(charged))
            if grant is not None:
                finals.append(grant)
        for e in o.ledger:
            ledger.append(ledger_fields(e))
    for e in extra_ledger:
        ledger.append(ledger_fields(e))
    if acct is None:
        idem = [x for pair in records for x in pair]
        return [name, "", [], [], idem, ledger, expiry, [], [], charged, outbox, finals]
    hset: list = []
    hdel: list[str] = []
    zadd: list[str] = []
    zrem: list[str] = []
    if change.changed:
        fields = changed_fields(acct, change.sessions_written, change.buckets)
        hset = [x for kv in fields.items() for x in kv]
        hdel = [f"s:{sid}" for sid in change.sessions_removed]
        # the expiry index gets a session's deadline when it opens, a lower bound from then
        # on (updates only move it later): the sweeper re-scores sessions it finds alive, so
        # an update costs no index write
        zadd = [x for sid in change.sessions_opened if sid in acct.sessions
                for x in (str(acct.sessions[sid].deadline_ms), session_member(name, sid))]
        zrem = [session_member(name, sid) for sid in change.sessions_removed]
    if records:
        stamp = now_ms.to_bytes(STAMP_BYTES, "big")
        kept = acct.records
        for rid, record in records:
            value = stamp + record
            kept.pop(rid, None)  # a new decision of a known id (its record was unreadable)
            kept[rid] = value
            hset += [f"i:{rid}", value]
        hdel += [f"i:{rid}" for rid in trimmed(kept, now_ms - retention_ms)]
    return [name, str(acct.version), hset, hdel, idem, ledger, expiry, zadd, zrem, charged,
            outbox, finals]


def final_grant(o: Outcome, after: int) -> list[str] | None:
    """A successful final grant as the outbox's ``r`` map carries it (``final_grants``):
    ``[request id, units granted, balance after (micros), after]``, all strings, ``after``
    the number of charge records (c1, c2, ...) of the entry decided before it, so a reader
    can put it back in order among them; None for any other decision. Only grants that
    charged nothing need it: one that charged is in the outbox with its whole record
    already. (A reservation moves no money, so without this a final grant of a session's
    ``initial`` would leave no trace there; the notifier's ``--source outbox`` reads it,
    the archive ignores it.)"""
    d = o.decision
    if not d.final or d.result != Result.SUCCESS or d.balance is None:
        return None
    return [d.id, str(d.granted), str(d.balance), str(after)]


#: a record's value in the account hash: the time it was decided (epoch ms, big-endian, so
#: that values sort by it as bytes), then ``encode_record``'s bytes
STAMP_BYTES = 6
#: records every account keeps whatever their age: the last requests of a quiet account
KEEP_RECORDS = 4


def _stamp_of(item: tuple[bytes, str]) -> bytes:
    return item[0][:STAMP_BYTES]


def record_of(value: bytes) -> bytes:
    """The record a value of ``Account.records`` holds (``encode_record``'s bytes)."""
    return value[STAMP_BYTES:]


def decided_at(value: bytes) -> int:
    """When the record a value of ``Account.records`` holds was written (epoch ms)."""
    return int.from_bytes(value[:STAMP_BYTES], "big")


def decided_records(acct: Account, request_ids: Iterable[str]
                    ) -> dict[tuple[str, str], Stored]:
    """The stored outputs of those of ``request_ids`` the account has records of, keyed as
    ``decide_batch``'s ``previous`` ((account, request id)); ``ValueError`` for a record that
    is not one (``decode_record``)."""
    found: dict[tuple[str, str], Stored] = {}
    records = acct.records
    if records:
        for rid in request_ids:
            value = records.get(rid)
            if value is not None:
                found[(acct.id, rid)] = read_record(value[STAMP_BYTES:])
    return found


def trimmed(records: dict[str, bytes], before_ms: int) -> list[str]:
    """Drop from ``records`` (oldest first) those stamped before ``before_ms``, keeping the
    last ``KEEP_RECORDS``; returns the ids dropped. Only as many are looked at as are
    dropped, plus one."""
    gone: list[str] = []
    limit = before_ms.to_bytes(STAMP_BYTES, "big") if before_ms > 0 else b""
    while len(records) > KEEP_RECORDS:
        rid = next(iter(records))
        if records[rid][:STAMP_BYTES] >= limit:
            break
        del records[rid]
        gone.append(rid)
    return gone


def ledger_fields(entry: dict) -> list[str]:
    """A ledger entry as its stream fields (the stream is the account's, and its entry ids
    carry the server time in ms)."""
    fields = ["id", entry["id"], "delta", str(entry["delta"]), "balance", str(entry["balance"]),
              "reason", entry["reason"], "catalog_version", entry.get("catalog_version", "")]
    if "released" in entry:
        fields += ["released", str(entry["released"])]
    return fields
