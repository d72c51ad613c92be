"""An independent expectation of what the engine decides: CONTRACT §4.2 over the exact
reference rater (``charging.reference``), one request at a time, per account in input order.

It covers what the flow tests send: events of every service (allowances first, money for the
rest), sessions of services without allowances (voice in the sample plan: grants by
``reference.max_grant``, interim charges ``rating(U_after) − rating(U_before)`` at the rate
chosen at ``initial``), update/terminate of unknown sessions, unknown accounts, blocked
accounts, services outside the plan and replayed ids. Money is exact ``Fraction`` currency.

It shares no code with the engine except the catalog parser and the reference rater.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction

from charging.catalog import Catalog
from charging.errors import RatingError
from charging.reference import max_grant, rate_units, select_rate

SUCCESS = "SUCCESS"
CREDIT = "CREDIT_LIMIT_REACHED"
UNKNOWN = "USER_UNKNOWN"
DENIED = "END_USER_SERVICE_DENIED"
RATING_FAILED = "RATING_FAILED"
SESSION_UNKNOWN = "SESSION_UNKNOWN"

#: Tuesday 2026-11-24 10:00 Europe/Berlin (peak band) and Saturday 2026-11-28 10:00 (off-peak).
TUE_PEAK_MS = 1795510800000
SAT_MS = TUE_PEAK_MS + 4 * 86400 * 1000
MOBILE = "4917612345"
LANDLINE = "4930123456"


def ts_ms(value: int | str) -> int:
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def dec(text: str | None) -> Fraction | None:
    """A decision's decimal string as an exact Fraction ("0.1515" -> 303/2000)."""
    return None if text is None else Fraction(text)


@dataclass
class Expect:
    result: str
    balance: Fraction | None
    charged: Fraction = Fraction(0)
    granted: int = 0
    validity_s: int = 0
    final: bool = False
    charge: dict | None = None  # units, allowance_units, rated_units, cost, uncharged, rate...


@dataclass
class _Session:
    tariff: object
    rate: object
    chargeable: int = 0
    reserved: Fraction = Fraction(0)


@dataclass
class _Account:
    plan: str
    balance: Fraction
    status: str = "active"
    allow_negative: bool = False
    sessions: dict[str, _Session] = field(default_factory=dict)
    buckets: dict[str, list[list]] = field(default_factory=dict)  # service -> [[units, label]]

    def reserved(self) -> Fraction:
        return sum((s.reserved for s in self.sessions.values()), Fraction(0))

    def available(self) -> Fraction | None:
        return None if self.allow_negative else self.balance - self.reserved()


