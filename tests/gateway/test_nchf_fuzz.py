"""The Nchf door under generated input: schemathesis from the 3GPP OpenAPI itself (the three
operations, a few examples each) and a hypothesis fuzz of the body path. Whatever comes,
the door answers, and never with a 5xx."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from gateway.nchf.schemas import DEFAULT_DIR, MAIN
from tests.conftest import delete_prefix
from tests.gateway.nchf_rig import ROOT, TS, request, start_doors, usage

SPEC = DEFAULT_DIR / MAIN
FUZZ_IMSI = "imsi-001010000000009"
pytestmark = pytest.mark.skipif(not SPEC.is_file(), reason=f"no 3GPP OpenAPI at {SPEC}")


@pytest.fixture(scope="module")
def doors(redis_client):
    prefix = f"t{uuid.uuid4().hex[:12]}"
    running, stop = start_doors(redis_client, prefix, n=1)
    yield running
    stop()
    delete_prefix(redis_client, prefix)


@pytest.fixture(scope="module")
def api():
    return schemathesis.openapi.from_path(str(SPEC))


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_3gpp_openapi_gets_no_server_error(doors, api, mode):
    """Every operation of TS 32.291's OpenAPI, with bodies generated from its schemas
    (valid ones, and invalid ones): the door answers each, never with a 5xx."""
    from schemathesis.generation import GenerationMode

    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/chargingdata",
                                              "/chargingdata/{ChargingDataRef}/update",
                                              "/chargingdata/{ChargingDataRef}/release"}
    base_url = doors.url + "/nchf-convergedcharging/v3"
    statuses: list[int] = []
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=3, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case):
            if mode == "positive" and isinstance(case.body, dict):
                # a known subscriber, a time chargeflow rates, a live context: the
                # generated rest of the body then goes all the way to the engine
                case.body.update(invocationTimeStamp=TS, subscriberIdentifier=FUZZ_IMSI)
                if "ChargingDataRef" in (case.path_parameters or {}):
                    case.path_parameters["ChargingDataRef"] = live_ref(doors)
            response = case.call_and_validate(base_url=base_url, checks=[not_a_server_error],
                                              timeout=30)
            statuses.append(response.status_code)

        call()
    assert statuses and all(s < 500 for s in statuses)
    if mode == "positive":  # some reached the engine and were answered
        assert {200, 201, 204} & set(statuses), statuses


def live_ref(doors) -> str:
    # a chargingId of its own: the same create body twice would be one context
    body = request(imsi=FUZZ_IMSI[5:], chargingId=uuid.uuid4().int % 2**31)
    r = httpx.post(doors.url + ROOT, json=body, timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["location"].rsplit("/", 1)[-1]


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
FIELDS = ["invocationSequenceNumber", "invocationTimeStamp", "retransmissionIndicator",
          "multipleUnitUsage", "subscriberIdentifier", "nfConsumerIdentification",
          "pDUSessionChargingInformation"]
UNIT_FIELDS = ["ratingGroup", "requestedUnit", "usedUnitContainer", "time", "totalVolume",
               "uplinkVolume", "downlinkVolume", "serviceSpecificUnits"]


@st.composite
def bodies(draw) -> bytes:
    """A free5GC-shaped update with fields replaced by arbitrary JSON, or arbitrary bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    body = request(units=[usage(10, requested={}, totalVolume=1024),
                          usage(100, requested={"time": 60}, time=30)])
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        body[name] = draw(JSON)
    for name in draw(st.lists(st.sampled_from(UNIT_FIELDS), max_size=3)):
        units = body.get("multipleUnitUsage")
        if isinstance(units, list) and units and isinstance(units[0], dict):
            target = units[0]
            containers = target.get("usedUnitContainer")
            if name not in ("ratingGroup", "requestedUnit", "usedUnitContainer") and \
                    isinstance(containers, list) and containers and \
                    isinstance(containers[0], dict):
                target = containers[0]
            target[name] = draw(JSON | st.integers(0, 2**64))
    raw = json.dumps(body).encode()  # the stdlib's: integers past 64 bits, NaN
    return raw if draw(st.booleans()) else raw[: draw(st.integers(0, 400))]


def test_the_body_path_answers_whatever_comes(doors):
    """Mutated and broken bodies on update and create: an answer for each, 2xx/4xx only,
    a JSON body that says what it is, and the connection stays up for the next."""
    ref = live_ref(doors)
    with httpx.Client(http1=False, http2=True, timeout=30) as h2:
        @given(raw=bodies(), create=st.booleans())
        @settings(max_examples=100, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def post(raw, create):
            url = doors.url + (ROOT if create else f"{ROOT}/{ref}/update")
            r = h2.post(url, content=raw, headers={"content-type": "application/json"})
            assert r.status_code in (200, 201, 400, 404), (r.status_code, r.text)
            doc = r.json()
            if r.status_code >= 400:
                assert r.headers["content-type"] == "application/problem+json"
                assert doc["status"] == r.status_code and doc["detail"]

        post()
        assert h2.post(f"{doors.url}{ROOT}/{ref}/update", json=request(units=[
            usage(10, requested={})])).status_code == 200
