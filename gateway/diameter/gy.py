"""Gy/Ro credit control (RFC 4006 / RFC 8506, 3GPP TS 32.299) as chargeflow requests
(CONTRACT §6.2, §6.3): pure code, no I/O.

``ccr.parse_ccr`` reads a Credit-Control-Request into a ``CreditControl`` (or raises
``wire.AnswerError`` with the RFC 6733 Result-Code and Failed-AVP); ``plan`` turns it into
one ``Step`` per rating group — each rating group of a Diameter session is one chargeflow
session — and ``answer_avps`` builds the Credit-Control-Answer from the engine's decisions.

Request ids derive from the wire: ``<S>:<rating group>:<CC-Request-Number>`` with the
session ``<S>:<rating group>`` (S the Session-Id, or a digest of it when it is long), so a
CCR sent again — T flag or not, to this gateway or another — asks the engine the same ids
and gets the first decisions again, with nothing changed (RFC 4006 §5.7, CONTRACT §6.5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from diameter.message.avp import Avp
from diameter.message.constants import (
    APP_DIAMETER_CREDIT_CONTROL_APPLICATION,
    AVP_AUTH_APPLICATION_ID,
    AVP_CC_REQUEST_NUMBER,
    AVP_CC_REQUEST_TYPE,
    AVP_CC_SERVICE_SPECIFIC_UNITS,
    AVP_CC_TIME,
    AVP_CC_TOTAL_OCTETS,
    AVP_FINAL_UNIT_ACTION,
    AVP_FINAL_UNIT_INDICATION,
    AVP_GRANTED_SERVICE_UNIT,
    AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_RATING_GROUP,
    AVP_RESULT_CODE,
    AVP_SESSION_ID,
    AVP_VALIDITY_TIME,
)

from charging.catalog import Catalog
from charging.records import Result
from charging.requests import MAX_UNITS
from gateway.diameter import wire
from gateway.diameter.ccr import (  # noqa: F401 - the CCR's names, read here too
    DIRECT_DEBITING,
    EVENT,
    FINAL_UNIT_TERMINATE,
    INITIAL,
    KINDS,
    NAMES,
    TERMINATE,
    UPDATE,
    CreditControl,
    ServiceControl,
    Units,
    _called_number,
    echo_avps,
    parse_ccr,
    session_id_of,
)
from gateway.diameter.wire import AnswerError

#: decision result (CONTRACT §3.1) -> Result-Code (CONTRACT §6.3)
RESULT_CODES: dict[str, int] = {  # a Result is its code: looked up by the decision's string
    Result.SUCCESS: wire.SUCCESS,
    Result.CREDIT_LIMIT_REACHED: wire.CREDIT_LIMIT_REACHED,
    Result.SERVICE_DENIED: wire.END_USER_SERVICE_DENIED,
    Result.RATING_FAILED: wire.RATING_FAILED,
    Result.USER_UNKNOWN: wire.USER_UNKNOWN,
    Result.SESSION_UNKNOWN: wire.UNKNOWN_SESSION_ID,
}
#: a catalog unit -> the Granted/Requested/Used-Service-Unit AVP that counts it
UNIT_AVPS = {"second": AVP_CC_TIME, "byte": AVP_CC_TOTAL_OCTETS}
_SESSION_ROOM = 128 - len(":4294967295:4294967295")


@dataclass
class Step:
    """One rating group of a CCR: a chargeflow request, or an answer given here."""

    rating_group: int | None
    listed: bool  # named by an MSCC of the CCR: answered in the CCA
    service: str | None = None
    unit: str | None = None
    request: dict | None = None
    result_code: int | None = None  # answered without the engine (5031: no such service)
    decision: dict | None = None

    @property
    def code(self) -> int:
        if self.decision is not None:
            return RESULT_CODES.get(self.decision["result"], wire.UNABLE_TO_COMPLY)
        return self.result_code or wire.UNABLE_TO_COMPLY


@dataclass
class Record:
    """What the gateways keep of a Diameter session in Redis (``sessions.GySessions``):
    its account, its rating groups the engine holds a session of, and the CC-Request-Number
    of the CCR-T that ended it."""

    account: str
    open: dict[int, str] = field(default_factory=dict)  # rating group -> service
    ended: int | None = None


# -- the requests -------------------------------------------------------------------------------

def session_key(session_id: str) -> str:
    """The Session-Id as it goes into request ids: itself when short enough that ids stay
    within 128 characters, else ``gy-`` and a digest of it (the same on every gateway)."""
    if len(session_id) <= _SESSION_ROOM:
        return session_id
    return "gy-" + hashlib.blake2b(session_id.encode(), digest_size=20).hexdigest()


def needs_quota(ccr: CreditControl, catalog: Catalog) -> bool:
    """An EVENT with an empty Requested-Service-Unit: charged the tariff's quota, which
    depends on the account's plan."""
    return ccr.request_type == EVENT and any(
        _event_units(sc, catalog) is None for sc in ccr.services
        if catalog.service_of_rating_group(sc.rating_group) is not None)


