"""A large batch is charged in groups of whole accounts whose writes are in flight together
(``Charger._round``); a group whose accounts changed elsewhere conflicts alone and is
decided again, and the batch's outcomes still come back complete and in input order."""

from __future__ import annotations

import pytest

from balances.charger import MAX_GROUPS, MAX_ROUNDS, _groups
from charging.errors import StoreError
from charging.records import format_balance
from charging.requests import parse
from tests.conftest import req

N_ACCOUNTS = 300
SMS = 90_000  # micros: the catalog's SMS price at the time of ``req``


def test_groups_split_a_batch_by_whole_accounts_keeping_order():
    reqs = [parse(req(id=f"r{i}", kind="event", account=f"a{i % 97}", service="sms", used=1))
            for i in range(1000)]
    groups = _groups(reqs)
    assert len(groups) == MAX_GROUPS
    assert sorted(i for g in groups for i in g) == list(range(1000))
    owner: dict[str, int] = {}
    for k, g in enumerate(groups):
        assert g == sorted(g)
        for i in g:
            assert owner.setdefault(reqs[i].account, k) == k  # an account in one group only
    assert _groups(reqs[:100]) == [list(range(100))]  # a small batch is one write


def test_conflicting_accounts_in_a_pipelined_batch_are_decided_again(rig):
    accounts = [f"g{i}" for i in range(N_ACCOUNTS)]
    r = rig(accounts="\n".join(f'{{"id": "{a}", "plan": "PREPAID_S", "balance": "10.00"}}'
                               for a in accounts))
    warm = r.charge(*[req(id=f"w-{a}", kind="event", account=a, service="sms", used=1)
                      for a in accounts])  # now every account is in the charger's cache
    assert all(o.record()["decision"]["charged"] == "0.0900" for o in warm)
    topped = accounts[::30]  # changed behind the charger's back: its cached copies are stale
    for a in topped:
        assert r.store.topup(a, 5_000_000, topup_id=f"t-{a}").status == "ok"

    batch = [req(id=f"e{k}-{a}", kind="event", account=a, service="sms", used=1)
             for k in range(2) for a in accounts]
    # the requests of each round: a round's writes share one pipelined connection (the
    # store is spied on, not the charger, whose methods may be compiled)
    rounds: list[list[str]] = []
    pipelined, send_save = r.store.pipelined, r.store.send_save

    def round_spy():
        rounds.append([])
        return pipelined()

    def send_spy(accounts, changes, outcomes, *rest, **kw):
        rounds[-1].extend(o.request.id for o in outcomes)
        return send_save(accounts, changes, outcomes, *rest, **kw)

    r.store.pipelined, r.store.send_save = round_spy, send_spy
    outs = r.charge(*batch)

    assert [o.request.id for o in outs] == [b["id"] for b in batch]
    assert all(o.decision.result == "SUCCESS" and o.charge is not None for o in outs)
    for a in accounts:
        expected = 10_000_000 + (5_000_000 if a in topped else 0) - 3 * SMS
        view = r.store.view(a)
        assert view.balance == expected, a
        assert r.store.reconciles(a, view.balance)
        last = [o for o in outs if o.request.account == a][-1]
        # decided on fresh state
        assert last.record()["decision"]["balance"] == format_balance(expected)
    position = {b["id"]: i for i, b in enumerate(batch)}
    assert [sorted(position[rid] for rid in ids) for ids in rounds] == [
        list(range(len(batch))),  # all, then the stale accounts' alone
        sorted(i for i, b in enumerate(batch) if b["account"] in topped)]


@pytest.mark.parametrize("interfering", [MAX_ROUNDS - 1, MAX_ROUNDS])
def test_an_account_changed_before_every_write_is_given_up_after_max_rounds(rig, interfering):
    r = rig(accounts='{"id": "x", "plan": "PREPAID_S", "balance": "10.00"}')
    r.one(req(id="warm", kind="event", account="x", service="sms", used=1))
    writes = {"n": 0}
    send = r.store.send_save

    def topup_first(*args, **kw):  # another writer gets in before each of the first writes
        if writes["n"] < interfering:
            assert r.store.topup("x", 1_000_000, topup_id=f"t{writes['n']}").status == "ok"
        writes["n"] += 1
        return send(*args, **kw)

    r.store.send_save = topup_first  # the first round's write, and (via save) every retry's
    request = req(id="e1", kind="event", account="x", service="sms", used=1)
    if interfering < MAX_ROUNDS:
        (out,) = r.charge(request)
        assert out.decision.result == "SUCCESS"
        assert r.store.view("x").balance == 10_000_000 + interfering * 1_000_000 - 2 * SMS
    else:
        with pytest.raises(StoreError, match=f"after {MAX_ROUNDS} rounds"):
            r.charge(request)
        assert r.store.view("x").balance == 10_000_000 + interfering * 1_000_000 - SMS
    assert writes["n"] == min(interfering + 1, MAX_ROUNDS)


def test_pipelined_writes_survive_redis_losing_its_scripts(rig):
    accounts = [f"n{i}" for i in range(200)]
    r = rig(accounts="\n".join(f'{{"id": "{a}", "plan": "PREPAID_S", "balance": "10.00"}}'
                               for a in accounts))
    r.charge(*[req(id=f"w-{a}", kind="event", account=a, service="sms", used=1)
               for a in accounts])
    r.client.script_flush()  # as after a restart of Redis: every EVALSHA answers NOSCRIPT
    outs = r.charge(*[req(id=f"e-{a}", kind="event", account=a, service="sms", used=1)
                      for a in accounts])
    assert [o.decision.result for o in outs] == ["SUCCESS"] * len(accounts)
    for a in accounts:
        assert r.store.view(a).balance == 10_000_000 - 2 * SMS
        assert r.store.reconciles(a, 10_000_000 - 2 * SMS)
