"""Reading a Credit-Control-Request (RFC 4006 §3.1, 3GPP TS 32.299) into a checked
``CreditControl``, or refusing it with ``wire.AnswerError``: the Result-Code RFC 6733 gives
(5005 missing, 5009 twice, 5004 bad value, 5001 unknown with the M bit, 5014 bad lengths)
and the Failed-AVP naming what was wrong. Pure code, no I/O.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

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
    AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_RATING_GROUP,
    AVP_REQUESTED_ACTION,
    AVP_REQUESTED_SERVICE_UNIT,
    AVP_SERVICE_CONTEXT_ID,
    AVP_SESSION_ID,
    AVP_SUBSCRIPTION_ID,
    AVP_SUBSCRIPTION_ID_DATA,
    AVP_SUBSCRIPTION_ID_TYPE,
    AVP_TGPP_CALLED_PARTY_ADDRESS,
    AVP_TGPP_IMS_INFORMATION,
    AVP_TGPP_SERVICE_INFORMATION,
    AVP_USED_SERVICE_UNIT,
    VENDOR_TGPP,
)

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
#: AVPs only an answer carries (RFC 6733 §7, RFC 4006 §10.1: "0" in a CCR), here or in an
#: MSCC: Result-Code, Experimental-Result, Failed-AVP, Final-Unit-Indication,
#: Granted-Service-Unit, Validity-Time
ANSWER_ONLY = frozenset({268, 297, 279, 430, 431, 448})
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


def parse_ccr(msg: Message) -> CreditControl:
    """The CCR ``msg`` (python-diameter's plain Message), or ``AnswerError``: 5005 for a
    missing AVP, 5009 for one given twice, 5004 for a bad value, 5001 for an unknown AVP
    with the M bit, 5008 for one only an answer carries, 5014 for bad AVP lengths; each
    with Failed-AVP."""
    avps = msg.avps
    wire.unsupported_mandatory(avps)
    _not_allowed(avps, ANSWER_ONLY)
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


def _not_allowed(avps: list[Avp], codes: frozenset[int], inside: Avp | None = None) -> None:
    """5008 DIAMETER_AVP_NOT_ALLOWED for an AVP a CCR must not carry (RFC 4006 §10.1)."""
    for avp in avps:
        if avp.code in codes and not avp.vendor_id:
            raise AnswerError(wire.AVP_NOT_ALLOWED, f"{avp.name} is not allowed in a "
                              "Credit-Control-Request", [_within(inside, avp)])


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
    _not_allowed(inner, ANSWER_ONLY, avp)
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
