"""What Redis keeps does not grow without bound: idempotency records expire after their
retention, and ledger entries older than the ledger retention are trimmed as new ones are
appended, while a trimmed ledger still reconciles with the balance."""

from __future__ import annotations

import time

from balances.charger import Charger
from balances.store import BalanceStore
from tests.conftest import req

ACCOUNTS = "[{id: a, plan: PREPAID_S, balance: '1000.00'}]"


def _events(n: int, start: int = 0) -> list[dict]:
    return [req(id=f"e{i}", kind="event", account="a", service="sms", used=1)
            for i in range(start, start + n)]


def _charger(r, **retention) -> Charger:
    return Charger(BalanceStore(r.client, prefix=r.prefix, **retention), r.catalogs, r.clock)


def test_idempotency_records_expire_after_their_retention(rig):
    r = rig(accounts=ACCOUNTS)
    charger = _charger(r, retention_s=1)
    (first,) = r.charge(*_events(1), charger=charger)
    assert r.client.exists(r.store.keys.idem("a", "e0"))
    time.sleep(2.1)
    assert not r.client.exists(r.store.keys.idem("a", "e0"))
    # past the retention the id is a new request: the replay guarantee is bounded by it
    (again,) = r.charge(*_events(1), charger=charger)
    assert not again.replay and again.decision.result == "SUCCESS"
    assert r.store.view("a").balance == 1000_000_000 - 2 * 90_000


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