def plan(ccr: CreditControl, account: str, record: Record | None, catalog: Catalog,
         now_ms: int, quota: Callable[[str], int] = lambda service: 0) -> list[Step]:
    """One ``Step`` per rating group (CONTRACT §6.2, §6.3).

    * CCR-I: an ``initial`` per MSCC (an absent or empty Requested-Service-Unit asks for the
      tariff's quota);
    * CCR-U: a rating group the engine holds a session of (``record.open``) gets an
      ``update``, or a ``terminate`` when its MSCC requests no units (its final report); a
      new one an ``initial``. ``record`` None: the Diameter session is unknown, its reports
      are ``update``/``terminate`` the engine answers SESSION_UNKNOWN, charging the usage;
    * CCR-T: a ``terminate`` per MSCC, and one with nothing used for each other open
      rating group (a CCR-T ends them all);
    * EVENT (DIRECT_DEBITING): an ``event`` of the Requested-Service-Unit's units (empty:
      ``quota(service)``, the tariff's quota).

    A rating group no catalog service lists is answered 5031 here."""
    s = session_key(ccr.session_id)
    n = ccr.request_number
    rtype = ccr.request_type
    steps: list[Step] = []
    for sc in ccr.services:
        rg = sc.rating_group
        service = catalog.service_of_rating_group(rg) if rg is not None else None
        if service is None:
            steps.append(Step(rg, True, result_code=wire.RATING_FAILED))
            continue
        unit = catalog.services[service]
        used = sum(u.of(unit) or 0 for u in sc.used)
        if used > MAX_UNITS:
            raise AnswerError(wire.INVALID_AVP_VALUE, f"rating group {rg} reports {used} "
                              f"units, beyond {MAX_UNITS}", [sc.avp])
        requested = sc.requested.of(unit) if sc.requested is not None else None
        if rtype == EVENT:
            units = _event_units(sc, catalog)
            kind, used, requested = "event", units if units is not None else quota(service), None
        elif rtype == INITIAL:
            kind = "initial"
        elif rtype == TERMINATE:
            kind = "terminate"
        elif record is None or rg in record.open:
            kind = "update" if sc.requested is not None else "terminate"
        else:
            kind = "initial" if sc.requested is not None else "terminate"
        steps.append(Step(rg, True, service, unit, _request(
            s, rg, n, kind, account, service, ccr, now_ms, used, requested)))
    if rtype == TERMINATE and record is not None:
        listed = {st.rating_group for st in steps}
        for rg, service in sorted(record.open.items()):
            if rg not in listed:
                steps.append(Step(rg, False, service, catalog.services.get(service), _request(
                    s, rg, n, "terminate", account, service, ccr, now_ms, 0, None)))
    return steps


def _event_units(sc: ServiceControl, catalog: Catalog) -> int | None:
    service = catalog.service_of_rating_group(sc.rating_group)
    unit = catalog.services.get(service, "event") if service else "event"
    if sc.requested is not None:
        return sc.requested.of(unit)
    units = [u.of(unit) for u in sc.used if u.of(unit) is not None]
    return sum(units) if units else None


def _request(s: str, rg: int, n: int, kind: str, account: str, service: str,
             ccr: CreditControl, now_ms: int, used: int, requested: int | None) -> dict:
    req = {"id": f"{s}:{rg}:{n}", "kind": kind, "account": account, "service": service,
           "ts": ccr.event_ms if ccr.event_ms is not None else now_ms}
    if kind != "event":
        req["session"] = f"{s}:{rg}"
        req["seq"] = n
    if used:
        req["used"] = used
    if requested and kind in ("initial", "update"):
        req["requested"] = requested
    if ccr.destination:
        req["destination"] = ccr.destination
    return req


