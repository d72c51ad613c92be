"""The Nchf_ConvergedCharging door over real sockets (HTTP/2 with prior knowledge), a real
Redis and the in-process engine: a free5GC-shaped SMF session with exact balances, a
retransmission, and every ProblemDetails answer (CONTRACT §6.4)."""

from __future__ import annotations

import subprocess

import httpx
import orjson
import pytest

from tests.conftest import micros
from tests.gateway.nchf_rig import ROOT, request, start_doors, usage


@pytest.fixture(scope="module")
def doors(redis_client):
    import uuid

    from tests.conftest import delete_prefix

    prefix = f"t{uuid.uuid4().hex[:12]}"
    running, stop = start_doors(redis_client, prefix)
    yield running
    stop()
    delete_prefix(redis_client, prefix)


@pytest.fixture(scope="module")
def h2():
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        yield client


def money(doors, account: str) -> tuple[int, int]:
    acct = doors.store.view(account)
    return acct.balance, acct.reserved


def create(h2, url: str, body: dict) -> str:
    r = h2.post(url + ROOT, json=body)
    assert r.status_code == 201, r.text
    assert r.http_version == "HTTP/2"
    return r.headers["location"].rsplit("/", 1)[-1]  # as free5GC's SMF reads it


def units_by_rg(response: httpx.Response) -> dict[int, dict]:
    return {u["ratingGroup"]: u for u in response.json()["multipleUnitInformation"]}


MiB = 1 << 20


def test_an_smf_session_of_two_rating_groups_charges_exactly(doors, h2):
    """free5GC's SMF: a create without units (every invocationSequenceNumber 0), updates
    with usedUnitContainer for data and voice, each to either door instance, a release.
    Data: 0.01 per MiB by KiB; voice (no destination): 0.20 per started minute."""
    a, b = doors.urls
    ref = create(h2, a, request(imsi="001010000000001"))
    assert money(doors, "nina") == (micros("100.00"), 0)

    r = h2.post(f"{b}{ROOT}/{ref}/update", json=request(units=[
        usage(10, requested={}), usage(100, requested={"time": 120})]))
    assert r.status_code == 200, r.text
    got = units_by_rg(r)
    assert got[10] == {"ratingGroup": 10, "resultCode": "SUCCESS",
                       "grantedUnit": {"totalVolume": 10 * MiB}, "validityTime": 600}
    assert got[100] == {"ratingGroup": 100, "resultCode": "SUCCESS",
                        "grantedUnit": {"time": 120}, "validityTime": 600}
    assert money(doors, "nina") == (micros("100.00"), micros("0.10") + micros("0.40"))

    r = h2.post(f"{a}{ROOT}/{ref}/update", json=request(units=[
        usage(10, requested={}, totalVolume=3 * MiB, uplinkVolume=MiB, downlinkVolume=2 * MiB),
        usage(100, requested={"time": 120}, time=90)]))
    assert r.status_code == 200, r.text
    assert money(doors, "nina")[0] == micros("100.00") - micros("0.03") - micros("0.40")

    # uplink + downlink where no totalVolume comes; 30 s more stay in the second minute
    r = h2.post(f"{b}{ROOT}/{ref}/update", json=request(
        invocationTimeStamp="2026-11-24T10:05:00+01:00", units=[
            usage(10, requested={}, uplinkVolume=MiB, downlinkVolume=MiB),
            usage(100, requested={"time": 60}, time=30)]))
    assert r.status_code == 200, r.text
    assert money(doors, "nina")[0] == micros("100.00") - micros("0.05") - micros("0.40")

    # the release reports 2 GiB more (volumes beyond 2^31 are what real UPFs count)
    r = h2.post(f"{a}{ROOT}/{ref}/release", json=request(units=[
        usage(10, totalVolume=2**31)]))
    assert r.status_code == 204 and r.content == b""
    assert money(doors, "nina") == (micros("100.00") - micros("20.53") - micros("0.40"), 0)

    # released: the context is gone
    r = h2.post(f"{b}{ROOT}/{ref}/update", json=request(units=[usage(10, requested={})]))
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_a_retransmission_gets_the_same_answer_and_changes_nothing(doors, h2):
    a, b = doors.urls
    ref = create(h2, a, request(imsi="001010000000005"))
    first = h2.post(f"{a}{ROOT}/{ref}/update",
                    json=request(units=[usage(20, requested={"totalVolume": 4 * MiB})]))
    update = request(units=[usage(20, requested={"totalVolume": 4 * MiB}, totalVolume=MiB)])
    second = h2.post(f"{a}{ROOT}/{ref}/update", json=update)
    assert first.status_code == second.status_code == 200
    before = money(doors, "rita")
    assert before == (micros("50.00") - micros("0.01"), micros("0.04"))

    # flagged, to the other instance, with the body otherwise the same
    again = h2.post(f"{b}{ROOT}/{ref}/update",
                    json=dict(update, retransmissionIndicator=True))
    assert again.status_code == 200 and again.json() == second.json()
    # flagged, with a changed timestamp: the last message of this sequence number
    later = h2.post(f"{b}{ROOT}/{ref}/update", json=dict(
        update, retransmissionIndicator=True, invocationTimeStamp="2026-11-24T10:00:09+01:00"))
    assert later.status_code == 200 and later.json()["multipleUnitInformation"] == \
        second.json()["multipleUnitInformation"]
    assert money(doors, "rita") == before
    # a create sent twice is one context
    body = request(imsi="001010000000005", chargingId=77)
    assert create(h2, a, body) == create(h2, b, body)


