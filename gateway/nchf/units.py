"""Nchf units and answers, pure (CONTRACT §6.2, §6.4): what a ChargingDataRequest reports per
rating group, and the multipleUnitInformation a decision becomes.

Units by the service's unit: ``second`` is ``time``; ``byte`` is ``totalVolume``, else
``uplinkVolume`` + ``downlinkVolume``; ``event`` is ``serviceSpecificUnits``. A rating group
named twice in one body is one usage (its used units summed); an absent or empty
``requestedUnit`` asks for the tariff's quota.
"""

from __future__ import annotations

from dataclasses import dataclass

from charging.records import Result

#: CONTRACT §3.1 result -> Nchf resultCode (USER_UNKNOWN and SESSION_UNKNOWN are not per
#: rating group: the door answers them itself)
RESULT_CODES: dict[str, str] = {  # a Result is its code: looked up by the decision's string
    Result.SUCCESS: "SUCCESS",
    Result.CREDIT_LIMIT_REACHED: "QUOTA_LIMIT_REACHED",
    Result.SERVICE_DENIED: "END_USER_SERVICE_DENIED",
    Result.RATING_FAILED: "RATING_FAILED",
}


@dataclass
class Usage:
    """One rating group's part of a message: units per Nchf field, summed over containers."""

    rating_group: int
    used: dict[str, int]  # time / totalVolume / uplinkVolume / downlinkVolume / ...
    requested: dict[str, int] | None  # requestedUnit as sent (None: absent)
    total_volume_seen: bool = False  # some container carried totalVolume


FIELDS = ("time", "totalVolume", "uplinkVolume", "downlinkVolume", "serviceSpecificUnits")


def usages(body: dict) -> dict[int, Usage]:
    """The rating groups of a (schema-valid) body's multipleUnitUsage, in their order."""
    out: dict[int, Usage] = {}
    for item in body.get("multipleUnitUsage") or ():
        rg = item["ratingGroup"]
        usage = out.setdefault(rg, Usage(rg, dict.fromkeys(FIELDS, 0), None))
        if item.get("requestedUnit") is not None:
            usage.requested = item["requestedUnit"]
        for container in item.get("usedUnitContainer") or ():
            for name in FIELDS:
                value = container.get(name)
                if isinstance(value, int):
                    usage.used[name] += value
            if container.get("totalVolume") is not None:
                usage.total_volume_seen = True
    return out


def units_of(fields: dict, unit: str, total_seen: bool | None = None) -> int:
    """The units of ``fields`` (a used sum or a requestedUnit) in a service's ``unit``."""
    if unit == "second":
        return fields.get("time") or 0
    if unit == "byte":
        has_total = fields.get("totalVolume") is not None if total_seen is None else total_seen
        if has_total:
            return fields.get("totalVolume") or 0
        return (fields.get("uplinkVolume") or 0) + (fields.get("downlinkVolume") or 0)
    return fields.get("serviceSpecificUnits") or 0


def used_units(usage: Usage, unit: str) -> int:
    return units_of(usage.used, unit, usage.total_volume_seen)


def requested_units(usage: Usage, unit: str) -> int:
    """0 (the tariff's quota) when nothing is asked for."""
    return units_of(usage.requested, unit) if usage.requested else 0


def granted_unit(unit: str, granted: int) -> dict:
    if unit == "second":
        return {"time": granted}
    if unit == "byte":
        return {"totalVolume": granted}
    return {"serviceSpecificUnits": granted}


def unit_information(rating_group: int, decision: dict, unit: str) -> dict:
    """The multipleUnitInformation of one rating group's decision (CONTRACT §6.4)."""
    info: dict = {"ratingGroup": rating_group,
                  "resultCode": RESULT_CODES.get(decision["result"], "RATING_FAILED")}
    granted = decision.get("granted") or 0
    if granted > 0:
        info["grantedUnit"] = granted_unit(unit, granted)
        info["validityTime"] = decision.get("validity_s") or 0
    if decision.get("final"):
        info["finalUnitIndication"] = {"finalUnitAction": "TERMINATE"}
    return info


def rating_failed(rating_group: int) -> dict:
    """A rating group that names no service of the catalog."""
    return {"ratingGroup": rating_group, "resultCode": "RATING_FAILED"}