class Model:
    def __init__(self, catalog: Catalog, accounts: Iterable[dict]):
        self.cat = catalog
        self.accounts: dict[str, _Account] = {}
        self.opening: dict[str, Fraction] = {}
        for a in accounts:
            self.accounts[a["id"]] = _Account(
                a["plan"], Fraction(a["balance"]), a.get("status", "active"),
                bool(a.get("allow_negative", False)))
            self.opening[a["id"]] = Fraction(a["balance"])
        self.decided: dict[str, Expect] = {}

    # -- the rules ---------------------------------------------------------------------------
    def apply(self, req: dict) -> Expect:
        if req["id"] in self.decided:  # a replay: the first decision again, nothing changes
            return self.decided[req["id"]]
        exp = self._apply(req)
        self.decided[req["id"]] = exp
        return exp

    def balance(self, account: str) -> Fraction:
        return self.accounts[account].balance

    def open_sessions(self, account: str) -> int:
        return len(self.accounts[account].sessions)

    def _apply(self, req: dict) -> Expect:
        acct = self.accounts.get(req["account"])
        if acct is None:
            return Expect(UNKNOWN, None)
        plan = self.cat.plans.get(acct.plan)
        service = req["service"]
        if acct.status == "blocked" or plan is None or service not in plan.tariffs:
            return Expect(DENIED, acct.balance)
        tariff = self.cat.tariffs[plan.tariffs[service]]
        kind, t = req["kind"], ts_ms(req["ts"])
        used, requested = req.get("used", 0), req.get("requested") or tariff.quota
        if kind in ("initial", "update", "terminate"):
            assert not [a for a in plan.allowances if a.service == service], \
                "the model keeps sessions to services without allowances"
        session = acct.sessions.get(req.get("session") or "")
        if kind == "event" or (kind != "initial" and session is None):
            try:
                rate = select_rate(self.cat, tariff, t, req.get("destination"))
            except RatingError:
                return Expect(RATING_FAILED, acct.balance)
            free = self._refresh(acct, plan, service, t)
            allowance = min(used, free)
            cost, rated = rate_units(tariff, rate, used - allowance)
            avail = acct.available()
            if kind == "event":
                if avail is not None and cost > avail:
                    return Expect(CREDIT, acct.balance)
                taken = cost
            else:  # update/terminate of an unknown session: an event that cannot be refused
                taken = cost if avail is None else min(cost, max(Fraction(0), avail))
            acct.balance -= taken
            self._consume(acct, service, allowance)
            result = SUCCESS if kind == "event" else SESSION_UNKNOWN
            return Expect(result, acct.balance, taken, charge=self._charge(
                used, rated, allowance, taken, cost - taken, tariff, rate))
        if kind == "initial":
            acct.sessions.pop(req["session"], None)  # a restarted session id: released
            try:
                rate = select_rate(self.cat, tariff, t, req.get("destination"))
            except RatingError:
                return Expect(RATING_FAILED, acct.balance)
            session = _Session(tariff, rate)
        taken, uncharged, rated = self._commit(acct, session, used)
        charge = self._charge(used, rated, 0, taken, uncharged, session.tariff, session.rate)
        tariff = session.tariff
        if kind == "terminate":
            del acct.sessions[req["session"]]
            return Expect(SUCCESS, acct.balance, taken, charge=charge)
        acct.sessions.pop(req["session"], None)
        avail = acct.available()
        g, money = max_grant(tariff, session.rate, session.chargeable, 0, requested, avail)
        if g == 0:
            if kind == "update":  # kept open without a reservation until terminate
                session.reserved = Fraction(0)
                acct.sessions[req["session"]] = session
            return Expect(CREDIT, acct.balance, taken, final=True, charge=charge)
        session.reserved = money
        acct.sessions[req["session"]] = session
        return Expect(SUCCESS, acct.balance, taken, granted=g, validity_s=tariff.validity_s,
                      final=g < requested, charge=charge)

    def _commit(self, acct: _Account, s: _Session, used: int) -> tuple[Fraction, Fraction, int]:
        """Release the session's reservation and charge ``used`` more units of it."""
        s.reserved = Fraction(0)
        before, q1 = rate_units(s.tariff, s.rate, s.chargeable)
        after, q2 = rate_units(s.tariff, s.rate, s.chargeable + used)
        cost = after - before
        avail = acct.available()
        taken = cost if avail is None else min(cost, max(Fraction(0), avail))
        acct.balance -= taken
        s.chargeable += used
        return taken, cost - taken, q2 - q1

    def _refresh(self, acct: _Account, plan, service: str, t: int) -> int:
        """The plan's allowance buckets of the service, refilled per period; free units."""
        wanted = [a for a in plan.allowances if a.service == service]
        buckets = acct.buckets.setdefault(service, [])
        local = datetime.fromtimestamp(t // 1000, tz=self.cat.zone)
        year, week, _ = local.isocalendar()
        for k, a in enumerate(wanted):
            label = {"none": "-", "day": local.strftime("%Y-%m-%d"),
                     "week": f"{year:04d}-W{week:02d}",
                     "month": local.strftime("%Y-%m")}[a.period]
            if k == len(buckets):
                buckets.append([a.units, label])
            elif label > buckets[k][1]:
                buckets[k] = [a.units, label]
        return sum(b[0] for b in buckets)

    def _consume(self, acct: _Account, service: str, units: int) -> None:
        for b in acct.buckets.get(service, []):
            part = min(units, b[0])
            b[0] -= part
            units -= part

    def _charge(self, used, rated, allowance, taken, uncharged, tariff, rate) -> dict | None:
        if taken == 0 and uncharged == 0 and allowance == 0:
            return None
        return {"units": used, "rated_units": rated, "allowance_units": allowance,
                "cost": taken, "uncharged": uncharged, "tariff": tariff.name, "rate": rate.id}


# -- checking what the engine said ------------------------------------------------------------

ECHO = ("id", "kind", "account", "service", "session", "seq")


def check_decision(decision: dict, req: dict, exp: Expect) -> None:
    """A decision (CONTRACT §3.1) against the request and the model's expectation."""
    for k in ECHO:
        assert decision[k] == req.get(k), (k, decision, req)
    got = (decision["result"], decision["granted"], decision["validity_s"], decision["final"],
           dec(decision["balance"]), dec(decision["charged"]))
    want = (exp.result, exp.granted, exp.validity_s, exp.final, exp.balance, exp.charged)
    assert got == want, f"{req}\n engine: {decision}\n model:  {exp}"
    assert isinstance(decision.get("latency_us"), int) and decision["latency_us"] >= 0, decision


def check_charge(charge: dict, req: dict, exp: Expect, catalog: Catalog) -> None:
    """A charge (CONTRACT §3.2) against the model's expectation."""
    want = exp.charge
    assert want is not None, f"unexpected charge {charge} for {req}"
    for k in ("id", "account", "service", "session", "seq"):
        assert charge[k] == req.get(k), (k, charge, req)
    got = {"units": charge["units"], "rated_units": charge["rated_units"],
           "allowance_units": charge["allowance_units"], "cost": dec(charge["cost"]),
           "uncharged": dec(charge["uncharged"]), "tariff": charge["tariff"],
           "rate": charge["rate"]}
    assert got == want, f"{req}\n engine: {charge}\n model:  {want}"
    assert charge["currency"] == catalog.currency
    assert charge["catalog_version"] == catalog.version
    assert dec(charge["balance"]) == exp.balance
    assert ts_ms(charge["ts"]) == ts_ms(req["ts"])


def strip_latency(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "latency_us"}


# -- scripted traffic ---------------------------------------------------------------------------

def voice_session(sid: str, account: str, rng: random.Random, *, updates: int,
                  ts: int, destination: str = MOBILE, seconds: tuple[int, int] = (0, 300),
                  requested: int | None = None) -> list[dict]:
    """initial, ``updates`` updates and a terminate; each report uses 0..300 s by default."""
    steps = []
    base = {"account": account, "service": "voice", "session": sid, "destination": destination}
    first = dict(base, id=f"{sid}:0", kind="initial", seq=0, ts=ts)
    if requested is not None:
        first["requested"] = requested
    steps.append(first)
    for k in range(1, updates + 2):
        kind = "update" if k <= updates else "terminate"
        step = dict(base, id=f"{sid}:{k}", kind=kind, seq=k, ts=ts + 60_000 * k,
                    used=rng.randint(*seconds))
        if kind == "update" and requested is not None:
            step["requested"] = requested
        steps.append(step)
    return steps


def event(rid: str, account: str, service: str, used: int, ts: int, **extra) -> dict:
    return {"id": rid, "kind": "event", "account": account, "service": service,
            "used": used, "ts": ts, **extra}


def interleave(per_account: dict[str, list[dict]], rng: random.Random) -> Iterator[dict]:
    """A random global order that keeps each account's requests in their order."""
    queues = {a: list(reversed(q)) for a, q in per_account.items() if q}
    tickets = [a for a, q in queues.items() for _ in q]
    rng.shuffle(tickets)
    for a in tickets:
        yield queues[a].pop()


def account_traffic(acct: str, rng: random.Random, n_sessions: int, n_sms: int,
                    n_data: int, tag: str = "") -> list[dict]:
    """A normal subscriber's day: voice sessions at three rates, SMS and data events."""
    out: list[dict] = []
    for s in range(n_sessions):
        ts, dest = rng.choice([(TUE_PEAK_MS, MOBILE), (SAT_MS, MOBILE),
                               (TUE_PEAK_MS, "+" + LANDLINE)])
        ts += rng.randrange(0, 3600) * 1000
        out += voice_session(f"{tag}{acct}-s{s}", acct, rng, updates=rng.randint(0, 3),
                             ts=ts, destination=dest)
    for e in range(n_sms):
        out.append(event(f"{tag}{acct}-m{e}", acct, "sms", rng.randint(1, 2),
                         TUE_PEAK_MS + rng.randrange(0, 86400) * 1000))
    for e in range(n_data):
        out.append(event(f"{tag}{acct}-d{e}", acct, "data", rng.randint(0, 5_000_000),
                         TUE_PEAK_MS + rng.randrange(0, 86400) * 1000))
    rng.shuffle(out)  # sessions stay ordered below
    return _reorder_sessions(out)


def _reorder_sessions(reqs: list[dict]) -> list[dict]:
    """Put each session's steps back in seq order, in the slots its steps occupy."""
    slots: dict[str, list[int]] = {}
    for i, r in enumerate(reqs):
        if r.get("session"):
            slots.setdefault(r["session"], []).append(i)
    out = list(reqs)
    for idx in slots.values():
        steps = sorted((reqs[i] for i in idx), key=lambda r: r["seq"])
        for i, step in zip(idx, steps):
            out[i] = step
    return out
