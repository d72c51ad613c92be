"""The baseline's Redis side: its own key layout, one request at a time, optimistic locking.

Keys (``P`` is the prefix; ``{account}`` is a hash tag, so an account's keys share a slot)::

    P:catalog                 string  the catalog YAML (``provision``); read once at start
    P:{account}:state         string  the account as one JSON document (``state.dump_state``):
                                      plan, status, allow_negative, balance, allowance buckets,
                                      open sessions
    P:{account}:idem:<id>     string  {"decision", "charge"} of request <id>, kept 7 days
    P:{account}:ledger        stream  one entry per balance change (open, event, initial,
                                      update, terminate, unknown_session), trimmed past 90 days

Per request (``Baseline.handle``): WATCH the state and idempotency keys and MGET both, in one
pipelined round trip; a stored record is a replay (its outputs again, nothing written);
otherwise decide in Python (``rules.Rules``) and write state, record and ledger entries in
one MULTI/EXEC round trip. EXEC answers nil when another writer touched either key since the
WATCH; then the request is read and decided again. So: two round trips per request, one for
a replay, and no interleaving of writers can lose a change or decide an id twice.

Why a raw connection: redis-py's ``Pipeline`` sends WATCH on a round trip of its own (and
the reads after it one by one), so the canonical ``pipe.watch(); pipe.mget(); pipe.multi()``
costs three or four round trips. The baseline keeps one connection for its single thread and
pipelines WATCH with the read itself. The connection is never silently re-opened between the
read and the write: an error on either drops it, and the request starts again from the read
(a write whose EXEC reply was lost is found as a replay then, since the record was written
in the same transaction).

Not covered (the engine does these; a benchmark does not need them): Redis Cluster, catalog
hot reload and sessions kept on an older catalog version, releasing silent sessions (no
sweeper), top-ups.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson
import redis
from redis.exceptions import ResponseError

from balances.accounts import AccountSpec
from bench.baseline.rules import Rules
from bench.baseline.state import AccountState, dump_state, load_state
from charging.catalog import Catalog, parse_catalog
from charging.errors import ChargeflowError, RequestError
from charging.requests import decode, parse, reject_record

log = logging.getLogger("chargeflow.baseline")

IDEMPOTENCY_S = 7 * 86400
LEDGER_RETENTION_MS = 90 * 86400 * 1000
MAX_CONFLICTS = 100  # rounds a request may lose to other writers before it gives up


class BaselineError(ChargeflowError):
    """The baseline cannot work: no catalog, a conflict that never resolves, a bad reply."""

    code = "BASELINE_ERROR"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def catalog(self) -> str:
        return f"{self.prefix}:catalog"

    def state(self, account: str) -> str:
        return f"{self.prefix}:{{{account}}}:state"

    def idem(self, account: str, request_id: str) -> str:
        return f"{self.prefix}:{{{account}}}:idem:{request_id}"

    def ledger(self, account: str) -> str:
        return f"{self.prefix}:{{{account}}}:ledger"


# -- set-up -------------------------------------------------------------------------------------

def provision(client: redis.Redis, prefix: str, catalog_text: str,
              accounts: Sequence[AccountSpec], chunk: int = 1000) -> Catalog:
    """Store the catalog and create ``accounts`` (each with an ``open`` ledger entry) under a
    fresh ``prefix``. An account that exists already is an error: re-provisioning would
    break its ledger. Pipelined in chunks; returns the parsed catalog."""
    catalog = parse_catalog(catalog_text)
    keys = Keys(prefix)
    unknown = sorted({a.plan for a in accounts} - set(catalog.plans))
    if unknown:
        raise BaselineError(f"plan(s) {', '.join(unknown)} are not in catalog "
                            f"{catalog.version!r}")
    client.set(keys.catalog, catalog_text)
    for start in range(0, len(accounts), chunk):
        part = accounts[start:start + chunk]
        pipe = client.pipeline(transaction=False)
        for a in part:
            pipe.exists(keys.state(a.id))
        taken = [a.id for a, n in zip(part, pipe.execute()) if n]
        if taken:
            raise BaselineError(f"account(s) {', '.join(taken[:5])} exist under prefix "
                                f"{prefix!r}; provision a fresh prefix")
        pipe = client.pipeline(transaction=False)
        for a in part:
            state = AccountState(plan=a.plan, balance=a.balance, status=a.status,
                                 allow_negative=a.allow_negative)
            pipe.set(keys.state(a.id), dump_state(state))
            pipe.xadd(keys.ledger(a.id), {"id": "open", "delta": a.balance,
                                          "balance": a.balance, "reason": "open"})
        pipe.execute()
    return catalog


def drop(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix:``; how many."""
    n = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) == 500:
            n += client.unlink(*batch)
            batch = []
    if batch:
        n += client.unlink(*batch)
    return n


# -- one connection, pipelined round trips ----------------------------------------------------

class _Link:
    """One Redis connection of the client's pool, held for the baseline's single thread."""

    def __init__(self, client: redis.Redis):
        self.pool = client.connection_pool
        self.conn = self.pool.get_connection()

    def roundtrip(self, commands: Sequence[tuple]) -> list:
        """Send ``commands`` in one write and read every reply (all of them, even after an
        error reply, so the connection stays in step); raises the first error reply."""
        conn = self.conn
        conn.send_packed_command(conn.pack_commands(commands))
        replies: list = []
        error: ResponseError | None = None
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                error = error or exc
                replies.append(exc)
        if error is not None:
            raise error
        return replies

    def close(self) -> None:
        self.pool.release(self.conn)


