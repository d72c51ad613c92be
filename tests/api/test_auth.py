"""Who may do what (CONTRACT §7): every endpoint × every caller (admin, agent, selfcare bound
to alice; no key, a malformed key, a revoked key) × the caller's own account (alice), another
(bob) and one that does not exist (ghost), on the real server. Each refusal changes nothing."""

from __future__ import annotations

import itertools
import uuid

import pytest

OWN, OTHER, UNKNOWN = "alice", "bob", "ghost"
TARGETS = (OWN, OTHER, UNKNOWN)
CALLERS = ("admin", "agent", "selfcare", "none", "bad", "revoked")

# endpoint -> role -> (own, other, unknown) statuses
ALLOWED_READ = {"admin": (200, 200, 404), "agent": (200, 200, 404),
                "selfcare": (200, 404, 404)}
ALLOWED_MONEY = {"admin": (201, 201, 404), "agent": (201, 201, 404),
                 "selfcare": (403, 404, 404)}
EXPECTED = {
    "get_account": ALLOWED_READ,
    "get_ledger": ALLOWED_READ,
    "topup": ALLOWED_MONEY,
    "adjustment": ALLOWED_MONEY,
    # the target is the id in the body: alice and bob exist (409), ghost is created
    "create": {"admin": (409, 409, 201), "agent": (403, 403, 403),
               "selfcare": (403, 403, 403)},
    "patch": {"admin": (200, 200, 404), "agent": (403, 403, 403),
              "selfcare": (403, 404, 404)},
}


def call(http, endpoint: str, account: str, headers: dict):
    if endpoint == "get_account":
        return http.get(f"/v1/accounts/{account}", headers=headers)
    if endpoint == "get_ledger":
        return http.get(f"/v1/accounts/{account}/ledger", headers=headers)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    if endpoint in ("topup", "adjustment"):
        amount = "1.00" if endpoint == "topup" else "-0.50"
        return http.post(f"/v1/accounts/{account}/{endpoint}s", headers={**headers, **key},
                         json={"amount": amount, "reason": "auth matrix"})
    if endpoint == "create":
        # a fresh id stands for the unknown account, so each creation can succeed
        target = account if account != UNKNOWN else f"new-{uuid.uuid4().hex[:8]}"
        return http.post("/v1/accounts", headers=headers,
                         json={"id": target, "plan": "PREPAID_S", "balance": "1.00"})
    return http.patch(f"/v1/accounts/{account}", headers=headers,
                      json={"allow_negative": False, "name": "Matrix"})


def headers_of(env, caller: str) -> dict:
    if caller == "none":
        return {}
    if caller == "bad":
        return {"Authorization": "Bearer cfk_000000000000_" + "x" * 43}
    return env.auth(caller)


@pytest.mark.parametrize(("endpoint", "caller", "target"),
                         list(itertools.product(EXPECTED, CALLERS, TARGETS)))
def test_auth_matrix(module_api, endpoint, caller, target):
    env = module_api
    want = 401 if caller in ("none", "bad", "revoked") else \
        EXPECTED[endpoint][caller][TARGETS.index(target)]
    before = env.snapshot()
    with env.http() as http:
        res = call(http, endpoint, target, headers_of(env, caller))
    assert res.status_code == want, res.text
    if want >= 400:
        assert res.headers["content-type"] == "application/problem+json"
        problem = res.json()
        assert problem["status"] == want and problem["type"] and problem["title"]
        assert problem["detail"]
        assert env.snapshot() == before, "a refused request changed something"
        if want == 401:
            assert res.headers["www-authenticate"] == "Bearer"
    if want == 404 and caller == "selfcare" and target == OTHER:
        # another account's existence is not revealed: the same answer as for none at all
        with env.http() as http:
            ghost = call(http, endpoint, UNKNOWN, headers_of(env, caller))
        assert (ghost.status_code, ghost.json()["type"]) == (404, res.json()["type"])


def test_a_wrong_scheme_or_a_key_with_a_right_id_and_wrong_secret_is_401(module_api):
    env = module_api
    admin = env.keys["admin"]
    forged = admin[:-4] + ("AAAA" if not admin.endswith("AAAA") else "BBBB")
    with env.http() as http:
        for value in (f"Basic {admin}", f"Bearer {forged}", "Bearer", admin):
            res = http.get("/v1/accounts/alice", headers={"Authorization": value})
            assert res.status_code == 401, value


def test_changes_are_ledgered_with_the_key_and_the_reason(module_api):
    env = module_api
    with env.http() as http:
        res = http.post("/v1/accounts/bob/adjustments",
                        headers={**env.auth("agent"), "Idempotency-Key": uuid.uuid4().hex},
                        json={"amount": "-2.25", "reason": "goodwill reversal #7"})
        assert res.status_code == 201
        page = http.get("/v1/accounts/bob/ledger", params={"limit": 1000},
                        headers=env.auth("admin")).json()
    (entry,) = [e for e in page["entries"] if e["id"] == res.json()["ledger_id"]]
    assert entry["actor"] == env.ids["agent"]
    assert entry["note"] == "goodwill reversal #7"
    assert (entry["reason"], entry["delta"]) == ("adjustment", "-2.25")
    assert entry["balance"] == res.json()["balance"]
