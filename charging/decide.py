"""The charging rules of CONTRACT §4.2 applied to in-memory account state, batch by batch.

``decide_batch`` takes validated requests, the current state of their accounts and the
catalogs, and returns one ``Outcome`` per request (the typed decision, the charge if money
or allowance was taken, the ledger entries) while changing the accounts in place. It is pure:
the balances layer loads the accounts before and persists them after, atomically and only
if nobody changed them in between (optimistic concurrency), else it reloads and asks again.

Order of checks, per request: a replayed id returns its first decision; an unknown account
gets USER_UNKNOWN; a blocked account or a service outside the plan END_USER_SERVICE_DENIED;
then the rules for the kind. Requests of one account are applied in input order.

This module holds the session and money rules; the allowance buckets are
``charging.allowances``'s, and the decision and charge records with their wire form
``charging.records``'s (decimal strings are made there, at the wire, not here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from charging import kernels
from charging.allowances import Buckets, consume, free_units, hold, unhold
from charging.catalog import Tariff
from charging.compiler import CompiledCatalog
from charging.rating import (
    destination_digits,
    no_rate_detail,
    over_limit_detail,
    session_over_limit_detail,
    version_gone_detail,
)
from charging.records import Charge, Decision, Result, Stored, charge_wire, decision_wire
from charging.requests import Request
from charging.state import BLOCKED, Account, Session

SUCCESS = Result.SUCCESS
CREDIT_LIMIT_REACHED = Result.CREDIT_LIMIT_REACHED
USER_UNKNOWN = Result.USER_UNKNOWN
SERVICE_DENIED = Result.SERVICE_DENIED
RATING_FAILED = Result.RATING_FAILED
SESSION_UNKNOWN = Result.SESSION_UNKNOWN

#: Balances stay within ±(2**53 − 1) micros (about 9 billion currency units), the range in
#: which the Redis scripts' Lua numbers are exact. A charge that would pass the floor on an
#: account allowed to go negative is taken down to the floor; the rest is reported uncharged.
#: Grants on such an account hold no more than keeps balance − reserved above the floor and
#: reserved below the limit (``grant``).
BALANCE_LIMIT = 2**53 - 1


class Catalogs(Protocol):
    """Where the charging logic finds catalogs: the active one, and older versions that
    sessions opened under still use."""

    @property
    def current(self) -> CompiledCatalog: ...

    def get(self, version: str) -> CompiledCatalog | None: ...


@dataclass(frozen=True)
class FixedCatalogs:
    """Catalogs that never change: one current version (plus, optionally, older ones)."""

    current: CompiledCatalog
    older: tuple[CompiledCatalog, ...] = ()

    def get(self, version: str) -> CompiledCatalog | None:
        if version == self.current.version:
            return self.current
        return next((c for c in self.older if c.version == version), None)


@dataclass
class Outcome:
    request: Request
    decision: Decision
    charge: Charge | None = None  # when money or allowance was taken or owed
    ledger: list[dict] = field(default_factory=list)  # balance changes, in order
    replay: bool = False  # the id was decided before: its first outputs again, nothing changed
    #: the wire form, once made (``record``); a replay of a stored record starts with the
    #: record as it was stored, so that it is emitted byte for byte as the first time
    wire: dict | None = field(default=None, compare=False, repr=False)

    # Written out, not generated: compiled (mypyc), a dataclass's generated __init__ stays
    # interpreted Python, and an outcome is made per request. __eq__ and __repr__ are the
    # dataclass's.
    def __init__(self, request: Request, decision: Decision, charge: Charge | None = None,
                 ledger: list[dict] | None = None, replay: bool = False,
                 wire: dict | None = None) -> None:
        self.request = request
        self.decision = decision
        self.charge = charge
        self.ledger = [] if ledger is None else ledger
        self.replay = replay
        self.wire = wire

    def __reduce__(self) -> tuple:
        # copy and pickle rebuild through __init__: compiled, an object cannot be made
        # without its __init__'s arguments
        return Outcome, (self.request, self.decision, self.charge, self.ledger, self.replay,
                         self.wire)

    def record(self) -> dict:
        """The decision and charge in wire form (CONTRACT §3.1 without latency_us, §3.2):
        what the engine emits and what the store keeps per request id, so that a replay
        returns the same outputs. Made once, when first asked for, after deciding."""
        wire = self.wire
        if wire is None:
            charge = self.charge
            decision = decision_wire(self.decision)
            wire = self.wire = {"decision": decision, "charge": None if charge is None
                                else charge_wire(charge, self.decision, decision)}
        return wire

    def stored(self) -> Stored:
        """The outputs a replay of this request returns."""
        return Stored(self.decision, self.charge, self.wire)


@dataclass
class Change:
    """What a batch changed in one account, for the store to write."""

    sessions_written: set[str] = field(default_factory=set)
    sessions_removed: set[str] = field(default_factory=set)
    sessions_opened: set[str] = field(default_factory=set)  # new (or restarted) this batch
    buckets: set[str] = field(default_factory=set)  # services whose allowances changed
    changed: bool = False  # balance, reservations, allowances or sessions changed

    def __init__(self) -> None:  # written out for the compiled build, as Outcome's
        self.sessions_written = set()
        self.sessions_removed = set()
        self.sessions_opened = set()
        self.buckets = set()
        self.changed = False


def decide_batch(requests: Sequence[Request], accounts: dict[str, Account | None],
                 catalogs: Catalogs, now_ms: int,
                 previous: dict[tuple[str, str], Stored] | None = None
                 ) -> tuple[list[Outcome], dict[str, Change]]:
    """Decide a batch. ``previous`` maps (account, request id) pairs already decided to
    their first outputs (``Outcome.stored``, or a record the store read back).
    Request ids are idempotency keys per account: the same id for another account is
    another request."""
    d = _Decider(catalogs, accounts, now_ms, dict(previous or {}))
    d.select_rates(requests)
    outcomes = [d.one(i, req) for i, req in enumerate(requests)]
    return outcomes, d.changes


class _Decider:
    def __init__(self, catalogs: Catalogs, accounts: dict[str, Account | None], now_ms: int,
                 previous: dict[tuple[str, str], Stored]):
        self.catalogs = catalogs
        self.cc = catalogs.current
        self.accounts = accounts
        self.now_ms = now_ms
        self.previous = previous
        self.changes: dict[str, Change] = {}
        self.buckets = Buckets(self.cc)
        self._session_rates: dict[tuple[str, str, str], tuple | None] = {}
        self.rate_status = np.zeros(0, dtype=np.int8)
        self.rate_index = np.zeros(0, dtype=np.int64)

    # -- set-up ----------------------------------------------------------------------------
    def select_rates(self, requests: Sequence[Request]) -> None:
        """Rate selection depends on the request alone, so the batch gets one kernel call."""
        cc = self.cc
        n = len(requests)
        plan = np.zeros(n, dtype=np.int64)
        service = np.full(n, -1, dtype=np.int64)
        for i, req in enumerate(requests):
            acct = self.accounts.get(req.account)
            p = cc.plan_index.get(acct.plan) if acct is not None else None
            if p is not None:
                plan[i] = p
                service[i] = cc.service_index.get(req.service, -1)
        digits, ndigits = destination_digits([r.destination for r in requests])
        ts = np.fromiter((r.ts_ms for r in requests), dtype=np.int64, count=n)
        self.rate_status, self.rate_index, _, _ = kernels.rate_batch(
            cc.tables, plan, service, ts, digits, ndigits, np.zeros(n, dtype=np.int64))

    # -- one request -----------------------------------------------------------------------
    def one(self, i: int, req: Request) -> Outcome:
        key = (req.account, req.id)
        if key in self.previous:
            first = self.previous[key]
            return Outcome(req, first.decision, charge=first.charge, replay=True,
                           wire=first.wire)
        out = self._decide(i, req)
        self.previous[key] = out.stored()
        return out

    def _decide(self, i: int, req: Request) -> Outcome:
        acct = self.accounts.get(req.account)
        if acct is None:
            return self.refuse(req, USER_UNKNOWN, None)
        plan = self.cc.catalog.plans.get(acct.plan)
        if acct.status == BLOCKED or plan is None or req.service not in plan.tariffs:
            return self.refuse(req, SERVICE_DENIED, acct)
        tariff = self.cc.catalog.tariffs[plan.tariffs[req.service]]
        if req.kind == "event":
            return self.event(i, req, acct, tariff)
        if req.kind == "initial":
            return self.initial(i, req, acct, tariff)
        session = acct.sessions.get(req.session or "")
        if session is None:
            return self.unknown_session(i, req, acct, tariff)
        return self.step(req, acct, session)

    def event(self, i: int, req: Request, acct: Account, tariff: Tariff) -> Outcome:
        return self.usage(i, req, acct, tariff, SUCCESS, "event")

    def usage(self, i: int, req: Request, acct: Account, tariff: Tariff, result: Result,
              reason: str) -> Outcome:
        """Usage outside a held session: the service's free allowance first, then money.
        An event (``result`` SUCCESS) is refused when the money is not there; usage of a
        session the engine does not hold (SESSION_UNKNOWN) was consumed already and is
        charged as far as the balance allows."""
        r = self.selected(i)
        if r is None:
            return self.refuse(req, RATING_FAILED, acct, decimals=tariff.decimals,
                               detail=no_rate_detail(tariff.name, req.destination,
                                                     req.ts_ms))
        self.refresh_buckets(acct, req.service, req.ts_ms)
        allowance = min(req.used, free_units(acct, req.service))
        status, cost, rated = kernels.units_at(self.cc.tables.rate, self.cc.tables.step, r,
                                               req.used - allowance)
        if status != kernels.OK:
            return self.refuse(req, RATING_FAILED, acct, decimals=tariff.decimals,
                               detail=over_limit_detail(req.used - allowance))
        available = acct.available()
        if result == SUCCESS and available is not None and cost > available:
            return self.refuse(req, CREDIT_LIMIT_REACHED, acct, decimals=tariff.decimals)
        taken, uncharged = self.take(acct, int(cost))
        self.consume(acct, req.service, allowance)
        out = self.decided(req, result, acct, charged=taken, decimals=tariff.decimals)
        self.charged(out, acct, tariff, self.cc, r,
                     _Used(req.used, int(rated), allowance, taken, uncharged), reason)
        return out

    def initial(self, i: int, req: Request, acct: Account, tariff: Tariff) -> Outcome:
        change = self.change(acct)
        old = acct.sessions.pop(req.session or "", None)
        if old is not None:  # the gateway restarted the session id: release the old one
            self.release(acct, old)
            change.sessions_removed.add(old.id)
            change.sessions_written.discard(old.id)
        r = self.selected(i)
        if r is None:
            return self.refuse(req, RATING_FAILED, acct, decimals=tariff.decimals,
                               detail=no_rate_detail(tariff.name, req.destination,
                                                     req.ts_ms))
        self.refresh_buckets(acct, req.service, req.ts_ms)
        session = Session(id=req.session or "", service=req.service,
                          catalog_version=self.cc.version, tariff=tariff.name,
                          rate_id=self.cc.rate_ids[r], validity_s=tariff.validity_s,
                          allowance_reserved=[0] * len(acct.allowances.get(req.service, [])))
        # units reported with the initial itself (unusual, but never dropped) are charged first
        used = self.commit(acct, session, self.cc, r, req.used)
        if used is None:
            return self.refuse(req, RATING_FAILED, acct, decimals=tariff.decimals,
                               detail=over_limit_detail(req.used))
        granted = self.grant(acct, session, self.cc, r, req, tariff)
        requested = req.requested or tariff.quota
        if granted == 0:
            out = self.decided(req, CREDIT_LIMIT_REACHED, acct, final=True, charged=used.taken,
                               decimals=tariff.decimals)
        else:
            session.seq = req.seq or 0
            session.last_seen_ms = self.now_ms
            acct.sessions[session.id] = session
            change.sessions_written.add(session.id)
            change.sessions_opened.add(session.id)
            change.sessions_removed.discard(session.id)
            out = self.decided(req, SUCCESS, acct, granted=granted, validity=tariff.validity_s,
                               final=granted < requested, charged=used.taken,
                               decimals=tariff.decimals)
        self.charged(out, acct, tariff, self.cc, r, used, "initial")
        return out

    def step(self, req: Request, acct: Account, session: Session) -> Outcome:
        """update / terminate: commit the reported units, release the rest, maybe re-grant.

        The session's own service counts (allowances, tariff), whatever the request names.
        """
        held = self.session_rate(session)
        if held is None:
            return self.refuse(req, RATING_FAILED, acct, detail=version_gone_detail(
                session.id, session.catalog_version, session.tariff, session.rate_id))
        cc, r, tariff = held
        change = self.change(acct)
        self.release(acct, session)
        self.refresh_buckets(acct, session.service, req.ts_ms)
        used = self.commit(acct, session, cc, r, req.used)
        if used is None:
            # beyond the engine's range: nothing exact can be charged; end the session
            acct.sessions.pop(session.id, None)
            change.sessions_removed.add(session.id)
            change.sessions_written.discard(session.id)
            return self.refuse(req, RATING_FAILED, acct, decimals=tariff.decimals,
                               detail=session_over_limit_detail(session.chargeable,
                                                                req.used))
        session.seq = req.seq if req.seq is not None else session.seq
        session.last_seen_ms = self.now_ms
        granted = 0
        result = SUCCESS
        requested = req.requested or tariff.quota
        if req.kind == "terminate":
            acct.sessions.pop(session.id, None)
            change.sessions_removed.add(session.id)
            change.sessions_written.discard(session.id)
        else:
            granted = self.grant(acct, session, cc, r, req, tariff)
            result = SUCCESS if granted else CREDIT_LIMIT_REACHED
            change.sessions_written.add(session.id)
        out = self.decided(req, result, acct, granted=granted,
                           validity=tariff.validity_s if granted else 0,
                           final=req.kind == "update" and granted < requested,
                           charged=used.taken, decimals=tariff.decimals)
        self.charged(out, acct, tariff, cc, r, used, req.kind)
        return out

    def session_rate(self, session: Session) -> tuple[CompiledCatalog, int, Tariff] | None:
        """The catalog, rate index and tariff a session was opened with (None if that
        catalog version or rate is gone); looked up once per batch."""
        key = (session.catalog_version, session.tariff, session.rate_id)
        if key in self._session_rates:
            return self._session_rates[key]
        # the session's own version (CONTRACT §4.2: rated with the rate selected at its
        # initial); if that version is gone, RATING_FAILED, never another version's prices
        cc = self.catalogs.get(session.catalog_version)
        try:
            held = None if cc is None else (cc, cc.rate_index(session.tariff, session.rate_id),
                                            cc.catalog.tariffs[session.tariff])
        except KeyError:
            held = None
        self._session_rates[key] = held
        return held

    def commit(self, acct: Account, session: Session, cc: CompiledCatalog, r: int,
               used: int) -> _Used | None:
        """Charge ``used`` units to a session whose reservation is released: allowance first,
        then rating(C + rest) − rating(C) as far as the balance allows. None if unratable."""
        allowance = min(used, free_units(acct, session.service)) if used else 0
        extra = used - allowance
        status, cost, rated = kernels.span_at(cc.tables.rate, cc.tables.step, r,
                                              session.chargeable, session.chargeable + extra)
        if status != kernels.OK:
            return None
        taken, uncharged = self.take(acct, int(cost))
        self.consume(acct, session.service, allowance)
        session.chargeable += extra
        session.used += used
        return _Used(used, int(rated), allowance, taken, uncharged)

    def unknown_session(self, i: int, req: Request, acct: Account, tariff: Tariff) -> Outcome:
        """update / terminate of a session the engine does not hold: charge like an event
        that may not be refused, answer SESSION_UNKNOWN, grant nothing."""
        return self.usage(i, req, acct, tariff, SESSION_UNKNOWN, "unknown_session")

    # -- money ----------------------------------------------------------------------------
    def grant(self, acct: Account, session: Session, cc: CompiledCatalog, r: int, req: Request,
              tariff: Tariff) -> int:
        """Reserve the largest affordable grant (CONTRACT §4.2) for the session; its units.

        Reservations are bounded like balances: on an account allowed to go negative the
        money held may take balance − reserved down to −BALANCE_LIMIT micros and reserved
        up to BALANCE_LIMIT, no further (a grant of 2**40 SMS would otherwise hold ~10**17
        micros, beyond what the Redis scripts keep exact); the session gets the largest
        grant that fits, ``final`` when it is smaller than asked."""
        requested = req.requested or tariff.quota
        free = free_units(acct, session.service)
        available = acct.available()
        if available is None:
            available = min(acct.balance - acct.reserved + BALANCE_LIMIT,
                            BALANCE_LIMIT - acct.reserved)
        limit = max(0, available)
        g, money = kernels.grant_at(cc.tables.rate, cc.tables.step, r, session.chargeable, free,
                                    requested, limit)
        g, money = int(g), int(money)
        session.granted = g
        if g == 0:
            return 0
        session.money_reserved = money
        acct.reserved += money
        if hold(acct, session, min(g, free)):
            self.change(acct).buckets.add(session.service)
        return g

    def release(self, acct: Account, session: Session) -> None:
        """Return a session's held money and allowance units."""
        acct.reserved -= session.money_reserved
        session.money_reserved = 0
        session.granted = 0
        if unhold(acct, session):
            self.change(acct).buckets.add(session.service)
            session.allowance_reserved = [0] * len(session.allowance_reserved)

    def take(self, acct: Account, cost: int) -> tuple[int, int]:
        """Take ``cost`` micros as far as the balance allows: (taken, uncharged)."""
        if not cost:
            return 0, 0
        available = acct.available()
        if available is None:
            taken = min(cost, acct.balance + BALANCE_LIMIT)
        else:
            taken = min(cost, max(0, available))
        acct.balance -= taken
        return taken, cost - taken

    def consume(self, acct: Account, service: str, units: int) -> None:
        if consume(acct, service, units):
            self.change(acct).buckets.add(service)

    def refresh_buckets(self, acct: Account, service: str, ts_ms: int) -> None:
        """The service's allowance buckets as of the request's time (``Buckets.refresh``)."""
        if self.buckets.refresh(acct, service, ts_ms):
            self.change(acct).buckets.add(service)

    # -- results ---------------------------------------------------------------------------
    def selected(self, i: int) -> int | None:
        return int(self.rate_index[i]) if self.rate_status[i] == kernels.OK else None

    def _change_of(self, account: str) -> Change:
        change = self.changes.get(account)
        if change is None:
            change = self.changes[account] = Change()
        return change

    def change(self, acct: Account) -> Change:
        change = self._change_of(acct.id)
        change.changed = True
        return change

    def refuse(self, req: Request, result: Result, acct: Account | None, *,
               final: bool = False, decimals: int = 2, detail: str | None = None) -> Outcome:
        """A decision that charges nothing; ``decimals`` the tariff's, where one applies
        (``charged`` is "0.00" otherwise)."""
        self._change_of(req.account)  # the decision itself is stored
        out = self.decided(req, result, acct, final=final, decimals=decimals)
        # why, for RATING_FAILED (CONTRACT §4.1); replays keep it
        out.decision.detail = detail
        return out

    def decided(self, req: Request, result: Result, acct: Account | None, *,
                granted: int = 0, validity: int = 0, final: bool = False, charged: int = 0,
                decimals: int = 2) -> Outcome:
        self._change_of(req.account)
        return Outcome(req, Decision(req.id, req.kind, req.account, req.service, req.session,
                                     req.seq, result, granted, validity, final,
                                     acct.balance if acct is not None else None, charged,
                                     decimals))

    def charged(self, out: Outcome, acct: Account, tariff: Tariff, cc: CompiledCatalog, r: int,
                used: _Used, reason: str) -> None:
        """Attach the charge (and the ledger entry) when money or allowance was involved."""
        if used.taken == 0 and used.uncharged == 0 and used.allowance == 0:
            return
        req = out.request
        self.change(acct)
        # the decision was just made from the same taken money and balance: its ``charged``
        # is this charge's ``cost`` and its ``balance`` the same balance after
        out.charge = Charge(
            # the service charged: the tariff's, which for a session step is the session's
            # own whatever the step names (the decision echoes the request's)
            req.id, acct.id, tariff.service, req.session, req.seq, req.ts_ms, used.units,
            used.rated, used.allowance, used.taken, cc.catalog.currency, tariff.name,
            cc.rate_ids[r], cc.version, acct.balance, used.uncharged, tariff.decimals)
        if used.taken:
            out.ledger.append({"id": req.id, "delta": -used.taken, "balance": acct.balance,
                               "reason": reason, "catalog_version": cc.version})


