"""``decide_batch`` with the rules of a batch in one numba kernel (issue 19, item 1).

``decide_columnar`` takes and returns what ``charging.decide.decide_batch`` does, and gives
the same outcomes, changes and account state. Requests of different accounts are
independent, so the batch is split by account: an account whose requests are all *covered*
goes to the kernel (``charging.decision_kernels.decide_rows``), every other account's
requests go, together and in input order, to ``decide_batch``, which stays the fallback and
the oracle (tests/charging/test_columnar.py holds one against the other).

Covered, per account (anything else is decided by ``decide_batch``):
    - no request id seen before (``previous``) or twice in the batch: replays stay there;
    - an account that does not exist (USER_UNKNOWN, decided here without the kernel), or
      one whose plan is in the current catalog;
    - every session the requests name that the account holds was opened under the current
      catalog version, with a tariff and rate it still has, and holds one allowance count
      per bucket of its service;
    - no allowance bucket the requests may touch needs creating or a period refill at any
      of the requests' times (``Buckets.refresh`` would change nothing);
    - balances, reservations, units, sessions' usage and buckets below 2**52 in size, so
      that int64 arithmetic is Python's (a grant or a charge of up to 9e18 micros still
      fits next to them).

Python checks that, builds the arrays, calls the kernel once, then makes the outcome
objects and writes the state back into the ``Account``, ``Session`` and ``Bucket`` objects.

Not on the engine's path yet (``balances.charger`` calls ``decide_batch``): both compiled
with mypyc, as installed, this is no faster (0.92-0.99x of ``decide_batch`` in
``python -m bench.decide``, 2026-12-04), since the kernel is ~0.5 of the ~5 us a request
costs and moving the objects in and out is the rest. It pays once account state stays in
columns across batches and the wire records are made from the result rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from charging import decision_kernels as dk
from charging import kernels
from charging.allowances import Buckets
from charging.catalog import Tariff
from charging.compiler import CompiledCatalog
from charging.decide import Catalogs, Change, Outcome, decide_batch
from charging.rating import (
    destination_digits,
    no_rate_detail,
    over_limit_detail,
    session_over_limit_detail,
)
from charging.records import Charge, Decision, Result, Stored
from charging.requests import Request
from charging.state import BLOCKED, LABEL_LENGTH, Account, Session

#: kernel result codes -> results (``decision_kernels.SUCCESS`` ...)
RESULTS = (Result.SUCCESS, Result.CREDIT_LIMIT_REACHED, Result.USER_UNKNOWN,
           Result.SERVICE_DENIED, Result.RATING_FAILED, Result.SESSION_UNKNOWN)
KINDS = {"event": dk.EVENT, "initial": dk.INITIAL, "update": dk.UPDATE,
         "terminate": dk.TERMINATE}
#: values the kernel takes must be smaller than this in size (see the module docstring)
SMALL = 2**52
_REFUSED = (dk.USER_UNKNOWN, dk.SERVICE_DENIED)


def decide_columnar(requests: Sequence[Request], accounts: dict[str, Account | None],
                    catalogs: Catalogs, now_ms: int,
                    previous: dict[tuple[str, str], Stored] | None = None,
                    stats: dict[str, int] | None = None
                    ) -> tuple[list[Outcome], dict[str, Change]]:
    """``decide_batch``, the covered accounts' requests in one kernel call. ``stats``, if
    given, gets the counts of requests decided by the kernel ("fast") and by
    ``decide_batch`` ("slow") added to it."""
    previous = previous or {}
    by_account: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        found = by_account.get(req.account)
        if found is None:
            by_account[req.account] = [i]
        else:
            found.append(i)
    cols = _Columns(catalogs.current, now_ms)
    slow: list[int] = []
    for name, idx in by_account.items():
        if not cols.add(name, accounts.get(name), [requests[i] for i in idx], idx, previous):
            slow += idx
    outcomes: list[Outcome | None] = [None] * len(requests)
    changes: dict[str, Change] = {}
    if slow:
        slow.sort()
        decided, changed = decide_batch([requests[i] for i in slow], accounts, catalogs,
                                        now_ms, previous)
        for i, out in zip(slow, decided, strict=True):
            outcomes[i] = out
        changes.update(changed)
    cols.decide(requests, outcomes, changes)
    if stats is not None:
        stats["fast"] = stats.get("fast", 0) + len(requests) - len(slow)
        stats["slow"] = stats.get("slow", 0) + len(slow)
    return outcomes, changes  # type: ignore[return-value]


#: a session slot's row before the batch: no session held
_NO_SESSION = [0] * dk.SES_COLS
_NO_SESSION[dk.S_INSERTED] = -1


class _Columns:
    """The covered accounts' requests and state, as rows for the kernel.

    Group row 0 is the one of every service without buckets (no free units, nothing to
    change); a service with buckets has a group row of its own per account."""

    def __init__(self, cc: CompiledCatalog, now_ms: int) -> None:
        self.cc = cc
        self.version = cc.version
        self.tariff_of = cc.catalog.tariffs
        self.plans = cc.catalog.plans
        self.now_ms = now_ms
        self.buckets = Buckets(cc)
        self.tariffs: list[Tariff] = []
        self._tariff_index: dict[str, int] = {}
        self._rates: dict[tuple[str, str], int] = {}
        self._plan_allowances: dict[tuple[str, str], bool] = {}
        self._plan_rows: dict[tuple[str, str], tuple[int, int, int]] = {}
        self.accounts: list[Account] = []
        self.changes: list[Change] = []
        self.acc: list[int] = []  # the accounts' rows, one after the other
        #: (account, service, the account's change) per group row
        self.groups: list[tuple[Account, str, Change] | None] = [None]
        self.grp: list[list[int]] = [[0, 0, 0]]
        self.bk: list[list[int]] = []
        #: per session slot (an (account, session id) the batch names): the account, its
        #: change, the id and the session the account holds (or None)
        self.slots: list[tuple[Account, Change, str, Session | None]] = []
        self.ses: list[int] = []  # the slots' rows, one after the other
        self.req: list[int] = []  # the request rows, one after the other
        self.rows: list[int] = []  # request index per request row
        self.unknown: list[int] = []  # requests of accounts that do not exist
        self.max_buckets = 0

    # -- which accounts ---------------------------------------------------------------------
    def add(self, name: str, acct: Account | None, reqs: list[Request], idx: list[int],
            previous: dict) -> bool:
        """Take an account's requests if they are covered; False sends them to
        ``decide_batch``."""
        if len(reqs) > 1 and len({r.id for r in reqs}) != len(reqs):
            return False
        if previous and any((name, r.id) in previous for r in reqs):
            return False
        if acct is None:
            self.unknown += idx
            return True
        plan = self.plans.get(acct.plan)
        if acct.id != name or plan is None:
            return False
        if not (-SMALL < acct.balance < SMALL and 0 <= acct.reserved < SMALL):
            return False
        blocked = acct.status == BLOCKED
        tariffs = plan.tariffs
        services: dict[str, int] = {}  # -> group row (0 until the rows are made)
        stamps: set[int] = set()
        held: dict[str, Session | None] = {}
        sessions = acct.sessions
        for r in reqs:
            if r.kind not in KINDS or not (0 <= r.used < SMALL and 0 <= r.requested < SMALL):
                return False
            if r.seq is not None and not 0 <= r.seq < SMALL:
                return False
            if blocked or r.service not in tariffs:
                continue
            services[r.service] = 0
            stamps.add(r.ts_ms)
            if r.kind != "event":
                key = r.session or ""
                if key not in held:
                    session = sessions.get(key)
                    if session is not None:
                        if not self._session_covered(acct, key, session):
                            return False
                        services[session.service] = 0
                    held[key] = session
        allowances = acct.allowances
        for service in services:
            if allowances.get(service) or self._wanted(acct.plan, service):
                if not self._buckets_covered(acct, service, stamps):
                    return False
        self._take(acct, plan.name, tariffs, reqs, idx, services, held, blocked)
        return True

    def _wanted(self, plan: str, service: str) -> bool:
        """Whether the plan has allowances of the service."""
        key = (plan, service)
        found = self._plan_allowances.get(key)
        if found is None:
            found = self._plan_allowances[key] = bool(self.buckets.allowances_of(*key))
        return found

    def _buckets_covered(self, acct: Account, service: str, stamps: set[int]) -> bool:
        buckets = acct.allowances.get(service)
        if buckets and not all(0 <= b.units < SMALL and 0 <= b.reserved < SMALL
                               for b in buckets):
            return False
        return not any(self._needs_refresh(acct, service, ts) for ts in stamps)

    def _session_covered(self, acct: Account, key: str, s: Session) -> bool:
        if s.id != key or s.catalog_version != self.version or self._rate(s) < 0:
            return False
        if len(s.allowance_reserved) != len(acct.allowances.get(s.service, ())):
            return False
        if not (0 <= s.chargeable < SMALL and 0 <= s.used < SMALL
                and 0 <= s.money_reserved < SMALL):
            return False
        return not s.allowance_reserved or all(0 <= u < SMALL for u in s.allowance_reserved)

    def _rate(self, s: Session) -> int:
        """The current catalog's index of a session's rate, -1 if it has none."""
        key = (s.tariff, s.rate_id)
        r = self._rates.get(key)
        if r is None:
            try:
                r = self.cc.rate_index(*key) if s.tariff in self.tariff_of else -1
            except KeyError:
                r = -1
            self._rates[key] = r
        return r

    def _needs_refresh(self, acct: Account, service: str, ts_ms: int) -> bool:
        """Whether ``Buckets.refresh`` would change the service's buckets at ``ts_ms`` (a
        bucket whose period kind changed counts as a change, whatever it would do)."""
        wanted = self.buckets.allowances_of(acct.plan, service)
        buckets = acct.allowances.get(service)
        if not wanted and not buckets:
            return False
        if buckets is None or len(buckets) < len(wanted):
            return True
        for k, allowance in enumerate(wanted):
            held = buckets[k].period
            if len(held) != LABEL_LENGTH[allowance.period]:
                return True
            if self.buckets.period_label(allowance.period, ts_ms) > held:
                return True
        return any(b.units != 0 for b in buckets[len(wanted):])

    # -- rows --------------------------------------------------------------------------------
    def _tariff(self, name: str) -> int:
        t = self._tariff_index.get(name)
        if t is None:
            t = self._tariff_index[name] = len(self.tariffs)
            self.tariffs.append(self.tariff_of[name])
        return t

    def _take(self, acct: Account, plan: str, tariffs: dict[str, str], reqs: list[Request],
              idx: list[int], services: dict[str, int], held: dict[str, Session | None],
              blocked: bool) -> None:
        a = len(self.accounts)
        self.accounts.append(acct)
        change = Change()
        self.changes.append(change)
        self.acc += (acct.balance, acct.reserved, acct.allow_negative, 0)
        allowances = acct.allowances
        for service in services:
            buckets = allowances.get(service)
            if not buckets:
                continue
            services[service] = len(self.grp)
            self.groups.append((acct, service, change))
            b0 = len(self.bk)
            self.bk += [[b.units, b.reserved] for b in buckets]
            self.grp.append([b0, len(self.bk), 0])
            self.max_buckets = max(self.max_buckets, len(buckets))
        slot: dict[str, int] = {}
        for key, session in held.items():
            slot[key] = len(self.slots)
            if session is None:
                self.ses += _NO_SESSION
            else:
                self.ses += (1, services[session.service], self._rate(session),
                             self._tariff(session.tariff), session.chargeable, session.used,
                             session.granted, session.money_reserved, session.seq,
                             0, 0, -1, 0, 0, 0)
            self.slots.append((acct, change, key, session))
        rows = self.req
        plan_rows = self._plan_rows
        self.rows += idx
        for r in reqs:
            if blocked or r.service not in tariffs:
                rows += (a, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1)
                continue
            kind = KINDS[r.kind]
            seq = r.seq
            found = plan_rows.get((plan, r.service))
            t, p, v = found if found else self._plan_row(plan, tariffs, r.service)
            rows += (a, kind, 0, 0, 0, t, services[r.service],
                     -1 if kind == dk.EVENT else slot[r.session or ""], r.used, r.requested,
                     0 if seq is None else seq, seq is not None, p, v)

    def _plan_row(self, plan: str, tariffs: dict[str, str], service: str
                  ) -> tuple[int, int, int]:
        """(tariff row, plan index, service index) of a plan's service."""
        key = (plan, service)
        found = self._plan_rows.get(key)
        if found is None:
            cc = self.cc
            found = self._plan_rows[key] = (self._tariff(tariffs[service]),
                                            cc.plan_index[plan],
                                            cc.service_index.get(service, -1))
        return found

    # -- the kernel and back -----------------------------------------------------------------
    def decide(self, requests: Sequence[Request], outcomes: list, changes: dict) -> None:
        for i in self.unknown:
            req = requests[i]
            outcomes[i] = Outcome(req, Decision(req.id, req.kind, req.account, req.service,
                                                req.session, req.seq, Result.USER_UNKNOWN))
            if req.account not in changes:
                changes[req.account] = Change()
        if not self.rows:
            return
        for acct, change in zip(self.accounts, self.changes, strict=True):
            changes[acct.id] = change
        reqs, arrays = self.arrays(requests)
        out = self.kernel(arrays)
        self.outcomes(reqs, arrays, out, outcomes)
        self.write_back(reqs, arrays)

    def arrays(self, requests: Sequence[Request]) -> tuple[list[Request], tuple]:
        """The kernel's requests in input order, and its arrays (selected rates in)."""
        # the rows in input order (made account by account)
        order = sorted(range(len(self.rows)), key=self.rows.__getitem__)
        self.rows = [self.rows[j] for j in order]
        q = np.array(self.req, dtype=np.int64).reshape(-1, dk.REQ_COLS)[order]
        reqs = [requests[i] for i in self.rows]
        self._select_rates(reqs, q)
        acc = np.array(self.acc, dtype=np.int64).reshape(-1, 4)
        grp = np.array(self.grp, dtype=np.int64)
        bk = np.array(self.bk, dtype=np.int64).reshape(-1, 2)
        ses = np.array(self.ses, dtype=np.int64).reshape(-1, dk.SES_COLS)
        held = np.zeros((len(self.slots), self.max_buckets), dtype=np.int64)
        if self.max_buckets:
            for k, (_, _, _, session) in enumerate(self.slots):
                if session is not None and session.allowance_reserved:
                    held[k, :len(session.allowance_reserved)] = session.allowance_reserved
        tar = np.array([[t.quota, t.validity_s] for t in self.tariffs],
                       dtype=np.int64).reshape(-1, 2)
        return reqs, (acc, grp, bk, ses, held, tar, q)

    def kernel(self, arrays: tuple) -> np.ndarray:
        """The rules over the rows: the result rows; the state arrays changed in place."""
        tables = self.cc.tables
        return dk.decide_rows(tables.rate, tables.step, *arrays)

    def outcomes(self, reqs: list[Request], arrays: tuple, out: np.ndarray,
                 outcomes: list) -> None:
        self._outcomes(reqs, out.tolist(), outcomes)

    def write_back(self, reqs: list[Request], arrays: tuple) -> None:
        acc, grp, bk, ses, held, _, _ = arrays
        self._write_back(reqs, acc.tolist(), grp.tolist(), bk.tolist(), ses.tolist(),
                         held.tolist())

    def _select_rates(self, reqs: list[Request], q: np.ndarray) -> None:
        """``_Decider.select_rates`` for the kernel's requests (a denied one's service
        index is -1: NOT_IN_PLAN, never read)."""
        cc = self.cc
        n = len(reqs)
        seen: dict[str | None, int] = {}
        codes = [seen.setdefault(r.destination, len(seen)) for r in reqs]
        digits, ndigits = destination_digits(list(seen))  # each number once
        ts = np.fromiter((r.ts_ms for r in reqs), dtype=np.int64, count=n)
        status, rate, _, _ = kernels.rate_batch(
            cc.tables, np.ascontiguousarray(q[:, dk.R_PLAN]),
            np.ascontiguousarray(q[:, dk.R_SERVICE]), ts, digits[codes], ndigits[codes],
            np.zeros(n, dtype=np.int64))
        q[:, dk.R_STATUS] = status
        q[:, dk.R_RATE] = rate

    def _outcomes(self, reqs: list[Request], out: list[list[int]], outcomes: list) -> None:
        cc = self.cc
        version = cc.version
        currency = cc.catalog.currency
        rate_ids = cc.rate_ids
        tariffs = self.tariffs
        for i, req, o in zip(self.rows, reqs, out, strict=True):
            (result, detail, value, granted, validity, final, balance, taken, uncharged,
             rated, allowance, r, t) = o
            tariff = None if result == dk.SERVICE_DENIED else tariffs[t]
            decision = Decision(req.id, req.kind, req.account, req.service, req.session,
                                req.seq, RESULTS[result], granted, validity, final == 1,
                                balance, taken, 2 if tariff is None else tariff.decimals)
            out_ = Outcome(req, decision)
            outcomes[i] = out_
            if detail:
                decision.detail = _detail(detail, value, tariff, req)
            if tariff is None or not (taken or uncharged or allowance):
                continue
            out_.charge = Charge(req.id, req.account, tariff.service, req.session, req.seq,
                                 req.ts_ms, req.used, rated, allowance, taken, currency,
                                 tariff.name, rate_ids[r], version, balance, uncharged,
                                 tariff.decimals)
            if taken:
                out_.ledger.append({"id": req.id, "delta": -taken, "balance": balance,
                                    "reason": _reason(req.kind, result),
                                    "catalog_version": version})

    def _write_back(self, reqs: list[Request], acc: list, grp: list, bk: list, ses: list,
                    held: list) -> None:
        for acct, change, row in zip(self.accounts, self.changes, acc, strict=True):
            acct.balance, acct.reserved = row[dk.A_BAL], row[dk.A_RES]
            if row[dk.A_CHANGED]:
                change.changed = True
        for group, row in zip(self.groups, grp, strict=True):
            if group is not None and row[dk.G_CHANGED]:
                acct, service = group[0], group[1]
                for b, (units, reserved) in zip(acct.allowances[service],
                                                bk[row[dk.G_B0]:row[dk.G_B1]], strict=True):
                    b.units, b.reserved = units, reserved
                change = group[2]
                change.buckets.add(service)
                change.changed = True
        moved: list[tuple[int, Account, str, Session]] = []
        version = self.version
        for (acct, change, key, held_before), row, units in zip(self.slots, ses, held,
                                                                 strict=True):
            if row[dk.S_WRITTEN]:
                change.sessions_written.add(key)
            if row[dk.S_REMOVED]:
                change.sessions_removed.add(key)
            if row[dk.S_OPENED]:
                change.sessions_opened.add(key)
            inserted = row[dk.S_INSERTED]
            if row[dk.S_POPPED] or inserted >= 0:
                acct.sessions.pop(key, None)
            if not row[dk.S_PRESENT]:
                continue
            g = row[dk.S_GROUP]
            nb = grp[g][dk.G_B1] - grp[g][dk.G_B0]
            if inserted >= 0:
                t = self.tariffs[row[dk.S_TARIFF]]
                session = Session(key, reqs[inserted].service, version, t.name,
                                  self.cc.rate_ids[row[dk.S_RATE]], validity_s=t.validity_s)
                moved.append((inserted, acct, key, session))
            else:
                assert held_before is not None  # not inserted: the session was held
                session = held_before
            session.chargeable = row[dk.S_CHARGEABLE]
            session.used = row[dk.S_USED]
            session.granted = row[dk.S_GRANTED]
            session.money_reserved = row[dk.S_MONEY]
            session.allowance_reserved = units[:nb]
            session.seq = row[dk.S_SEQ]
            if row[dk.S_SEEN]:
                session.last_seen_ms = self.now_ms
        moved.sort(key=lambda m: m[0])
        for _, acct, key, session in moved:
            acct.sessions[key] = session


def _detail(code: int, value: int, tariff: Tariff | None, req: Request) -> str:
    if code == dk.NO_RATE:
        assert tariff is not None  # a rate is looked for in a tariff only
        return no_rate_detail(tariff.name, req.destination, req.ts_ms)
    if code == dk.OVER_LIMIT:
        return over_limit_detail(value)
    return session_over_limit_detail(value, req.used)


def _reason(kind: str, result: int) -> str:
    """The ledger entry's reason, as ``decide_batch`` gives it."""
    if kind == "event":
        return "event"
    return "unknown_session" if result == dk.SESSION_UNKNOWN else kind
