"""CONTRACT §4.2 (and the §3.1/§3.2 outputs) for one request against one account, in plain
Python over the exact reference rater.

This is the baseline's charging logic: an independent implementation of what the engine
decides, sharing only the wire contract (``charging.requests``), the catalog model
(``charging.catalog``), money formatting (``charging.money``) and the reference rater
(``charging.reference``, exact ``Fraction``s) with it — none of the engine's decision code,
kernels or compiled tables. Money is integer micros in the account state (``state``);
ratings come back from the reference as exact currency amounts already rounded to the
tariff's decimals, so they convert to whole micros.

What it decides, in the engine's order (README "Decisions where the contract is silent"):

* unknown account → USER_UNKNOWN (balance null); blocked account, a plan the catalog lacks or
  a service outside the plan → END_USER_SERVICE_DENIED. Nothing changes.
* ``event``: allowance units of the service first (buckets refilled per period, used in plan
  order), money for the rest; CREDIT_LIMIT_REACHED and nothing taken if the available balance
  cannot pay it all.
* ``initial``: an open session of that id is released first; the rate is chosen from the
  request's time and destination; ``used`` on an initial is charged like a first report; the
  grant is ``reference.max_grant`` with the service's free allowance units; a grant of 0 is
  CREDIT_LIMIT_REACHED, final, and leaves no session.
* ``update`` / ``terminate``: release the session's reservation, take the reported units from
  its service's allowance then money (``rating(C + x) − rating(C)`` at the session's rate) as
  far as the balance allows (the rest ``uncharged``), then re-grant (update) or end
  (terminate). An update granted 0 keeps the session open without a reservation. A usage the
  engine cannot represent (cost above 9·10¹²) ends the session with RATING_FAILED.
* ``update`` / ``terminate`` of a session not held: charged like an event that may not be
  refused, SESSION_UNKNOWN, nothing granted.
* accounts allowed to go negative are charged down to −(2⁵³ − 1) micros at most.

Replays are the store's business (it looks the request id up before deciding). Rejects
(undecodable or invalid requests) never get here: ``charging.requests`` turns them away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

from bench.baseline.state import AccountState, Bucket, Session
from charging.catalog import Catalog, Plan, Rate, Tariff
from charging.errors import RatingError
from charging.money import MICROS, format_amount, to_micros
from charging.rating import (
    no_rate_detail,
    over_limit_detail,
    session_over_limit_detail,
    version_gone_detail,
)
from charging.reference import max_grant, rate_units, select_rate
from charging.requests import Request

SUCCESS = "SUCCESS"
CREDIT_LIMIT_REACHED = "CREDIT_LIMIT_REACHED"
USER_UNKNOWN = "USER_UNKNOWN"
SERVICE_DENIED = "END_USER_SERVICE_DENIED"
RATING_FAILED = "RATING_FAILED"
SESSION_UNKNOWN = "SESSION_UNKNOWN"

#: Balances stay within ±(2**53 − 1) micros (README "Balances"): an account allowed to go
#: negative is charged down to the floor at most, the rest reported as uncharged.
BALANCE_FLOOR = -(2**53 - 1)
#: Decimals of ``charged`` in refusals where no tariff applies (otherwise the tariff's).
REFUSAL_DECIMALS = 2


# -- outputs ------------------------------------------------------------------------------------

@dataclass(slots=True)
class Outcome:
    decision: dict  # CONTRACT §3.1 without latency_us
    charge: dict | None = None  # CONTRACT §3.2, when money or allowance was taken or owed
    #: balance changes, in order: {"id", "delta", "balance", "reason"} (micros)
    ledger: list[dict] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Used:
    """What charging reported units did (micros for money)."""

    units: int
    rated: int
    allowance: int
    taken: int
    uncharged: int


def balance_text(micros: int) -> str:
    """A balance with at least two decimals, more only when it has them: ``10.00``,
    ``12.3456``, ``-0.000001``."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    return f"{sign}{whole}.{f'{frac:06d}'.rstrip('0').ljust(2, '0')}"