class _Used:
    """What charging reported units did: units, rated units, allowance units, money taken and
    money owed (micros). A plain class: compiled, it is built natively (a NamedTuple's
    constructor stays interpreted Python)."""

    def __init__(self, units: int, rated: int, allowance: int, taken: int,
                 uncharged: int) -> None:
        self.units = units
        self.rated = rated
        self.allowance = allowance
        self.taken = taken
        self.uncharged = uncharged


def release_silent(acct: Account, now_ms: int) -> tuple[Change, list[dict]]:
    """Release the sessions silent past 2 × validity (CONTRACT §4.2): their held money and
    allowance units return to the account; each release is a ledger entry (delta 0)."""
    change = Change()
    ledger: list[dict] = []
    for sid in [sid for sid, s in acct.sessions.items() if s.deadline_ms <= now_ms]:
        session = acct.sessions.pop(sid)
        released = session.money_reserved
        acct.reserved -= session.money_reserved
        unhold(acct, session)
        change.changed = True
        change.sessions_removed.add(sid)
        if session.service in acct.allowances:
            change.buckets.add(session.service)
        ledger.append({"id": f"release:{sid}", "delta": 0, "balance": acct.balance,
                       "reason": "release", "catalog_version": session.catalog_version,
                       "released": released})
    return change, ledger