def test_a_subscriber_who_runs_dry(doors, h2):
    """dora has 0.30: 60 s of the 300 asked (0.20) with a final unit indication, then
    nothing."""
    url = doors.url
    ref = create(h2, url, request(imsi="001010000000003"))
    r = h2.post(f"{url}{ROOT}/{ref}/update",
                json=request(units=[usage(100, requested={"time": 300})]))
    assert units_by_rg(r)[100] == {"ratingGroup": 100, "resultCode": "SUCCESS",
                                   "grantedUnit": {"time": 60}, "validityTime": 600,
                                   "finalUnitIndication": {"finalUnitAction": "TERMINATE"}}
    r = h2.post(f"{url}{ROOT}/{ref}/update",
                json=request(units=[usage(100, requested={"time": 300}, time=60)]))
    assert r.status_code == 200
    info = units_by_rg(r)[100]
    assert info["resultCode"] == "QUOTA_LIMIT_REACHED" and "grantedUnit" not in info
    assert info["finalUnitIndication"] == {"finalUnitAction": "TERMINATE"}
    assert money(doors, "dora") == (micros("0.10"), 0)
    assert h2.post(f"{url}{ROOT}/{ref}/release", json=request()).status_code == 204
    assert money(doors, "dora") == (micros("0.10"), 0)


def test_services_outside_the_plan_and_rating_groups_of_no_service(doors, h2):
    """vera's plan has voice only: data is END_USER_SERVICE_DENIED; rating group 99 names
    no service: RATING_FAILED; the gpsi names otto when no imsi does."""
    url = doors.url
    ref = create(h2, url, request(imsi="001010000000004"))
    r = h2.post(f"{url}{ROOT}/{ref}/update", json=request(units=[
        usage(10, requested={}), usage(99, requested={}), usage(100, requested={"time": 60})]))
    got = units_by_rg(r)
    assert [got[rg]["resultCode"] for rg in (10, 99, 100)] == \
        ["END_USER_SERVICE_DENIED", "RATING_FAILED", "SUCCESS"]
    body = request()
    body["pDUSessionChargingInformation"]["userInformation"]["servedGPSI"] = \
        "msisdn-4917000000002"
    ref = create(h2, url, dict(body, multipleUnitUsage=[usage(30, requested={
        "serviceSpecificUnits": 2})]))
    r = h2.post(f"{url}{ROOT}/{ref}/release", json=request(units=[
        usage(30, serviceSpecificUnits=2)]))
    assert r.status_code == 204
    assert money(doors, "otto") == (micros("100.00") - 2 * micros("0.09"), 0)


def problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["status"] == status and doc["detail"]
    return doc


def test_problem_details(doors, h2):
    url = doors.url
    assert problem(h2.post(url + ROOT, json=request(imsi="999990000000000")),
                   404)["cause"] == "USER_UNKNOWN"
    assert problem(h2.post(f"{url}{ROOT}/nosuchref/update", json=request()),
                   404)["cause"] == "CONTEXT_NOT_FOUND"
    assert problem(h2.post(url + ROOT, content=b'{"invocationSeq',
                           headers={"content-type": "application/json"}),
                   400)["cause"] == "INVALID_MSG_FORMAT"
    body = request(imsi="001010000000001")
    del body["nfConsumerIdentification"]
    doc = problem(h2.post(url + ROOT, json=body), 400)
    assert doc["cause"] == "MANDATORY_IE_MISSING" and "nfConsumerIdentification" in doc["detail"]
    doc = problem(h2.post(url + ROOT, json=request(imsi="001010000000001",
                                                   invocationSequenceNumber=-1)), 400)
    assert doc["invalidParams"][0]["param"] == "$.invocationSequenceNumber"
    doc = problem(h2.post(url + ROOT, json=request(imsi="001010000000001",
                                                   invocationTimeStamp="yesterday")), 400)
    assert "invocationTimeStamp" in doc["detail"]
    big = request(imsi="001010000000001", padding="x" * 200_000)
    assert problem(h2.post(url + ROOT, json=big), 413)["cause"] == "PAYLOAD_TOO_LARGE"
    # the HTTP/2 connection outlives a refused body: the next stream on it is answered
    assert h2.post(url + ROOT, json=request(imsi="001010000000001")).status_code == 201
    assert problem(h2.get(url + ROOT), 405)
    assert problem(h2.post(url + "/nchf-convergedcharging/v2/chargingdata", json=body), 404)