# -- the per-request path -------------------------------------------------------------------------

Output = tuple[str, bytes | None, bytes]  # (kind: decision | charge | reject, key, value)


class Baseline:
    """Decides requests one at a time against Redis; see the module docstring."""

    def __init__(self, client: redis.Redis, prefix: str, *,
                 retention_s: int = IDEMPOTENCY_S,
                 ledger_retention_ms: int = LEDGER_RETENTION_MS,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 sleep: Callable[[float], None] = time.sleep, fmt: str = "json"):
        self.client = client
        self.keys = Keys(prefix)
        text = client.get(self.keys.catalog)
        if text is None:
            raise BaselineError(f"no catalog under prefix {prefix!r}: run provision() first")
        self.catalog = parse_catalog(text.decode("utf-8"))
        self.rules = Rules(self.catalog)
        self.retention_s = retention_s
        self.ledger_retention_ms = ledger_retention_ms
        self.clock_ms = clock_ms
        self.sleep = sleep
        self.fmt = fmt
        self.link = _Link(client)
        self._watching = False  # keys of a replay are still watched: UNWATCH before reading

    def close(self) -> None:
        self.link.close()

    def handle(self, raw: bytes, entered_ns: int | None = None) -> list[Output]:
        """The messages to emit for one request: its decision (and charge), or a reject.
        ``entered_ns`` (``time.monotonic_ns``) is when the request arrived, for latency_us."""
        start = time.monotonic_ns() if entered_ns is None else entered_ns
        try:
            req = parse(decode(raw, self.fmt))
        except RequestError as exc:
            return [("reject", None, orjson.dumps(reject_record(exc, raw)))]
        record = self._charge_retrying(req)
        key = req.account.encode()
        latency_us = max(0, (time.monotonic_ns() - start) // 1000)
        out: list[Output] = [
            ("decision", key, orjson.dumps(dict(record["decision"], latency_us=latency_us)))]
        if record["charge"] is not None:
            out.append(("charge", key, orjson.dumps(record["charge"])))
        return out

    def _charge_retrying(self, req) -> dict:
        """``_charge``, waiting out Redis outages with back-off (the stream waits; nothing is
        decided twice, the retried request finds its own record if its write went through)."""
        delay = 0.05
        while True:
            try:
                return self._charge(req)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._watching = False  # the connection was dropped, and its WATCHes with it
                log.warning("redis unavailable, retrying request %s in %.2f s: %s",
                            req.id, delay, exc)
                self.sleep(delay)
                delay = min(2.0, delay * 2)

    def _charge(self, req) -> dict:
        """Read, decide, write one request; its record {"decision", "charge"}."""
        state_key = self.keys.state(req.account)
        idem_key = self.keys.idem(req.account, req.id)
        for _ in range(MAX_CONFLICTS):
            reads: list[tuple] = [("UNWATCH",)] if self._watching else []
            reads += [("WATCH", state_key, idem_key), ("MGET", state_key, idem_key)]
            self._watching = True
            blob, seen = self.link.roundtrip(reads)[-1]
            if seen is not None:  # a replay: the first outputs again, nothing changes
                return orjson.loads(seen)
            acct = load_state(blob)
            out = self.rules.decide(req, acct, self.clock_ms())
            record = {"decision": out.decision, "charge": out.charge}
            writes: list[tuple] = [("MULTI",)]
            if acct is not None:
                new = dump_state(acct)
                if new != blob:
                    writes.append(("SET", state_key, new))
            writes.append(("SET", idem_key, orjson.dumps(record), "EX", self.retention_s))
            writes += self._ledger(req.account, out.ledger)
            writes.append(("EXEC",))
            replies = self.link.roundtrip(writes)
            self._watching = False  # EXEC ends every WATCH, whether it ran or not
            done = replies[-1]
            if done is None:  # another writer moved the account (or decided this id): again
                continue
            errors = [r for r in done if isinstance(r, Exception)]
            if errors:
                raise BaselineError(f"writing request {req.id} failed: {errors[0]}")
            return record
        raise BaselineError(f"request {req.id}: account {req.account!r} changed under every "
                            f"one of {MAX_CONFLICTS} attempts")

    def _ledger(self, account: str, entries: Iterable[dict]) -> list[tuple]:
        cmds = []
        trim: tuple = ()
        if self.ledger_retention_ms:
            trim = ("MINID", "~", self.clock_ms() - self.ledger_retention_ms)
        for e in entries:
            cmds.append(("XADD", self.keys.ledger(account), *trim, "*", "id", e["id"],
                         "delta", e["delta"], "balance", e["balance"], "reason", e["reason"],
                         "catalog_version", self.catalog.version))
        return cmds

    # -- views (tests, reconciliation) ---------------------------------------------------------
    def state(self, account: str) -> AccountState | None:
        return load_state(self.client.get(self.keys.state(account)))

    def ledger(self, account: str) -> list[dict]:
        """The account's ledger entries, oldest first, with integer micros."""
        out = []
        for _, fields in self.client.xrange(self.keys.ledger(account)):
            row = {k.decode(): v.decode() for k, v in fields.items()}
            out.append(dict(row, delta=int(row["delta"]), balance=int(row["balance"])))
        return out
