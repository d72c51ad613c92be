"""What Redis keeps does not grow without bound: idempotency records past their retention are
dropped by the account's next write (a quiet account keeps its last few), and ledger entries
older than the ledger retention are trimmed as new ones are appended, while a trimmed ledger
still reconciles with the balance."""

from __future__ import annotations

import time

from balances.charger import Charger
from balances.codec import KEEP_RECORDS
from balances.store import BalanceStore
from tests.conftest import req

ACCOUNTS = "[{id: a, plan: PREPAID_S, balance: '1000.00'}]"


def _events(n: int, start: int = 0) -> list[dict]:
    return [req(id=f"e{i}", kind="event", account="a", service="sms", used=1)
            for i in range(start, start + n)]


def _charger(r, **retention) -> Charger:
    return Charger(BalanceStore(r.client, prefix=r.prefix, **retention), r.catalogs, r.clock)


def _record_ids(r, account: str) -> list[str]:
    return sorted(k.decode()[2:] for k in r.raw(account) if k.startswith(b"i:"))


def test_records_live_in_the_account_and_later_writes_drop_those_past_the_retention(rig):
    r = rig(accounts=ACCOUNTS)
    charger = _charger(r, retention_s=60)
    r.charge(*_events(10), charger=charger)
    assert _record_ids(r, "a") == sorted(f"e{i}" for i in range(10))
    assert not list(r.client.scan_iter(match=r.store.keys.idem("a", "*")))  # no key per id
    r.clock.advance(59_000)
    r.charge(*_events(1, start=10), charger=charger)  # within the retention: all kept
    assert len(_record_ids(r, "a")) == 11
    assert all(o.replay for o in r.charge(*_events(11), charger=_charger(r, retention_s=60)))
    r.clock.advance(2_000)  # e0..e9 are past it now, e10 not
    r.charge(*_events(1, start=11), charger=charger)
    # dropped oldest first down to the last KEEP_RECORDS (4), never one within the retention
    assert _record_ids(r, "a") == ["e10", "e11", "e8", "e9"]
    # past the retention an id is a new request: the replay guarantee is bounded by it
    (again,) = r.charge(*_events(1), charger=_charger(r, retention_s=60))
    assert not again.replay and again.decision.result == "SUCCESS"
    assert r.store.view("a").balance == 1000_000_000 - 13 * 90_000


def test_a_quiet_account_keeps_its_last_records_whatever_their_age(rig):
    r = rig(accounts=ACCOUNTS)
    charger = _charger(r, retention_s=1)
    for i in range(KEEP_RECORDS + 3):
        r.clock.advance(10_000)
        r.charge(*_events(1, start=i), charger=charger)
    kept = [f"e{i}" for i in range(3, KEEP_RECORDS + 3)]
    assert _record_ids(r, "a") == sorted(kept)
    r.clock.advance(86_400_000)  # a day without writes drops nothing: only writes trim
    again = r.charge(*[_events(1, start=int(k[1:]))[0] for k in kept],
                     charger=_charger(r, retention_s=1))
    assert all(o.replay for o in again)


def test_an_unknown_accounts_records_are_keys_that_expire(rig):
    r = rig(accounts=ACCOUNTS)
    charger = _charger(r, retention_s=1)
    nobody = req(id="x1", kind="event", account="nobody", service="sms", used=1)
    (first,) = r.charge(nobody, charger=charger)
    assert first.decision.result == "USER_UNKNOWN"
    assert r.client.exists(r.store.keys.idem("nobody", "x1"))
    assert not r.client.exists(r.store.keys.account("nobody"))  # no account made for it
    (again,) = r.charge(nobody, charger=_charger(r, retention_s=1))
    assert again.replay
    time.sleep(2.1)
    assert not r.client.exists(r.store.keys.idem("nobody", "x1"))


def test_old_ledger_entries_are_trimmed_and_the_rest_still_reconciles(rig):
    r = rig(accounts=ACCOUNTS)
    charger = _charger(r, ledger_retention_s=1)
    for k in range(3):  # 300 entries: three stream nodes of 100
        r.charge(*_events(100, 100 * k), charger=charger)
    ledger = r.client.xlen(r.store.keys.ledger("a"))
    assert ledger == 301  # the open entry and one per event: nothing is old yet
    time.sleep(1.2)
    r.charge(*_events(1, 300), charger=charger)
    kept = r.store.ledger("a")
    assert len(kept) < 100  # the old nodes went as the new entry was appended
    assert kept[-1]["id"] == "e300"
    balance = r.store.view("a").balance
    assert balance == 1000_000_000 - 301 * 90_000
    assert r.store.reconciles("a", balance)
    assert not r.store.reconciles("a", balance + 1)


def test_ledger_retention_zero_keeps_every_entry(rig):
    r = rig(accounts=ACCOUNTS)
    charger = _charger(r, ledger_retention_s=0)
    r.charge(*_events(150), charger=charger)
    time.sleep(1.1)
    r.charge(*_events(1, 150), charger=charger)
    kept = r.store.ledger("a")
    assert len(kept) == 152 and kept[0]["reason"] == "open"
    assert sum(e["delta"] for e in kept) == r.store.view("a").balance
