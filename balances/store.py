"""Redis as the system of record: accounts, allowances, sessions, idempotency, ledger.

``BalanceStore`` is the one object the engine, the sweeper and the administration commands
hold. This module has its hot path; the rest is mixed in from two modules of their own:
``balances.admin`` (provisioning, top-ups, inspection) and ``balances.expiry`` (the session
expiry index the sweeper reads).

The hot path is two operations, each one round trip per batch:

* ``load`` — the accounts of a batch and any decisions already stored for its request ids;
* ``save`` — for each account the batch touched, a compare-and-set on the account's version
  that writes the new state, the decisions (idempotency records), the ledger entries and the
  session deadlines, atomically per account (``lua/write.lua``). An account that changed
  since it was read (a top-up, a sweep, another engine) or whose request id was already
  decided comes back as a ``Conflict`` carrying its fresh state, and the caller decides those
  requests again: the store never guesses.

The idempotency records are fields of their account's hash (``balances.codec``), so they
come with the account (``Account.records``) and memory grows with accounts and the requests
of the last retention, not with every request ever made: a write drops the account's
records older than the retention (``retention_s``), keeping its last few whatever their age.
A record is never dropped but by a later write to its account, so an engine that was down
for longer than the retention still finds the records of what it decided before it stopped.

Versions never repeat: every script that changes an account (write, topup, upsert) gives it
max(old + 1, the server's time in µs), so even a Redis that lost acknowledged writes (a
failover to a lagging replica, a restore, a crash under ``appendfsync everysec``) and took
later changes since cannot hand a cached state's version to another state. (This holds as
long as the server's clock does not go back by more than the writes it lost.)

On Redis Cluster the write entries are grouped by the node that serves their slot (every key
of an account shares its ``{account}`` hash tag): one script call per node, routed by its
first account's key; the script names the other accounts' keys itself, which Redis allows
for scripts without flags as long as the keys live on the node that runs it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources

import msgpack
import redis
from redis.cluster import RedisCluster
from redis.connection import Connection
from redis.exceptions import NoScriptError

from balances.admin import Administration
from balances.codec import (
    Keys,
    decided_records,
    decode_account,
    read_record,
    record_of,
    write_entry,
)
from balances.expiry import ExpiryIndex
from balances.redis_errors import store_errors
from charging.decide import Change, Outcome
from charging.records import Stored
from charging.state import Account

DEFAULT_RETENTION_S = 600  # idempotency records (decision + charge per request id)
DEFAULT_LEDGER_RETENTION_S = 90 * 86400  # ledger entries kept in Redis (0: all, unbounded)


def _lua(name: str) -> str:
    return (resources.files("balances") / "lua" / name).read_text()


class PendingSave:
    """A write sent by ``BalanceStore.send_save``; ``result()`` reads its reply (once)."""

    def __init__(self, store: BalanceStore, accounts: dict[str, Account | None],
                 changes: dict[str, Change], names: list[str], asked: list[list[str]],
                 bumped: set[str]):
        self.store = store
        self.accounts = accounts
        self.changes = changes
        self.names = names
        self.asked = asked  # per entry: the request ids it decided
        self.bumped = bumped  # the accounts the write gives a new version (fields set)
        # entry -> the server time (µs) of its write, or (hgetall, decided ids) of a conflict
        self.replies: dict[int, int | tuple] | None = None
        self.connection: Connection | None = None
        self.sent: tuple[list[str], list[list]] | None = None
        self._found: dict[str, Conflict] | None = None

    def result(self) -> dict[str, Conflict]:
        """The accounts that conflicted (not written); the others now have their new
        version, here as in the store."""
        if self._found is None:
            if self.replies is None:
                self.replies = self._read()
            self._found = self.store._conflicts(self, self.replies)
        return self._found

    def _read(self) -> dict[int, int | tuple]:
        assert self.connection is not None and self.sent is not None
        with store_errors("cannot write to Redis"):
            try:
                return _replies(self.connection.read_response(), range(len(self.names)))
            except NoScriptError:  # Redis lost its scripts (restart, SCRIPT FLUSH): nothing ran
                return self.store._run_write(*self.sent)


@dataclass(frozen=True)
class Conflict:
    """An account whose write was refused: its current state and already-decided ids."""

    account: Account | None
    decided: dict[tuple[str, str], Stored]  # (account, request id) -> its first outputs


class BalanceStore(Administration, ExpiryIndex):
    """The balances in Redis under ``prefix``: the hot path here, administration
    (``balances.admin``) and the expiry index (``balances.expiry``) mixed in."""

    def __init__(self, client: redis.Redis | RedisCluster, *, prefix: str = "cf",
                 retention_s: int = DEFAULT_RETENTION_S,
                 ledger_retention_s: int = DEFAULT_LEDGER_RETENTION_S):
        self.r = client
        self.cluster = isinstance(client, RedisCluster)
        self.keys = Keys(prefix, cluster=self.cluster)
        self.retention_s = retention_s
        self.ledger_retention_s = ledger_retention_s
        self._write = client.register_script(_lua("write.lua"))
        # administration's (balances.admin)
        self._topup = client.register_script(_lua("topup.lua"))
        self._upsert = client.register_script(_lua("upsert.lua"))

    # -- the hot path ----------------------------------------------------------------------
    def load(self, accounts: Iterable[str], request_ids: dict[str, list[str]] | None = None
             ) -> tuple[dict[str, Account | None], dict[tuple[str, str], Stored]]:
        """Current state of ``accounts`` and the stored decisions of ``request_ids``
        (account -> ids; the decisions, and charges, keyed by (account, id)), in one
        pipelined round trip: the records in the accounts' hashes, and the keys of accounts
        that do not exist (and of releases before 2026-12-03, which kept every record so)."""
        names = list(dict.fromkeys(accounts))
        request_ids = request_ids or {}
        pipe = self.r.pipeline(transaction=False)
        for a in names:
            pipe.hgetall(self.keys.account(a))
        asked: list[tuple[str, str]] = []
        for a, ids in request_ids.items():
            for rid in ids:
                pipe.get(self.keys.idem(a, rid))
                asked.append((a, rid))
        with store_errors("cannot read accounts from Redis"):
            replies = pipe.execute()
        states = {a: decode_account(a, raw) for a, raw in zip(names, replies)}
        decided = {key: read_record(blob) for key, blob in zip(asked, replies[len(names):])
                   if blob is not None}
        for a, ids in request_ids.items():
            acct = states.get(a)
            if acct is not None:
                decided.update(decided_records(acct, ids))
        return states, decided

    def record(self, account: str, request_id: str) -> bytes | None:
        """The idempotency record kept for a request id (``encode_record``'s bytes), or
        None: from the account's hash, else the key of an account that does not exist (or of
        a release before 2026-12-03)."""
        with store_errors("cannot read a record from Redis"):
            value = self.r.hget(self.keys.account(account), f"i:{request_id}")
            if value is not None:
                return record_of(value)
            return self.r.get(self.keys.idem(account, request_id))

    def save(self, accounts: dict[str, Account | None], changes: dict[str, Change],
             outcomes: Sequence[Outcome], ledger: dict[str, list[dict]] | None = None
             ) -> dict[str, Conflict]:
        """Write what a batch decided; returns the accounts that conflicted (not written).

        ``accounts`` hold the new states, whose ``version`` is still the one they were read
        at; written accounts get their new version (``lua/write.lua``: max(version + 1, the
        server's time in µs)) here, in the store and in memory.
        """
        return self.send_save(accounts, changes, outcomes, ledger).result()

    def send_save(self, accounts: dict[str, Account | None], changes: dict[str, Change],
                  outcomes: Sequence[Outcome], ledger: dict[str, list[dict]] | None = None,
                  connection: Connection | None = None, now_ms: int | None = None
                  ) -> PendingSave:
        """``save`` in two halves: the write is sent now and its reply read by
        ``PendingSave.result()``, so the caller can work while Redis runs the script. With
        a ``connection`` (a single Redis only; see ``pipelined``) several writes can be in
        flight on it, their replies read in the order they were sent. ``now_ms`` (the
        engine's time; by default the clock's) stamps the records written and says which are
        past the retention."""
        per_account: dict[str, list[Outcome]] = {}
        for out in outcomes:
            if not out.replay:
                per_account.setdefault(out.request.account, []).append(out)
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        entries, keys, names, asked, bumped = [], [], [], [], set()
        for name, change in changes.items():
            acct = accounts.get(name)
            outs = per_account.get(name, [])
            if acct is None and not outs:
                continue
            entry = write_entry(name, acct, change, outs, (ledger or {}).get(name, []),
                                self.keys.expiry(name), self.keys.outbox(name), now_ms,
                                self.retention_s * 1000)
            entries.append(entry)
            keys.append(self.keys.account(name))
            names.append(name)
            asked.append([o.request.id for o in outs])
            if entry[2]:
                bumped.add(name)
        pending = PendingSave(self, accounts, changes, names, asked, bumped)
        if not entries:
            pending.replies = {}
        elif connection is None or self.cluster:
            pending.replies = self._run_write(keys, entries)
        else:
            pending.connection = connection
            with store_errors("cannot write to Redis"):
                connection.send_command("EVALSHA", self._write.sha, 1, keys[0],
                                        *self._write_args(entries))
            pending.sent = (keys, entries)
        return pending

    @contextmanager
    def pipelined(self) -> Iterator[Connection | None]:
        """A connection of its own for ``send_save`` calls in flight together (None on a
        cluster, where writes go node by node). After a failure the connection is dropped,
        so no reply of an abandoned write can be read as another's."""
        if self.cluster:
            yield None
            return
        pool = self.r.connection_pool
        with store_errors("cannot connect to Redis"):
            conn = pool.get_connection()
        try:
            yield conn
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _write_args(self, entries: list[list]) -> list:
        # bytes go as MessagePack raw strings: the scripts' cmsgpack reads no bin type
        return [self.keys.prefix, self.retention_s, self.ledger_retention_s * 1000,
                msgpack.packb(entries, use_bin_type=False)]

    def _conflicts(self, pending: PendingSave, replies: dict[int, int | tuple]
                   ) -> dict[str, Conflict]:
        conflicts: dict[str, Conflict] = {}
        for i, name in enumerate(pending.names):
            found = replies[i]
            if type(found) is int:  # written at that server time: the version the script set
                acct = pending.accounts.get(name)
                if acct is not None and name in pending.bumped:
                    acct.version = max(acct.version + 1, found)
                continue
            raw, hits = found
            decided = {(name, rid.decode() if isinstance(rid, bytes) else rid):
                       read_record(blob)
                       for rid, blob in zip(hits[::2], hits[1::2])}
            fresh = decode_account(name, raw)
            if fresh is not None:
                decided.update(decided_records(fresh, pending.asked[i]))
            conflicts[name] = Conflict(fresh, decided)
        return conflicts

    def _run_write(self, keys: list[str], entries: list[list]) -> dict[int, int | tuple]:
        """Run lua/write.lua over the entries (one call, or one per node on a cluster); each
        entry's number -> the server time of its write, or (hgetall, decided ids)."""
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            node = self.r.get_node_from_key(k).name if self.cluster else ""
            groups.setdefault(node, []).append(i)
        replies: dict[int, int | tuple] = {}
        with store_errors("cannot write to Redis"):
            for idx in groups.values():
                client = (self.r.get_redis_connection(self.r.get_node_from_key(keys[idx[0]]))
                          if self.cluster else self.r)
                reply = self._write(keys=[keys[idx[0]]],
                                    args=self._write_args([entries[i] for i in idx]),
                                    client=client)
                replies.update(_replies(reply, idx))
        return replies


def _replies(reply: list, positions: Sequence[int]) -> dict[int, int | tuple]:
    """lua/write.lua's reply (the server time in µs, then per conflict: entry number from
    1, hgetall, decided ids) as ``positions[entry - 1]`` -> (hgetall, decided ids) for the
    conflicts and -> the server time for the entries written."""
    now = int(reply[0])
    found: dict[int, int | tuple] = dict.fromkeys(positions, now)
    for k in range(1, len(reply), 3):
        found[positions[int(reply[k]) - 1]] = (reply[k + 1], reply[k + 2])
    return found
