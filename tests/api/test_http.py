"""The API as HTTP (CONTRACT §7): HTTP/2 and HTTP/1.1 on one port, its OpenAPI 3.1 document
(served, and checked in), RFC 9457 problems for the framework's own errors, the body limit
and the per-key rate limit."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from api.openapi import document

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi-api.json"


def test_http2_with_prior_knowledge_and_http11_on_one_port(make_api):
    env = make_api()
    with httpx.Client(base_url=env.url, http1=False, http2=True, timeout=20) as h2:
        read = h2.get("/v1/accounts/alice", headers=env.auth("selfcare"))
        topup = h2.post("/v1/accounts/alice/topups",
                        headers={**env.auth("agent"), "Idempotency-Key": "h2-1"},
                        json={"amount": "2.50", "reason": "over h2"})
        missing = h2.get("/v1/accounts/bob", headers=env.auth("selfcare"))
    assert read.http_version == topup.http_version == "HTTP/2"
    assert read.status_code == 200 and read.json()["balance"] == "100.00"
    assert topup.status_code == 201 and topup.json()["balance"] == "102.50"
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    with env.http() as h1:
        again = h1.get("/v1/accounts/alice", headers=env.auth("selfcare"))
    assert again.http_version == "HTTP/1.1" and again.json()["balance"] == "102.50"


def test_the_openapi_document_is_served_and_checked_in(make_api):
    env = make_api()
    with env.http() as http:
        served = http.get("/openapi.json").json()
    assert served["openapi"].startswith("3.1")
    assert served == document()
    assert json.loads(DOCS.read_text("utf-8")) == served, \
        "docs/openapi-api.json is stale: python -m api.openapi > docs/openapi-api.json"
    paths = {(p, m) for p, ops in served["paths"].items() for m in ops}
    assert paths == {("/v1/accounts/{account_id}", "get"), ("/v1/accounts/{account_id}", "patch"),
                     ("/v1/accounts/{account_id}/topups", "post"),
                     ("/v1/accounts/{account_id}/adjustments", "post"),
                     ("/v1/accounts/{account_id}/ledger", "get"), ("/v1/accounts", "post")}


def assert_problem(res: httpx.Response, status: int) -> dict:
    assert res.status_code == status, res.text
    assert res.headers["content-type"] == "application/problem+json"
    body = res.json()
    assert body["status"] == status and {"type", "title", "detail"} <= set(body)
    return body


def test_framework_errors_are_problems(make_api):
    env = make_api()
    with env.http() as http:
        assert_problem(http.get("/v2/nothing", headers=env.auth("admin")), 404)
        res = http.delete("/v1/accounts/alice", headers=env.auth("admin"))
        assert_problem(res, 405)
        assert "GET" in res.headers["allow"]
        body = assert_problem(http.post("/v1/accounts", headers={
            **env.auth("admin"), "Content-Type": "application/json"}, content=b"{not json"),
            422)
        assert body["errors"]
        body = assert_problem(http.get("/v1/accounts/alice/ledger", params={"limit": 0},
                                       headers=env.auth("admin")), 422)
        assert body["errors"][0]["field"] == "limit"
        body = assert_problem(http.post("/v1/accounts", headers=env.auth("admin"), json={
            "id": "x1", "plan": "NO_SUCH_PLAN", "country": "de"}), 422)
        assert {e["field"] for e in body["errors"]} == {"country"}  # the schema's, first
        body = assert_problem(http.post("/v1/accounts", headers=env.auth("admin"), json={
            "id": "x1", "plan": "NO_SUCH_PLAN"}), 422)
        assert body["errors"][0]["field"] == "plan" and "PREPAID_S" in body["detail"]


def test_a_body_over_the_limit_is_413_and_changes_nothing(make_api):
    env = make_api(max_body_bytes=1024)
    before = env.snapshot()
    with env.http() as http:
        big = {"amount": "1.00", "reason": "x" * 2000}
        res = http.post("/v1/accounts/alice/topups", json=big,
                        headers={**env.auth("admin"), "Idempotency-Key": "big"})
        assert_problem(res, 413)

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(8):
                yield b" " * 512

        res = http.post("/v1/accounts/alice/topups", content=chunks(),
                        headers={**env.auth("admin"), "Idempotency-Key": "big2",
                                 "Content-Type": "application/json"})
        assert_problem(res, 413)
    assert env.snapshot() == before


def test_a_key_over_its_rate_gets_429_with_retry_after(make_api):
    env = make_api(rate_per_s=0.5, burst=3)
    with env.http() as http:
        got = [http.get("/v1/accounts/alice", headers=env.auth("agent")).status_code
               for _ in range(5)]
        assert got[:3] == [200, 200, 200] and got[3:] == [429, 429]
        res = http.get("/v1/accounts/alice", headers=env.auth("agent"))
        assert_problem(res, 429)
        assert int(res.headers["retry-after"]) >= 1
        # another key has a bucket of its own
        assert http.get("/v1/accounts/alice", headers=env.auth("admin")).status_code == 200


def test_what_schemathesis_found_is_a_4xx_and_changes_nothing(make_api):
    env = make_api()
    with env.http() as http:
        # a cursor of numbers beyond what a stream id holds (Redis refuses it: was a 500)
        res = http.get("/v1/accounts/alice/ledger", params={"after": "37228173464636766415-5"},
                       headers=env.auth("admin"))
        assert assert_problem(res, 422)["errors"][0]["field"] == "after"
        # an id outside Latin-1 in the Location header (was a 500 after creating it)
        res = http.post("/v1/accounts", headers=env.auth("admin"),
                        json={"id": "\u0105\U000e64f1.D", "plan": "PREPAID_S"})
        assert res.status_code == 201
        assert res.headers["location"] == "/v1/accounts/%C4%85%F3%A6%93%B1.D"
        # half a surrogate pair is no text
        res = http.post("/v1/accounts", headers={**env.auth("admin"),
                        "Content-Type": "application/json"},
                        content=b'{"id": "a\\udb59", "plan": "PREPAID_S"}')
        assert assert_problem(res, 422)["errors"][0]["field"] == "id"