def utc_text(ts_ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, as charges carry ``ts``."""
    dt = datetime.fromtimestamp(ts_ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"


def period_label(period: str, ts_ms: int, zone: ZoneInfo) -> str:
    """The allowance period holding ``ts_ms`` in the catalog zone: ``-`` (none),
    ``2026-11-24`` (day), ``2026-W48`` (ISO week), ``2026-11`` (month)."""
    if period == "none":
        return "-"
    local = datetime.fromtimestamp(ts_ms // 1000, tz=zone)
    if period == "day":
        return f"{local:%Y-%m-%d}"
    if period == "week":
        year, week, _ = local.isocalendar()
        return f"{year:04d}-W{week:02d}"
    return f"{local:%Y-%m}"


# -- the rules ----------------------------------------------------------------------------------

class Rules:
    """The charging rules over one catalog (the baseline does not hot-reload catalogs)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.zone = catalog.zone
        self._rates = {(t.name, r.id): r for t in catalog.tariffs.values() for r in t.rates}

    def decide(self, req: Request, acct: AccountState | None, now_ms: int) -> Outcome:
        """Decide one request, changing ``acct`` in place; ``now_ms`` is the baseline clock
        (it only stamps sessions, it never changes a decision)."""
        if acct is None:
            return self._refuse(req, USER_UNKNOWN, None)
        plan = self.catalog.plans.get(acct.plan)
        if acct.status == "blocked" or plan is None or req.service not in plan.tariffs:
            return self._refuse(req, SERVICE_DENIED, acct)
        tariff = self.catalog.tariffs[plan.tariffs[req.service]]
        if req.kind == "event":
            return self._event(req, acct, plan, tariff)
        if req.kind == "initial":
            return self._initial(req, acct, plan, tariff, now_ms)
        session = acct.sessions.get(req.session or "")
        if session is None:
            return self._unknown_session(req, acct, plan, tariff)
        return self._step(req, acct, plan, session, now_ms)

    # -- kinds
    def _event(self, req: Request, acct: AccountState, plan: Plan, tariff: Tariff) -> Outcome:
        return self._usage(req, acct, plan, tariff, SUCCESS, "event")

    def _usage(self, req: Request, acct: AccountState, plan: Plan, tariff: Tariff,
               result: str, reason: str) -> Outcome:
        """Usage outside a held session, allowances first: an event is refused without the
        money; a step of a session not held is charged as far as the balance allows."""
        rate = self._select(tariff, req)
        if rate is None:
            return self._refuse(req, RATING_FAILED, acct, tariff.decimals,
                                no_rate_detail(tariff.name, req.destination, req.ts_ms))
        self._refresh(acct, plan, req.service, req.ts_ms)
        allowance = min(req.used, acct.free_units(req.service))
        try:
            cost, rated = rate_units(tariff, rate, req.used - allowance)
        except RatingError:
            return self._refuse(req, RATING_FAILED, acct, tariff.decimals,
                                over_limit_detail(req.used - allowance))
        cost_micros = to_micros(cost)
        available = acct.available()
        if result == SUCCESS and available is not None and cost_micros > available:
            return self._refuse(req, CREDIT_LIMIT_REACHED, acct, tariff.decimals)
        taken, uncharged = self._take(acct, cost_micros)
        self._consume(acct, req.service, allowance)
        out = self._decided(req, result, acct, charged=taken, decimals=tariff.decimals)
        self._charged(out, req, acct, tariff, rate,
                      _Used(req.used, rated, allowance, taken, uncharged), reason)
        return out

    def _initial(self, req: Request, acct: AccountState, plan: Plan, tariff: Tariff,
                 now_ms: int) -> Outcome:
        sid = req.session or ""
        old = acct.sessions.pop(sid, None)
        if old is not None:  # the gateway restarted the session id: release the old one
            self._release(acct, old)
        rate = self._select(tariff, req)
        if rate is None:
            return self._refuse(req, RATING_FAILED, acct, tariff.decimals,
                                no_rate_detail(tariff.name, req.destination, req.ts_ms))
        self._refresh(acct, plan, req.service, req.ts_ms)
        session = Session(service=req.service, tariff=tariff.name, rate=rate.id,
                          catalog_version=self.catalog.version, validity_s=tariff.validity_s,
                          held=[0] * len(acct.buckets.get(req.service, ())))
        used = self._commit(acct, session, tariff, rate, req.used)
        if used is None:
            return self._refuse(req, RATING_FAILED, acct, tariff.decimals,
                                over_limit_detail(req.used))
        requested = req.requested or tariff.quota
        granted = self._grant(acct, session, tariff, rate, requested)
        if granted == 0:  # refused: no session is left behind
            out = self._decided(req, CREDIT_LIMIT_REACHED, acct, final=True,
                                charged=used.taken, decimals=tariff.decimals)
        else:
            session.seq = req.seq or 0
            session.last_seen_ms = now_ms
            acct.sessions[sid] = session
            out = self._decided(req, SUCCESS, acct, granted=granted,
                                validity=tariff.validity_s, final=granted < requested,
                                charged=used.taken, decimals=tariff.decimals)
        self._charged(out, req, acct, tariff, rate, used, "initial")
        return out

    def _step(self, req: Request, acct: AccountState, plan: Plan, session: Session,
              now_ms: int) -> Outcome:
        """update / terminate of a held session; its own service and rate count, whatever
        service the request names."""
        tariff = self.catalog.tariffs.get(session.tariff)
        rate = self._rates.get((session.tariff, session.rate))
        if tariff is None or rate is None:
            return self._refuse(req, RATING_FAILED, acct, REFUSAL_DECIMALS, version_gone_detail(
                req.session or "", session.catalog_version, session.tariff, session.rate))
        sid = req.session or ""
        self._release(acct, session)
        self._refresh(acct, plan, session.service, req.ts_ms)
        chargeable = session.chargeable
        used = self._commit(acct, session, tariff, rate, req.used)
        if used is None:  # beyond what the engine represents: end the session
            acct.sessions.pop(sid, None)
            return self._refuse(req, RATING_FAILED, acct, tariff.decimals,
                                session_over_limit_detail(chargeable, req.used))
        if req.seq is not None:
            session.seq = req.seq
        session.last_seen_ms = now_ms
        requested = req.requested or tariff.quota
        granted = 0
        result = SUCCESS
        if req.kind == "terminate":
            acct.sessions.pop(sid, None)
        else:
            granted = self._grant(acct, session, tariff, rate, requested)
            result = SUCCESS if granted else CREDIT_LIMIT_REACHED
        out = self._decided(req, result, acct, granted=granted,
                            validity=tariff.validity_s if granted else 0,
                            final=req.kind == "update" and granted < requested,
                            charged=used.taken, decimals=tariff.decimals)
        self._charged(out, req, acct, tariff, rate, used, req.kind)
        return out

    def _unknown_session(self, req: Request, acct: AccountState, plan: Plan,
                         tariff: Tariff) -> Outcome:
        """update / terminate of a session not held: an event that may not be refused."""
        return self._usage(req, acct, plan, tariff, SESSION_UNKNOWN, "unknown_session")

    # -- money and allowances
    def _select(self, tariff: Tariff, req: Request) -> Rate | None:
        try:
            return select_rate(self.catalog, tariff, req.ts_ms, req.destination)
        except RatingError:
            return None

    def _commit(self, acct: AccountState, session: Session, tariff: Tariff, rate: Rate,
                used: int) -> _Used | None:
        """Charge ``used`` units to a session whose reservation was released: its service's
        free allowance first, then rating(C + rest) − rating(C) as far as the balance allows.
        None when the rating is beyond the engine's range."""
        allowance = min(used, acct.free_units(session.service))
        extra = used - allowance
        try:
            before, q1 = rate_units(tariff, rate, session.chargeable)
            after, q2 = rate_units(tariff, rate, session.chargeable + extra)
        except RatingError:
            return None
        taken, uncharged = self._take(acct, to_micros(after - before))
        self._consume(acct, session.service, allowance)
        session.chargeable += extra
        session.used += used
        return _Used(used, q2 - q1, allowance, taken, uncharged)

    def _grant(self, acct: AccountState, session: Session, tariff: Tariff, rate: Rate,
               requested: int) -> int:
        """Reserve the largest affordable grant (§4.2): allowance units first, money for the
        rest. Returns the units granted. On an account allowed to go negative the money held
        may take balance - reserved down to the floor and reserved up to -floor, no further."""
        free = acct.free_units(session.service)
        available = acct.available()
        if available is None:
            available = min(acct.balance - acct.reserved - BALANCE_FLOOR,
                            -BALANCE_FLOOR - acct.reserved)
        limit = Fraction(max(0, available), MICROS)
        g, money = max_grant(tariff, rate, session.chargeable, free, requested, limit)
        session.granted = g
        if g == 0:
            return 0
        session.money = to_micros(money)
        held = min(g, free)
        buckets = acct.buckets.get(session.service, [])
        session.held = [0] * len(buckets)
        for k, bucket in enumerate(buckets):
            part = min(held, bucket.free)
            bucket.reserved += part
            session.held[k] = part
            held -= part
        return g

    @staticmethod
    def _release(acct: AccountState, session: Session) -> None:
        """Return a session's held money and allowance units to the account."""
        session.money = 0
        for bucket, held in zip(acct.buckets.get(session.service, ()), session.held):
            bucket.reserved -= held
        session.held = [0] * len(session.held)
        session.granted = 0

    @staticmethod
    def _take(acct: AccountState, cost: int) -> tuple[int, int]:
        """Take ``cost`` micros as far as the balance allows: (taken, uncharged)."""
        available = acct.available()
        if available is None:
            taken = min(cost, acct.balance - BALANCE_FLOOR)
        else:
            taken = min(cost, max(0, available))
        acct.balance -= taken
        return taken, cost - taken

    @staticmethod
    def _consume(acct: AccountState, service: str, units: int) -> None:
        for bucket in acct.buckets.get(service, ()):
            part = min(units, bucket.free)
            bucket.units -= part
            units -= part

    def _refresh(self, acct: AccountState, plan: Plan, service: str, ts_ms: int) -> None:
        """The plan's allowance buckets of the service: created on first use, refilled when
        the request's time is in a later period than the bucket's (catalog time zone).
        Buckets the plan no longer has keep no units."""
        wanted = [a for a in plan.allowances if a.service == service]
        if not wanted and not acct.buckets.get(service):
            return
        buckets = acct.buckets.setdefault(service, [])
        for k, allowance in enumerate(wanted):
            label = period_label(allowance.period, ts_ms, self.zone)
            if k == len(buckets):
                buckets.append(Bucket(allowance.units, 0, label))
            elif label > buckets[k].period:
                buckets[k].units = allowance.units
                buckets[k].period = label
        for bucket in buckets[len(wanted):]:
            bucket.units = 0

    # -- outputs
    def _refuse(self, req: Request, result: str, acct: AccountState | None,
                decimals: int = REFUSAL_DECIMALS, detail: str | None = None) -> Outcome:
        out = self._decided(req, result, acct, decimals=decimals)
        if detail is not None:
            out.decision["detail"] = detail
        return out

    @staticmethod
    def _decided(req: Request, result: str, acct: AccountState | None, *, granted: int = 0,
                 validity: int = 0, final: bool = False, charged: int = 0,
                 decimals: int = REFUSAL_DECIMALS) -> Outcome:
        return Outcome({
            "id": req.id, "kind": req.kind, "account": req.account, "service": req.service,
            "session": req.session, "seq": req.seq, "result": result, "granted": granted,
            "validity_s": validity, "final": final,
            "balance": balance_text(acct.balance) if acct is not None else None,
            "charged": format_amount(charged, decimals),
        })

    def _charged(self, out: Outcome, req: Request, acct: AccountState, tariff: Tariff,
                 rate: Rate, used: _Used, reason: str) -> None:
        """Attach the charge (and the ledger entry) when money or allowance was involved."""
        if used.taken == 0 and used.uncharged == 0 and used.allowance == 0:
            return
        out.charge = {
            # the service charged (a session step's is its session's, whatever it names)
            "id": req.id, "account": req.account, "service": tariff.service,
            "session": req.session, "seq": req.seq, "ts": utc_text(req.ts_ms),
            "units": used.units, "rated_units": used.rated, "allowance_units": used.allowance,
            "cost": format_amount(used.taken, tariff.decimals),
            "currency": self.catalog.currency, "tariff": tariff.name, "rate": rate.id,
            "catalog_version": self.catalog.version, "balance": balance_text(acct.balance),
            "uncharged": (format_amount(used.uncharged, tariff.decimals)
                          if used.uncharged else "0"),
        }
        if used.taken:
            out.ledger.append({"id": req.id, "delta": -used.taken, "balance": acct.balance,
                               "reason": reason})
