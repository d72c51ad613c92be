"""Gy/Ro credit control (RFC 4006 / RFC 8506, 3GPP TS 32.299) as chargeflow requests
(CONTRACT §6.2, §6.3): pure code, no I/O.

``parse_ccr`` reads a Credit-Control-Request into a ``CreditControl`` (or raises
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
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from diameter.message import Message
from diameter.message.avp import Avp
from diameter.message.constants import (
    APP_DIAMETER_CREDIT_CONTROL_APPLICATION,
    AVP_AUTH_APPLICATION_ID,
    AVP_CC_INPUT_OCTETS,
    AVP_CC_OUTPUT_OCTETS,
    AVP_CC_REQUEST_NUMBER,
    AVP_CC_REQUEST_TYPE,
    AVP_CC_SERVICE_SPECIFIC_UNITS,
    AVP_CC_TIME,
    AVP_CC_TOTAL_OCTETS,
    AVP_DESTINATION_REALM,
    AVP_EVENT_TIMESTAMP,
    AVP_FINAL_UNIT_ACTION,
    AVP_FINAL_UNIT_INDICATION,
    AVP_GRANTED_SERVICE_UNIT,
    AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_RATING_GROUP,
    AVP_REQUESTED_ACTION,
    AVP_REQUESTED_SERVICE_UNIT,
    AVP_RESULT_CODE,
    AVP_SERVICE_CONTEXT_ID,
    AVP_SESSION_ID,
    AVP_SUBSCRIPTION_ID,
    AVP_SUBSCRIPTION_ID_DATA,
    AVP_SUBSCRIPTION_ID_TYPE,
    AVP_TGPP_CALLED_PARTY_ADDRESS,
    AVP_TGPP_IMS_INFORMATION,
    AVP_TGPP_SERVICE_INFORMATION,
    AVP_USED_SERVICE_UNIT,
    AVP_VALIDITY_TIME,
    VENDOR_TGPP,
)

from charging.catalog import Catalog
from charging.requests import MAX_UNITS
from charging.timezones import MAX_TS_MS, MIN_TS_MS
from gateway.diameter import wire
from gateway.diameter.wire import AnswerError

INITIAL, UPDATE, TERMINATE, EVENT = 1, 2, 3, 4
KINDS = {INITIAL: "initial", UPDATE: "update", TERMINATE: "terminate", EVENT: "event"}
#: CC-Request-Type -> the name used in logs and metrics
NAMES = {INITIAL: "CCR-I", UPDATE: "CCR-U", TERMINATE: "CCR-T", EVENT: "CCR-E"}
DIRECT_DEBITING = 0
FINAL_UNIT_TERMINATE = 0

#: decision result (CONTRACT §3.1) -> Result-Code (CONTRACT §6.3)
RESULT_CODES = {
    "SUCCESS": wire.SUCCESS,
    "CREDIT_LIMIT_REACHED": wire.CREDIT_LIMIT_REACHED,
    "END_USER_SERVICE_DENIED": wire.END_USER_SERVICE_DENIED,
    "RATING_FAILED": wire.RATING_FAILED,
    "USER_UNKNOWN": wire.USER_UNKNOWN,
    "SESSION_UNKNOWN": wire.UNKNOWN_SESSION_ID,
}
#: a catalog unit -> the Granted/Requested/Used-Service-Unit AVP that counts it
UNIT_AVPS = {"second": AVP_CC_TIME, "byte": AVP_CC_TOTAL_OCTETS}
_SESSION_ROOM = 128 - len(":4294967295:4294967295")
_NTP_1900 = 2208988800  # seconds from 1900 to 1970
_NTP_ERA1 = 2085978496  # seconds from 1970 to 2036-02-07 06:28:16 (NTP era 1)
_DIGITS = re.compile(r"\+?[0-9]{1,32}")


@dataclass(frozen=True)
class Units:
    """The unit AVPs of one Requested- or Used-Service-Unit (None: absent)."""

    time: int | None = None
    total: int | None = None
    input: int | None = None
    output: int | None = None
    specific: int | None = None

    def of(self, unit: str) -> int | None:
        """The units a catalog unit counts (CONTRACT §6.2): second <- CC-Time; byte <-
        CC-Total-Octets, else CC-Input- + CC-Output-Octets; any other <-
        CC-Service-Specific-Units. None when the AVP is absent."""
        if unit == "second":
            return self.time
        if unit == "byte":
            if self.total is not None:
                return self.total
            if self.input is None and self.output is None:
                return None
            return (self.input or 0) + (self.output or 0)
        return self.specific


@dataclass(frozen=True)
class ServiceControl:
    """One Multiple-Services-Credit-Control of a CCR."""

    rating_group: int | None
    requested: Units | None  # None: no Requested-Service-Unit; Units(): an empty one
    used: tuple[Units, ...]
    avp: Avp


@dataclass(frozen=True)
class CreditControl:
    """What a CCR says, checked."""

    session_id: str
    origin_host: str
    request_type: int
    request_number: int
    subscriptions: tuple[tuple[int, str], ...]  # (Subscription-Id-Type, -Data)
    requested_action: int | None
    event_ms: int | None  # Event-Timestamp, epoch ms
    destination: str | None  # Called-Party-Address digits (3GPP IMS-Information)
    services: tuple[ServiceControl, ...]

    @property
    def name(self) -> str:
        return NAMES[self.request_type]


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


# -- reading a CCR ------------------------------------------------------------------------------

def parse_ccr(msg: Message) -> CreditControl:
    """The CCR ``msg`` (python-diameter's plain Message), or ``AnswerError``: 5005 for a
    missing AVP, 5009 for one given twice, 5004 for a bad value, 5001 for an unknown AVP
    with the M bit, 5014 for bad AVP lengths; each with Failed-AVP."""
    avps = msg.avps
    wire.unsupported_mandatory(avps)
    index = _index(avps)
    session_id = _text(_one(index, AVP_SESSION_ID, required=True))
    for code in (AVP_ORIGIN_HOST, AVP_ORIGIN_REALM, AVP_DESTINATION_REALM):
        _one(index, code, required=True)
    origin_host = _identity(_one(index, AVP_ORIGIN_HOST, required=True))
    app = _one(index, AVP_AUTH_APPLICATION_ID, required=True)
    if _int(app) != APP_DIAMETER_CREDIT_CONTROL_APPLICATION:
        raise AnswerError(wire.INVALID_AVP_VALUE, "Auth-Application-Id must be 4 (Diameter "
                          "credit control)", [app])
    _text(_one(index, AVP_SERVICE_CONTEXT_ID, required=True))
    rtype = _one(index, AVP_CC_REQUEST_TYPE, required=True)
    request_type = _int(rtype)
    if request_type not in KINDS:
        raise AnswerError(wire.INVALID_AVP_VALUE, f"CC-Request-Type {request_type} is not 1 "
                          "to 4", [rtype])
    number = _int(_one(index, AVP_CC_REQUEST_NUMBER, required=True))
    subscriptions = tuple(_subscription(a) for a in index.get((AVP_SUBSCRIPTION_ID, 0), []))
    action_avp = _one(index, AVP_REQUESTED_ACTION, required=request_type == EVENT)
    action = _int(action_avp) if action_avp is not None else None
    if request_type == EVENT and action != DIRECT_DEBITING:
        raise AnswerError(wire.INVALID_AVP_VALUE, f"Requested-Action {action} is not "
                          "supported: an EVENT is charged by DIRECT_DEBITING (0)", [action_avp])
    ts = _one(index, AVP_EVENT_TIMESTAMP)
    services = tuple(_service(a) for a in index.get((AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, 0),
                                                    []))
    seen: set[int] = set()
    for sc in services:
        if sc.rating_group is not None:
            if sc.rating_group in seen:
                raise AnswerError(wire.INVALID_AVP_VALUE, f"rating group {sc.rating_group} "
                                  "is named by two Multiple-Services-Credit-Control", [sc.avp])
            seen.add(sc.rating_group)
    if request_type == EVENT and not services:
        raise AnswerError(wire.MISSING_AVP, "an EVENT names what it charges in a "
                          "Multiple-Services-Credit-Control", [wire.placeholder(
                              AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)])
    return CreditControl(session_id, origin_host, request_type, number, subscriptions, action,
                         _timestamp(ts) if ts is not None else None, _destination(index),
                         services)


def echo_avps(msg: Message) -> list[Avp]:
    """Auth-Application-Id, CC-Request-Type and CC-Request-Number for an error CCA, those
    of the request that decode (RFC 4006 §3.2 wants them in every CCA)."""
    out = [wire.new(AVP_AUTH_APPLICATION_ID, APP_DIAMETER_CREDIT_CONTROL_APPLICATION)]
    for avp in msg.avps:
        if avp.code in (AVP_CC_REQUEST_TYPE, AVP_CC_REQUEST_NUMBER) and not avp.vendor_id \
                and len(avp.payload) == 4 and avp.code not in [a.code for a in out]:
            out.append(wire.new(avp.code, _int(avp)))
    return out


def session_id_of(msg: Message) -> str | None:
    """The Session-Id of a request, if it has a readable one (for error answers)."""
    for avp in msg.avps:
        if avp.code == AVP_SESSION_ID and not avp.vendor_id:
            try:
                return avp.payload.decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def _index(avps: list[Avp]) -> dict[tuple[int, int], list[Avp]]:
    out: dict[tuple[int, int], list[Avp]] = {}
    for avp in avps:
        out.setdefault((avp.code, avp.vendor_id), []).append(avp)
    return out


def _one(index: dict, code: int, *, vendor: int = 0, required: bool = False,
         inside: Avp | None = None) -> Avp | None:
    found = index.get((code, vendor), [])
    if len(found) > 1:
        raise AnswerError(wire.AVP_OCCURS_TOO_MANY_TIMES, f"{found[1].name} occurs "
                          f"{len(found)} times", [_within(inside, found[1])])
    if not found:
        if required:
            missing = wire.placeholder(code, vendor)
            raise AnswerError(wire.MISSING_AVP, f"{missing.name} is missing" +
                              (f" in {inside.name}" if inside is not None else ""),
                              [_within(inside, missing)])
        return None
    return found[0]


def _within(group: Avp | None, avp: Avp) -> Avp:
    """Failed-AVP for an AVP inside a grouped one: the group holding just it (§7.5)."""
    if group is None:
        return avp
    outer = wire.new(group.code, [avp], group.vendor_id)
    outer.flags = group.flags
    return outer


def _int(avp: Avp) -> int:
    value = wire.value_of(avp)
    if not isinstance(value, int):
        raise AnswerError(wire.INVALID_AVP_VALUE, f"{avp.name} is not an integer", [avp])
    return value


def _text(avp: Avp) -> str:
    try:
        text = avp.payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnswerError(wire.INVALID_AVP_VALUE, f"{avp.name} is not UTF-8", [avp]) from exc
    if not text:
        raise AnswerError(wire.INVALID_AVP_VALUE, f"{avp.name} is empty", [avp])
    return text


def _identity(avp: Avp) -> str:
    return _text(avp)


def _subscription(avp: Avp) -> tuple[int, str]:
    inner = wire.children(avp)
    wire.unsupported_mandatory(inner)
    index = _index(inner)
    kind = _int(_one(index, AVP_SUBSCRIPTION_ID_TYPE, required=True, inside=avp))
    data = _text(_one(index, AVP_SUBSCRIPTION_ID_DATA, required=True, inside=avp))
    return kind, data


def _units(avp: Avp) -> Units:
    inner = wire.children(avp)
    wire.unsupported_mandatory(inner)
    index = _index(inner)
    values = {}
    for name, code in (("time", AVP_CC_TIME), ("total", AVP_CC_TOTAL_OCTETS),
                       ("input", AVP_CC_INPUT_OCTETS), ("output", AVP_CC_OUTPUT_OCTETS),
                       ("specific", AVP_CC_SERVICE_SPECIFIC_UNITS)):
        found = _one(index, code, inside=avp)
        if found is not None:
            value = _int(found)
            if not 0 <= value <= MAX_UNITS:
                raise AnswerError(wire.INVALID_AVP_VALUE, f"{found.name} {value} is beyond "
                                  f"{MAX_UNITS} units", [_within(avp, found)])
            values[name] = value
    return Units(**values)


def _service(avp: Avp) -> ServiceControl:
    inner = wire.children(avp)
    wire.unsupported_mandatory(inner)
    index = _index(inner)
    rg = _one(index, AVP_RATING_GROUP, inside=avp)
    rsu = _one(index, AVP_REQUESTED_SERVICE_UNIT, inside=avp)
    used = tuple(_units(a) for a in index.get((AVP_USED_SERVICE_UNIT, 0), []))
    return ServiceControl(_int(rg) if rg is not None else None,
                          _units(rsu) if rsu is not None else None, used, avp)


def _timestamp(avp: Avp) -> int:
    """Event-Timestamp (NTP seconds, RFC 6733 §4.3.1 Time) as epoch milliseconds."""
    if len(avp.payload) != 4:
        raise AnswerError(wire.INVALID_AVP_LENGTH, "Event-Timestamp is not 4 octets", [avp])
    (seconds,) = struct.unpack("!I", avp.payload)
    epoch = seconds - _NTP_1900 if seconds >= 1 << 31 else seconds + _NTP_ERA1
    ms = epoch * 1000
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise AnswerError(wire.INVALID_AVP_VALUE, "Event-Timestamp is outside the supported "
                          "range", [avp])
    return ms


def _destination(index: dict) -> str | None:
    """The called number of 3GPP Service-Information / IMS-Information /
    Called-Party-Address (``tel:+49…`` or ``sip:+49…@host``), digits with an optional +;
    None when absent or not a number (the tariff's rate for any destination applies)."""
    for info in index.get((AVP_TGPP_SERVICE_INFORMATION, VENDOR_TGPP), []):
        try:
            for ims in wire.children(info):
                if (ims.code, ims.vendor_id) != (AVP_TGPP_IMS_INFORMATION, VENDOR_TGPP):
                    continue
                for a in wire.children(ims):
                    if (a.code, a.vendor_id) == (AVP_TGPP_CALLED_PARTY_ADDRESS, VENDOR_TGPP):
                        return _called_number(a.payload.decode("utf-8", "replace"))
        except AnswerError:
            return None
    return None


def _called_number(uri: str) -> str | None:
    text = uri.split(":", 1)[1] if ":" in uri else uri
    text = text.split("@", 1)[0].split(";", 1)[0].replace("-", "")
    return text if _DIGITS.fullmatch(text) else None


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
