"""Top-ups and adjustments through the API (CONTRACT §7): Idempotency-Key (repeats,
concurrent repeats, another body), amounts as decimal strings (a malformed one is a 422
naming the field), the agent limit, no overdraft and no taking of reserved money."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import micros


def post(env, http, path: str, amount, who: str = "admin", key: str | None = None,
         reason: str = "test"):
    headers = {**env.auth(who), "Idempotency-Key": key or uuid.uuid4().hex}
    return http.post(path, headers=headers, json={"amount": amount, "reason": reason})


def test_the_same_key_and_body_answer_the_first_response_applied_once(make_api):
    env = make_api()
    with env.http() as http:
        first = post(env, http, "/v1/accounts/alice/topups", "10.00", key="pay-1")
        again = post(env, http, "/v1/accounts/alice/topups", "10.00", key="pay-1")
        other = post(env, http, "/v1/accounts/alice/topups", "10.00", key="pay-2")
    assert first.status_code == again.status_code == other.status_code == 201
    assert again.json() == first.json() and first.json()["balance"] == "110.00"
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert other.json()["balance"] == "120.00"
    assert env.balance("alice") == micros("120.00")
    topups = [e for e in env.store.ledger("alice") if e["reason"] == "topup"]
    assert len(topups) == 2
    assert env.store.reconciles("alice", env.balance("alice"))


def test_the_same_key_with_another_body_is_422_and_changes_nothing(make_api):
    env = make_api()
    with env.http() as http:
        assert post(env, http, "/v1/accounts/alice/topups", "10.00", key="k").status_code == 201
        before = env.snapshot()
        for path, amount, reason in (("/v1/accounts/alice/topups", "10.01", "test"),
                                     ("/v1/accounts/alice/topups", "10.00", "another"),
                                     ("/v1/accounts/bob/topups", "10.00", "test"),
                                     ("/v1/accounts/alice/adjustments", "10.00", "test")):
            res = post(env, http, path, amount, key="k", reason=reason)
            assert res.status_code == 422, (path, amount, reason)
            assert res.json()["type"].endswith("idempotency-key-reused")
        assert env.snapshot() == before


def test_concurrent_repeats_of_one_key_apply_once(make_api):
    env = make_api()

    def send(_):
        with env.http() as http:
            return post(env, http, "/v1/accounts/bob/adjustments", "-3.50", key="same")

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, range(24)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.text for a in answers}) == 1
    assert env.balance("bob") == micros("96.50")
    assert [e["delta"] for e in env.store.ledger("bob")
            if e["reason"] == "adjustment"] == [-micros("3.50")]


def test_keys_are_scoped_to_the_api_key_that_sent_them(make_api):
    env = make_api()
    with env.http() as http:
        a = post(env, http, "/v1/accounts/alice/topups", "1.00", who="admin", key="k")
        b = post(env, http, "/v1/accounts/alice/topups", "1.00", who="agent", key="k")
    assert a.status_code == b.status_code == 201
    assert env.balance("alice") == micros("102.00")


@pytest.mark.parametrize("amount", ["abc", "1e3", "1.1234567", "", " 1", "1,00", "0x10",
                                    "NaN", "12345678901234567.00", 10, None, True, "--1"])
def test_a_malformed_amount_is_422_naming_the_field(make_api, amount):
    env = make_api()
    before = env.snapshot()
    with env.http() as http:
        for path in ("/v1/accounts/alice/topups", "/v1/accounts/alice/adjustments"):
            res = post(env, http, path, amount)
            assert res.status_code == 422, (path, res.text)
            assert res.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in res.json()["errors"]] == ["amount"]
    assert env.snapshot() == before


def test_zero_and_negative_top_ups_are_refused(make_api):
    env = make_api()
    before = env.snapshot()
    with env.http() as http:
        for path, amount in (("topups", "0"), ("topups", "-1.00"), ("adjustments", "0.000")):
            res = post(env, http, f"/v1/accounts/alice/{path}", amount)
            assert res.status_code == 422 and res.json()["errors"][0]["field"] == "amount"
    assert env.snapshot() == before


def test_the_idempotency_key_is_required(make_api):
    env = make_api()
    with env.http() as http:
        res = http.post("/v1/accounts/alice/topups", headers=env.auth("admin"),
                        json={"amount": "1.00", "reason": "x"})
    assert res.status_code == 422
    assert res.json()["errors"][0]["field"] == "Idempotency-Key"
    assert env.balance("alice") == micros("100.00")


def test_an_agent_adjusts_up_to_its_limit(make_api):
    env = make_api(agent_adjust_limit=micros("50.00"))
    with env.http() as http:
        assert post(env, http, "/v1/accounts/bob/adjustments", "50.00", "agent").status_code \
            == 201
        assert post(env, http, "/v1/accounts/bob/adjustments", "-50", "agent").status_code \
            == 201
        before = env.snapshot()
        for amount in ("50.000001", "-50.01", "1000"):
            res = post(env, http, "/v1/accounts/bob/adjustments", amount, "agent")
            assert res.status_code == 403, amount
            assert "at most 50.00" in res.json()["detail"]
        assert env.snapshot() == before
        # an admin has no such limit; top-ups are not adjustments
        assert post(env, http, "/v1/accounts/bob/adjustments", "500", "admin").status_code \
            == 201
        assert post(env, http, "/v1/accounts/bob/topups", "500", "agent").status_code == 201


def test_no_overdraft_and_no_reserved_money_taken(make_api):
    env = make_api([{"id": "alice", "plan": "PREPAID_S", "balance": "5.00"},
                    {"id": "neg", "plan": "PREPAID_S", "balance": "1.00",
                     "allow_negative": True}])
    env.client.hset(env.store.keys.account("alice"), "res", str(micros("2.00")))
    before = env.snapshot()
    with env.http() as http:
        over = post(env, http, "/v1/accounts/alice/adjustments", "-5.01")
        held = post(env, http, "/v1/accounts/alice/adjustments", "-3.01")
        assert (over.status_code, held.status_code) == (409, 409)
        assert "may not go negative" in over.json()["detail"]
        assert "reserved by open sessions" in held.json()["detail"]
        assert env.snapshot() == before
        # the refused keys were not kept: the same key may be used once the money is there
        ok = post(env, http, "/v1/accounts/alice/adjustments", "-3.00")
        assert ok.status_code == 201 and ok.json()["balance"] == "2.00"
        assert post(env, http, "/v1/accounts/neg/adjustments", "-3.00").json()["balance"] \
            == "-2.00"


def test_concurrent_creations_of_one_account_create_it_once(make_api):
    env = make_api()

    def create(n):
        with env.http() as http:
            return http.post("/v1/accounts", headers=env.auth("admin"), json={
                "id": "carol", "plan": "PREPAID_S", "balance": f"{n}.00"}).status_code

    with ThreadPoolExecutor(8) as pool:
        got = sorted(pool.map(create, range(1, 9)))
    assert got == [201] + [409] * 7
    (opened,) = env.store.ledger("carol")
    assert opened["reason"] == "open" and opened["actor"] == env.ids["admin"]
    assert env.balance("carol") == opened["delta"]


def test_a_repeat_after_the_remembered_answer_was_lost_is_applied_once(make_api):
    env = make_api()
    with env.http() as http:
        first = post(env, http, "/v1/accounts/alice/topups", "7.00", key="lost")
        for k in env.client.scan_iter(match=f"{env.prefix}:api:idem:*"):
            env.client.delete(k)  # as after a Redis restart that kept the account
        again = post(env, http, "/v1/accounts/alice/topups", "7.00", key="lost")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()  # the top-up script's replay: the balance it left
    assert env.balance("alice") == micros("107.00")


def test_the_ledger_pages_through_every_entry_once(make_api):
    env = make_api()
    with env.http() as http:
        for n in range(7):
            assert post(env, http, "/v1/accounts/bob/topups", f"{n + 1}.00").status_code == 201
        seen, after = [], None
        while True:
            params = {"limit": 3} | ({"after": after} if after else {})
            page = http.get("/v1/accounts/bob/ledger", params=params,
                            headers=env.auth("agent")).json()
            seen += page["entries"]
            if page["next"] is None:
                break
            after = page["next"]
    assert [e["delta"] for e in seen] == ["100.00"] + [f"{n}.00" for n in range(1, 8)]
    assert len({e["cursor"] for e in seen}) == 8
    assert seen[-1]["balance"] == "128.00"