def next_record(ccr: CreditControl, account: str, record: Record | None,
                steps: list[Step]) -> Record | None:
    """What the gateways keep of the session after this CCR (None: nothing to keep)."""
    rtype = ccr.request_type
    if rtype == EVENT or (record is None and rtype != INITIAL):
        return None
    out = Record(account, {}) if rtype == INITIAL else \
        Record(record.account, dict(record.open), record.ended)
    for st in steps:
        if st.decision is None or st.rating_group is None:
            continue
        kind, result = st.request["kind"], st.decision["result"]
        if kind == "initial" and result == "SUCCESS":
            out.open[st.rating_group] = st.service
        elif rtype == UPDATE and (kind == "terminate" or result == "SESSION_UNKNOWN"):
            out.open.pop(st.rating_group, None)
    if rtype == TERMINATE:
        out.ended = ccr.request_number  # the rating groups stay: a CCR-T sent again
    return out


# -- the answer ---------------------------------------------------------------------------------

def command_result(ccr: CreditControl, steps: list[Step], *, unknown_session: bool,
                   blocked: bool) -> int:
    """The command-level Result-Code (CONTRACT §6.3): 5030 for an unknown subscriber, 4010
    for a blocked account, 5002 for a CCR-U/T of a session no gateway knows; a CCR-I or
    EVENT whose every MSCC failed alike answers that code; else 2001."""
    if any(st.decision and st.decision["result"] == "USER_UNKNOWN" for st in steps):
        return wire.USER_UNKNOWN
    if blocked:
        return wire.END_USER_SERVICE_DENIED
    if unknown_session:
        return wire.UNKNOWN_SESSION_ID
    codes = {st.code for st in steps if st.listed}
    if ccr.request_type in (INITIAL, EVENT) and len(codes) == 1 and wire.SUCCESS not in codes:
        return codes.pop()
    return wire.SUCCESS


def service_answer(st: Step) -> Avp:
    """One MSCC of the CCA: Granted-Service-Unit, Rating-Group, Validity-Time, Result-Code,
    and Final-Unit-Indication (TERMINATE) on a last grant."""
    avps: list[Avp] = []
    d = st.decision
    if d is not None and d["result"] == "SUCCESS":
        kind = st.request["kind"]
        granted = st.request.get("used", 0) if kind == "event" else d["granted"]
        if kind in ("initial", "update", "event") and (granted or kind == "event"):
            avps.append(wire.new(AVP_GRANTED_SERVICE_UNIT, [
                wire.new(UNIT_AVPS.get(st.unit, AVP_CC_SERVICE_SPECIFIC_UNITS), granted)]))
    if st.rating_group is not None:
        avps.append(wire.new(AVP_RATING_GROUP, st.rating_group))
    if d is not None and d["result"] == "SUCCESS" and d["granted"] and d["validity_s"]:
        avps.append(wire.new(AVP_VALIDITY_TIME, d["validity_s"]))
    avps.append(wire.new(AVP_RESULT_CODE, st.code))
    if d is not None and d["result"] == "SUCCESS" and d["final"] and d["granted"]:
        avps.append(wire.new(AVP_FINAL_UNIT_INDICATION, [
            wire.new(AVP_FINAL_UNIT_ACTION, FINAL_UNIT_TERMINATE)]))
    return wire.new(AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, avps)


def answer_avps(ccr: CreditControl, steps: list[Step], result: int, origin_host: str,
                origin_realm: str, *, services: bool = True) -> list[Avp]:
    """The CCA's AVPs in RFC 4006 §3.2 order; MSCCs for the rating groups the CCR named
    (none when ``services`` is false: the command failed for the subscriber, 5030, 4010)."""
    avps = [wire.new(AVP_SESSION_ID, ccr.session_id),
            wire.new(AVP_RESULT_CODE, result),
            wire.new(AVP_ORIGIN_HOST, origin_host.encode()),
            wire.new(AVP_ORIGIN_REALM, origin_realm.encode()),
            wire.new(AVP_AUTH_APPLICATION_ID, APP_DIAMETER_CREDIT_CONTROL_APPLICATION),
            wire.new(AVP_CC_REQUEST_TYPE, ccr.request_type),
            wire.new(AVP_CC_REQUEST_NUMBER, ccr.request_number)]
    if services:
        avps += [service_answer(st) for st in steps if st.listed]
    return avps
