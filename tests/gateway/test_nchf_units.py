"""The Nchf door's pure parts: units per rating group, decisions as
multipleUnitInformation, the OpenAPI 3.0 normalisation and the schema check, message
digests."""

from __future__ import annotations

import pytest

from gateway.nchf.schemas import DEFAULT_DIR, MAIN, SchemaProblem, normalise
from gateway.nchf.service import Problem, check_values, digest
from gateway.nchf.units import requested_units, unit_information, usages, used_units
from tests.gateway.nchf_rig import shared_schemas


def body(*units, **extra) -> dict:
    return {"nfConsumerIdentification": {"nodeFunctionality": "SMF"},
            "invocationTimeStamp": "2026-11-24T10:00:00Z", "invocationSequenceNumber": 0,
            "multipleUnitUsage": list(units), **extra}


def test_units_by_the_services_unit():
    got = usages(body(
        {"ratingGroup": 1, "requestedUnit": {"time": 60, "totalVolume": 5},
         "usedUnitContainer": [{"localSequenceNumber": 1, "time": 10, "uplinkVolume": 3,
                                "downlinkVolume": 4},
                               {"localSequenceNumber": 2, "time": 5, "totalVolume": 2**33}]},
        {"ratingGroup": 2, "usedUnitContainer": [{"localSequenceNumber": 1,
                                                  "uplinkVolume": 3, "downlinkVolume": 4,
                                                  "serviceSpecificUnits": 2}]},
        {"ratingGroup": 2, "requestedUnit": {}, "usedUnitContainer": [
            {"localSequenceNumber": 2, "serviceSpecificUnits": 1}]}))
    assert list(got) == [1, 2]
    assert used_units(got[1], "second") == 15
    assert used_units(got[1], "byte") == 2**33  # totalVolume where one came
    assert used_units(got[2], "byte") == 7  # else uplink + downlink
    assert used_units(got[2], "event") == 3  # one rating group named twice: one usage
    assert requested_units(got[1], "second") == 60
    assert requested_units(got[1], "byte") == 5
    assert requested_units(got[2], "event") == 0  # empty: the tariff's quota


def test_decisions_as_unit_information():
    ok = {"result": "SUCCESS", "granted": 300, "validity_s": 600, "final": False}
    assert unit_information(7, ok, "second") == {
        "ratingGroup": 7, "resultCode": "SUCCESS", "grantedUnit": {"time": 300},
        "validityTime": 600}
    last = dict(ok, final=True, granted=1000)
    assert unit_information(7, last, "byte")["finalUnitIndication"] == \
        {"finalUnitAction": "TERMINATE"}
    assert unit_information(7, last, "byte")["grantedUnit"] == {"totalVolume": 1000}
    assert unit_information(7, ok, "event")["grantedUnit"] == {"serviceSpecificUnits": 300}
    for result, code in [("CREDIT_LIMIT_REACHED", "QUOTA_LIMIT_REACHED"),
                         ("END_USER_SERVICE_DENIED", "END_USER_SERVICE_DENIED"),
                         ("RATING_FAILED", "RATING_FAILED")]:
        info = unit_information(7, {"result": result, "granted": 0, "validity_s": 0,
                                    "final": False}, "second")
        assert info == {"ratingGroup": 7, "resultCode": code}


def test_nullable_becomes_json_schema():
    assert normalise({"type": "string", "nullable": True, "example": "x"}) == \
        {"type": ["string", "null"]}
    assert normalise({"type": "string", "enum": ["A"], "nullable": True}) == \
        {"type": ["string", "null"], "enum": ["A", None]}
    assert normalise({"$ref": "#/x", "nullable": True}) == \
        {"anyOf": [{"type": "null"}, {"$ref": "#/x"}]}
    assert normalise({"properties": {"a": {"allOf": [{"$ref": "#/y"}], "nullable": True}}}) == \
        {"properties": {"a": {"anyOf": [{"type": "null"}, {"allOf": [{"$ref": "#/y"}]}]}}}


@pytest.mark.skipif(not (DEFAULT_DIR / MAIN).is_file(), reason="no 3GPP OpenAPI files")
def test_the_3gpp_schema_checks_bodies_across_files():
    schemas = shared_schemas()
    schemas.check(body({"ratingGroup": 1, "usedUnitContainer": [
        {"localSequenceNumber": 1, "totalVolume": 2**63}]}))
    with pytest.raises(SchemaProblem) as err:  # Uint64 of TS29571_CommonData.yaml
        schemas.check(body({"ratingGroup": 1, "usedUnitContainer": [
            {"localSequenceNumber": 1, "totalVolume": -1}]}))
    assert err.value.where == "$.multipleUnitUsage[0].usedUnitContainer[0].totalVolume"
    with pytest.raises(SchemaProblem, match="localSequenceNumber"):
        schemas.check(body({"ratingGroup": 1, "usedUnitContainer": [{"time": 1}]}))
    with pytest.raises(SchemaProblem, match="is not of type 'object'"):
        schemas.check([])


def test_values_chargeflow_cannot_take_are_refused_before_anything_changes():
    check_values(body({"ratingGroup": 1, "requestedUnit": {"totalVolume": 2**40}}))
    with pytest.raises(Problem) as err:
        check_values(body({"ratingGroup": 1, "usedUnitContainer": [
            {"localSequenceNumber": 1, "uplinkVolume": 2**39, "downlinkVolume": 2**39 + 1}]}))
    assert err.value.status == 400 and "2^40" in err.value.detail
    with pytest.raises(Problem, match="invocationTimeStamp"):
        check_values(body(invocationTimeStamp="2026-11-24 10:00"))


def test_a_digest_ignores_the_retransmission_flag_only():
    b = body({"ratingGroup": 1})
    assert digest("update", b) == digest("update", dict(b, retransmissionIndicator=True))
    assert digest("update", b) != digest("release", b)
    assert digest("update", b) != digest("update", dict(b, invocationSequenceNumber=1))