def test_curl_with_http2_prior_knowledge(doors, h2):
    out = subprocess.run(
        ["curl", "--http2-prior-knowledge", "-sS", "-i", "-X", "POST", "-H",
         "content-type: application/json", "--data-binary", "@-", doors.url + ROOT],
        input=orjson.dumps(request(imsi="001010000000001")), capture_output=True,
        timeout=30, check=True)
    head, _, payload = out.stdout.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/2 201"), head
    location = next(line.split(": ", 1)[1] for line in head.split("\r\n")
                    if line.lower().startswith("location:"))
    assert location.startswith(doors.url + ROOT + "/")
    assert orjson.loads(payload)["invocationSequenceNumber"] == 0


def test_metrics_count_requests_and_answers(doors, h2):
    text = h2.get(doors.url + "/metrics").text
    assert 'chargeflow_nchf_answers_total{op="create",status="201"}' in text
    assert 'chargeflow_nchf_unit_results_total{result="SUCCESS"}' in text


def test_a_session_the_engine_released_is_opened_again(redis_client, h2):
    """A rating group silent past 2 × validity is released by the engine's sweep; its next
    update is charged (SESSION_UNKNOWN) and the door opens the session again in the same
    message, so the rating group still gets its grant."""
    import time
    import uuid

    from balances.sweeper import sweep
    from tests.conftest import delete_prefix

    prefix = f"t{uuid.uuid4().hex[:12]}"
    doors, stop = start_doors(redis_client, prefix, n=1)
    try:
        url = doors.url
        ref = create(h2, url, request(imsi="001010000000005"))
        r = h2.post(f"{url}{ROOT}/{ref}/update", json=request(units=[usage(10, requested={})]))
        assert units_by_rg(r)[10]["resultCode"] == "SUCCESS"
        assert money(doors, "rita") == (micros("50.00"), micros("0.10"))
        assert sweep(doors.store, int(time.time() * 1000) + 10 * 86_400_000) == 1
        assert money(doors, "rita") == (micros("50.00"), 0)

        r = h2.post(f"{url}{ROOT}/{ref}/update",
                    json=request(units=[usage(10, requested={}, totalVolume=MiB)]))
        assert units_by_rg(r)[10] == {"ratingGroup": 10, "resultCode": "SUCCESS",
                                      "grantedUnit": {"totalVolume": 10 * MiB},
                                      "validityTime": 600}
        assert money(doors, "rita") == (micros("50.00") - micros("0.01"), micros("0.10"))
        assert h2.post(f"{url}{ROOT}/{ref}/release", json=request()).status_code == 204
        assert money(doors, "rita") == (micros("50.00") - micros("0.01"), 0)
    finally:
        stop()
        delete_prefix(redis_client, prefix)


def test_no_decision_in_time_is_503_and_the_retransmission_gets_the_real_answer(
        redis_client, h2):
    """An engine slower than the answer timeout: 503 with Retry-After; the request is
    decided anyway, and the SMF's retransmission gets that decision, charged once."""
    import uuid

    from tests.conftest import delete_prefix

    prefix = f"t{uuid.uuid4().hex[:12]}"
    doors, stop = start_doors(redis_client, prefix, n=1, timeout_s=0.1, engine_delay_s=0.4)
    try:
        url = doors.url
        ref = create(h2, url, request(imsi="001010000000005"))
        update = request(units=[usage(30, requested={"serviceSpecificUnits": 1},
                                      serviceSpecificUnits=3)])
        r = h2.post(f"{url}{ROOT}/{ref}/update", json=update)
        doc = problem(r, 503)
        assert r.headers["retry-after"] == "1" and doc["cause"] == "NF_CONGESTION"
        doors.bridge.timeout_s = 20
        r = h2.post(f"{url}{ROOT}/{ref}/update", json=dict(update, retransmissionIndicator=True))
        assert r.status_code == 200
        assert units_by_rg(r)[30]["grantedUnit"] == {"serviceSpecificUnits": 1}
        # the 3 SMS reported with the opening update are charged once, 1 more is reserved
        assert money(doors, "rita") == (micros("50.00") - 3 * micros("0.09"), micros("0.09"))
    finally:
        stop()
        delete_prefix(redis_client, prefix)


def test_redis_out_of_reach_is_503(redis_client, h2):
    import socket
    import uuid

    from tests.conftest import delete_prefix

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix = f"t{uuid.uuid4().hex[:12]}"
    doors, stop = start_doors(redis_client, prefix, n=1,
                              door_redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        r = h2.post(doors.url + ROOT, json=request(imsi="001010000000005"))
        assert problem(r, 503)["cause"] == "NF_CONGESTION" and r.headers["retry-after"]
        assert "Redis" in r.json()["detail"]
    finally:
        stop()
        delete_prefix(redis_client, prefix)


def test_one_http2_connection_carries_more_than_a_thousand_requests(doors):
    """An SMF keeps its HTTP/2 connection: hypercorn's default would close it after 1000
    requests, failing the streams in flight at the GOAWAY."""
    import asyncio

    async def main() -> list[int]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            sem = asyncio.Semaphore(16)

            async def one(i: int) -> int:
                async with sem:
                    return (await client.get(f"{doors.url}/nosuch/{i}")).status_code

            return await asyncio.gather(*(one(i) for i in range(1010)))

    assert set(asyncio.run(main())) == {404}  # every one answered
