"""The Nchf door's charging, HTTP aside (CONTRACT §6.2, §6.4, §6.5): a schema-valid
ChargingDataRequest in, the engine's decisions as a ChargingDataResponse out.

Each rating group of a ChargingDataRef is one chargeflow session, ``nchf:<ref>:<rg>``: the
message that first reports the rating group sends its ``initial`` (a create carries no
units in practice: the first update opens the sessions), later ones ``update``, the
release a ``terminate`` for every rating group opened (and for any other it reports used
units of). Request ids are ``nchf:<ref>:<rg>:<n>`` with ``n`` the message's number in
its context (``gateway.nchf.context``), so a retransmission is a replay. An ``update``
the engine answers SESSION_UNKNOWN (the session was released after 2 × validity of
silence) has its units charged by the engine; the door then opens the session again in
the same message (``nchf:<ref>:<rg>:<n>:r``) so the rating group gets a grant.

Errors a client can act on are ``Problem``s (ProblemDetails, TS 29.571 §5.2.4.1).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field

import orjson

from charging.errors import RequestError, StoreError
from charging.requests import MAX_UNITS, parse
from gateway.bridge import AnswerTimeout, Busy
from gateway.local import RequestRejected
from gateway.nchf.context import Admitted, Contexts
from gateway.nchf.units import (
    FIELDS,
    Usage,
    rating_failed,
    requested_units,
    unit_information,
    usages,
    used_units,
)

log = logging.getLogger("chargeflow.nchf")


@dataclass(eq=False)  # an exception stays hashable
class Problem(Exception):
    """An answer other than success: HTTP ``status`` and a ProblemDetails body."""

    status: int
    title: str
    detail: str
    cause: str | None = None
    invalid_params: list[dict] = field(default_factory=list)
    retry_after_s: int | None = None

    def body(self) -> dict:
        doc: dict = {"status": self.status, "title": self.title, "detail": self.detail}
        if self.cause:
            doc["cause"] = self.cause
        if self.invalid_params:
            doc["invalidParams"] = self.invalid_params
        return doc


def digest(kind: str, body: dict) -> str:
    """What identifies a message's content: its body without ``retransmissionIndicator``."""
    rest = {k: v for k, v in body.items() if k != "retransmissionIndicator"}
    blob = orjson.dumps(rest, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(kind.encode() + b"\0" + blob).hexdigest()[:32]


def new_ref() -> str:
    return secrets.token_hex(12)


def gpsi_of(body: dict) -> str | None:
    info = body.get("pDUSessionChargingInformation")
    user = info.get("userInformation") if isinstance(info, dict) else None
    gpsi = user.get("servedGPSI") if isinstance(user, dict) else None
    return gpsi if isinstance(gpsi, str) else None


@dataclass
class Answer:
    """A message's outcome: the ref (for a create's Location) and the response body."""

    ref: str
    body: dict | None  # None for a release (204)
    replay: bool = False


class NchfService:
    """Creates, updates and releases charging data contexts (any instance, any message)."""

    def __init__(self, bridge, identities, catalogs, contexts: Contexts, on_unit=None):
        self.bridge = bridge
        self.identities = identities
        self.catalogs = catalogs
        self.contexts = contexts
        self.on_unit = on_unit or (lambda result_code: None)  # metrics

    async def create(self, body: dict) -> Answer:
        check_values(body)
        account = await self.identities.nchf_account(body.get("subscriberIdentifier"),
                                                     gpsi_of(body))
        if account is None:
            raise Problem(404, "Not Found", "no account has this subscriber "
                          f"(subscriberIdentifier {_shown(body.get('subscriberIdentifier'))}, "
                          f"gpsi {_shown(gpsi_of(body))})", "USER_UNKNOWN")
        d = digest("create", body)
        ref = await self.contexts.claim_create(d, new_ref())
        fresh = await self.contexts.create(ref, account, d, body["invocationSequenceNumber"])
        if not usages(body):
            return Answer(ref, response(body, None), replay=not fresh)
        answer = await self._message(ref, body, "update", d)
        return Answer(ref, answer.body, replay=not fresh)

    async def update(self, ref: str, body: dict) -> Answer:
        check_values(body)
        return await self._message(ref, body, "update", digest("update", body))

    async def release(self, ref: str, body: dict) -> Answer:
        check_values(body)
        return await self._message(ref, body, "release", digest("release", body))

    async def _message(self, ref: str, body: dict, kind: str, d: str) -> Answer:
        uses = usages(body)
        adm = await self.contexts.admit(ref, d, body.get("retransmissionIndicator") is True,
                                        body["invocationSequenceNumber"], kind, list(uses))
        if adm is None:
            raise Problem(404, "Not Found", f"no charging data context {_shown(ref)} (never "
                          "created, released, or expired)", "CONTEXT_NOT_FOUND")
        steps, infos = self._steps(ref, body, kind, adm, uses)
        decisions = await self._decide([r for *_, r in steps])
        refused = [rg for (rg, _, r), dec in zip(steps, decisions)
                   if r["kind"] == "initial" and dec["result"] != "SUCCESS"]
        await self.contexts.unopen(ref, adm.n, refused)
        decided = {rg: (unit, dec) for (rg, unit, _), dec in zip(steps, decisions)}
        # sessions the engine released meanwhile: their units were charged, open them again
        reopen = [(rg, unit, dict(r, id=r["id"] + ":r", kind="initial", seq=0, used=0))
                  for (rg, unit, r), dec in zip(steps, decisions)
                  if r["kind"] == "update" and dec["result"] == "SESSION_UNKNOWN"]
        for (rg, unit, _), dec in zip(reopen, await self._decide([r for *_, r in reopen])):
            decided[rg] = (unit, dec)
        if any(dec["result"] == "USER_UNKNOWN" for _, dec in decided.values()):
            raise Problem(404, "Not Found", f"the account of context {ref} is gone",
                          "USER_UNKNOWN")
        if kind == "release":
            return Answer(ref, None, adm.replay)
        for rg, (unit, dec) in decided.items():
            infos[rg] = unit_information(rg, dec, unit)
        units = [infos[rg] for rg in uses if rg in infos]
        for info in units:
            self.on_unit(info["resultCode"])
        return Answer(ref, response(body, units), adm.replay)

    def _steps(self, ref: str, body: dict, kind: str, adm: Admitted, uses: dict[int, Usage]
               ) -> tuple[list[tuple[int, str, dict]], dict[int, dict]]:
        """The chargeflow request of each rating group, as (rating group, unit, request),
        and the answers of the rating groups that name no service."""
        catalog = self._catalog()
        steps, infos = [], {}
        for rg in [*uses, *(rg for rg in sorted(adm.opened) if rg not in uses)]:
            usage = uses.get(rg) or Usage(rg, dict.fromkeys(FIELDS, 0), None)
            service = catalog.service_of_rating_group(rg)
            if service is None:
                infos[rg] = rating_failed(rg)
                continue
            unit = catalog.services[service]
            at = adm.opened.get(rg, -1)
            used = used_units(usage, unit)
            if kind == "release":
                if at < 0 and used == 0:
                    continue  # never opened, nothing to charge
                step = "terminate"
            else:
                step = "initial" if at == adm.n else "update"
            steps.append((rg, unit, self._request(ref, rg, adm, step, service, body, used,
                                                  requested_units(usage, unit))))
        return steps, infos

    def _request(self, ref: str, rg: int, adm: Admitted, step: str, service: str, body: dict,
                 used: int, requested: int) -> dict:
        req = {"id": f"nchf:{ref}:{rg}:{adm.n}", "kind": step, "account": adm.account,
               "service": service, "session": f"nchf:{ref}:{rg}",
               "seq": 0 if step == "initial" else adm.n, "ts": body["invocationTimeStamp"],
               "used": used}
        if step != "terminate":
            req["requested"] = requested
        return req

    def _catalog(self):
        try:
            return self.catalogs.current.catalog
        except StoreError as exc:
            raise Problem(503, "Service Unavailable", f"no catalog to rate with: {exc}",
                          "NF_CONGESTION", retry_after_s=5) from exc

    async def _decide(self, requests: list[dict]) -> list[dict]:
        if not requests:
            return []
        try:
            return await self.bridge.decide(requests)
        except (AnswerTimeout, Busy) as exc:
            raise Problem(503, "Service Unavailable", f"the engines did not answer: {exc}",
                          "NF_CONGESTION", retry_after_s=1) from exc
        except RequestRejected as exc:  # a defect of this door: say so, loudly
            log.error("the engine rejected a request the Nchf door built: %s", exc)
            raise Problem(500, "Internal Server Error", "the charging request could not be "
                          "built", "SYSTEM_FAILURE") from exc


def response(body: dict, units: list[dict] | None) -> dict:
    """A ChargingDataResponse; it echoes the request's invocationTimeStamp and sequence
    number, so a retransmission's answer is the first one, byte for byte."""
    doc: dict = {"invocationTimeStamp": body["invocationTimeStamp"],
                 "invocationSequenceNumber": body["invocationSequenceNumber"]}
    if units:
        doc["multipleUnitInformation"] = units
    return doc


def check_values(body: dict) -> None:
    """What the 3GPP schema allows but chargeflow cannot take (CONTRACT §2): a timestamp
    that is not RFC 3339, unit counts over 2⁴⁰. Checked before anything is changed."""
    peak = 0
    for item in body.get("multipleUnitUsage") or ():
        for fields in [item.get("requestedUnit") or {}, *(item.get("usedUnitContainer") or ())]:
            for name in FIELDS:
                if isinstance(fields.get(name), int):
                    peak = max(peak, fields[name])
            up, down = fields.get("uplinkVolume"), fields.get("downlinkVolume")
            if isinstance(up, int) and isinstance(down, int):
                peak = max(peak, up + down)
    # a rating group's units summed over its containers
    for usage in usages(body).values():
        peak = max(peak, *usage.used.values(),
                   usage.used["uplinkVolume"] + usage.used["downlinkVolume"])
    if peak > MAX_UNITS:
        raise Problem(400, "Bad Request", f"a unit count of {peak} is more than chargeflow "
                      f"takes ({MAX_UNITS} = 2^40 per report)", "MANDATORY_IE_INCORRECT",
                      [{"param": "/multipleUnitUsage", "reason": f"units above {MAX_UNITS}"}])
    try:
        parse({"id": "probe", "kind": "event", "account": "probe", "service": "probe",
               "ts": body["invocationTimeStamp"]})
    except RequestError as exc:
        raise Problem(400, "Bad Request", f"invocationTimeStamp: {exc.detail}",
                      "MANDATORY_IE_INCORRECT",
                      [{"param": "/invocationTimeStamp", "reason": exc.detail}]
                      ) from exc


def _shown(text: object) -> str:
    s = str(text) if text is not None else "absent"
    return s if len(s) <= 80 else s[:80] + "…"
