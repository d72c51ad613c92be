"""The archive (CONTRACT §8.1, docs/billing.md) on a real Redis and a real PostgreSQL:
everything the outbox carries — engine charges and their ledger entries, releases, top-ups
and adjustments, account loads — reaches the archive once, reconciles with Redis, cannot be
changed afterwards, and an edit made behind the triggers' back is found by the chain."""

from __future__ import annotations

from pathlib import Path

import msgpack
import psycopg
import pytest
from click.testing import CliRunner

from balances.sweeper import sweep
from billing.archive import Archiver, ArchiveSettings
from billing.db import apply_migrations
from flows.cli import main
from tests.conftest import req

ACCOUNTS = """\
- {id: alice, plan: PREPAID_S, balance: "10.00", name: Alice GmbH, country: DE,
   customer: business, vat_id: DE136695976}
- {id: bob, plan: PREPAID_S, balance: "5.00", country: FR}
- {id: carol, plan: DAILY_SMS, balance: "0.50"}
"""


def traffic(r) -> list:
    """Engine charges of every kind, a replay, an unknown account, top-ups, an adjustment
    and a release; the outcomes that charged."""
    outs = r.charge(*[req(id=f"sms-{k}", kind="event", account=a, service="sms", used=1)
                      for k, a in enumerate(["alice", "bob", "carol", "carol", "carol"] * 3)])
    outs += r.charge(req(id="v:0", kind="initial", account="alice", service="voice",
                         session="v", requested=60))
    outs += r.charge(req(id="v:1", kind="update", account="alice", service="voice",
                         session="v", seq=1, used=45, requested=60))
    outs += r.charge(req(id="v:2", kind="terminate", account="alice", service="voice",
                         session="v", seq=2, used=30))
    outs += r.charge(req(id="sms-0", kind="event", account="alice", service="sms", used=1))
    outs += r.charge(req(id="ghost-1", kind="event", account="ghost", service="sms", used=1))
    outs += r.charge(req(id="w:0", kind="initial", account="bob", service="voice",
                         session="w", requested=60))  # left silent: released below
    assert r.store.topup("alice", 2_500_000, topup_id="pay-1", actor="key-7",
                         note="card payment").status == "ok"
    assert r.store.topup("alice", 2_500_000, topup_id="pay-1").status == "replay"
    assert r.store.topup("bob", -1_000_000, reason="adjustment", actor="key-9",
                         note="goodwill reversed").status == "ok"
    assert sweep(r.store, r.clock.advance(3_600_000)) == 1
    return [o for o in outs if o.charge is not None and not o.replay]


def archive(db, r, **settings) -> Archiver:
    a = Archiver(db, r.client, prefix=r.prefix, settings=ArchiveSettings(**settings))
    a.run(until_idle=True)
    return a


@pytest.fixture
def archived(rig, db):
    r = rig(accounts=ACCOUNTS)
    charged = traffic(r)
    return r, charged, archive(db, r, batch=3)


def test_every_change_reaches_the_archive_once_and_reconciles_with_redis(archived, db):
    r, charged, archiver = archived
    assert archiver.totals.rejects == archiver.totals.duplicates == 0
    rows = db.execute("SELECT id, account, cost, balance, rate, session, seq, units, "
                      "rated_units FROM charges ORDER BY id").fetchall()
    want = sorted((o.charge.id, o.charge.account, round(float(o.record()["charge"]["cost"]) * 1e6),
                   round(float(o.record()["charge"]["balance"]) * 1e6), o.charge.rate,
                   o.charge.session, o.charge.seq, o.charge.units,
                   o.charge.rated_units) for o in charged)
    assert rows == want and len(rows) == len({row[0] for row in rows})
    for account in ("alice", "bob", "carol"):
        redis_ledger = r.store.ledger(account)
        archived_ledger = db.execute(
            "SELECT entry_id, delta, balance, reason, actor, note FROM ledger WHERE account = "
            "%s ORDER BY chain_seq", (account,)).fetchall()
        assert [(e["id"], e["delta"], e["balance"], e["reason"]) for e in redis_ledger] == [
            row[:4] for row in archived_ledger]
        assert sum(row[1] for row in archived_ledger) == r.store.view(account).balance
    assert db.execute("SELECT actor, note FROM ledger WHERE entry_id = 'pay-1'").fetchall() \
        == [("key-7", "card payment")]
    assert db.execute("SELECT reason, delta, released FROM ledger WHERE entry_id = "
                      "'release:w'").fetchone() == ("release", 0, 150_000)
    assert db.execute("SELECT account, plan, country, customer, vat_id, name FROM accounts "
                      "ORDER BY account").fetchall() == [
        ("alice", "PREPAID_S", "DE", "business", "DE136695976", "Alice GmbH"),
        ("bob", "PREPAID_S", "FR", None, None, None),
        ("carol", "DAILY_SMS", None, None, None, None)]
    # what is archived is trimmed from the outbox, the last entry kept as the resume mark
    assert r.client.xlen(r.store.keys.outbox("")) == 1
    again = archive(db, r)
    assert again.totals.entries == 0


def test_a_second_load_changes_the_attributes_and_keeps_the_opening(archived, db):
    r, _, _ = archived
    (opened,) = db.execute("SELECT opened_at FROM accounts WHERE account = 'bob'").fetchone()
    r.add_accounts('- {id: bob, plan: DAILY_SMS, balance: "99.00", name: Bob}\n')
    archive(db, r)
    assert db.execute("SELECT plan, name, country, opened_at FROM accounts WHERE account = "
                      "'bob'").fetchone() == ("DAILY_SMS", "Bob", "FR", opened)
    changes = db.execute("SELECT opened, attrs->>'plan' FROM account_changes WHERE account = "
                         "'bob' ORDER BY chain_seq").fetchall()
    assert changes == [(True, "PREPAID_S"), (False, "DAILY_SMS")]


@pytest.mark.parametrize("statement", [
    "UPDATE charges SET cost = cost + 1",
    "UPDATE charges SET account = 'mallory' WHERE id = 'sms-0'",
    "DELETE FROM charges WHERE id = 'sms-0'",
    "UPDATE ledger SET delta = 0 WHERE entry_id = 'pay-1'",
    "DELETE FROM ledger",
    "UPDATE account_changes SET attrs = '{}'",
    "DELETE FROM account_changes",
    "TRUNCATE charges",
    "TRUNCATE ledger",
    "UPDATE charges SET invoice_id = 7 WHERE id = 'sms-0'; "
    "UPDATE charges SET invoice_id = 8 WHERE id = 'sms-0'",
    "UPDATE charges SET late = true WHERE id = 'sms-0'; "
    "UPDATE charges SET late = false WHERE id = 'sms-0'",
])
def test_the_database_refuses_to_change_the_archive(archived, db, statement):
    before = db.execute("SELECT count(*), sum(cost) FROM charges").fetchone()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        db.execute(statement)
    db.rollback()
    partitions = [p for (p,) in db.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent IN "
        "('charges'::regclass, 'ledger'::regclass)")]
    assert "charges_y2026m11" in partitions and len(partitions) >= 2
    for partition in partitions:  # directly, too
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            db.execute(f"TRUNCATE {partition}")
        db.rollback()
    assert db.execute("SELECT count(*), sum(cost) FROM charges").fetchone() == before


def test_billing_may_mark_a_charge_late_and_name_its_invoice_once(archived, db):
    db.execute("UPDATE charges SET late = true, invoice_id = 41 WHERE id = 'sms-1'")
    db.commit()
    assert db.execute("SELECT late, invoice_id FROM charges WHERE id = 'sms-1'").fetchone() \
        == (True, 41)


def verify(db_url: str, *args: str):
    return CliRunner().invoke(main, ["audit", "verify", "--db", db_url, *args],
                              catch_exceptions=False)


def behind_the_triggers(db, sql: str) -> None:
    """An edit as a superuser can make it: triggers off for the session."""
    db.execute("SET session_replication_role = replica")
    db.execute(sql)
    db.execute("SET session_replication_role = origin")
    db.commit()


def test_audit_verify_passes_an_intact_archive(archived, db_url):
    res = verify(db_url, "--json")
    assert res.exit_code == 0, res.output
    assert '"ok":true' in res.stdout and '"broken":null' in res.stdout


@pytest.mark.parametrize("edit, where, reason", [
    ("UPDATE charges SET cost = cost - 1 WHERE id = 'sms-4'", "charges record 'sms-4'",
     "does not match its content"),
    ("UPDATE ledger SET note = 'cash' WHERE entry_id = 'pay-1'", "ledger record 'pay-1'",
     "does not match its content"),
    ("UPDATE account_changes SET attrs = attrs || '{\"country\": \"CH\"}' WHERE account = "
     "'bob'", "account_changes record", "does not match its content"),
    ("DELETE FROM ledger WHERE entry_id = 'sms-8'", "of account 'carol'",
     "expected chain_seq"),
    ("UPDATE charges SET prev_hash = hash WHERE id = 'sms-3'", "charges record 'sms-3'",
     "prev_hash"),
])
def test_audit_verify_names_the_first_broken_record(archived, db, db_url, edit, where,
                                                    reason):
    behind_the_triggers(db, edit)
    res = verify(db_url)
    assert res.exit_code == 1, res.output
    assert where in res.stderr and reason in res.stderr, res.stderr


def test_audit_verify_finds_records_cut_off_at_the_end(archived, db, db_url):
    (last,) = db.execute("SELECT max(chain_seq) FROM charges WHERE account = "
                         "'carol'").fetchone()
    behind_the_triggers(db, f"DELETE FROM charges WHERE account = 'carol' AND chain_seq = "
                            f"{last}")
    res = verify(db_url)
    assert res.exit_code == 1 and "chain_heads" in res.stderr and "'carol'" in res.stderr


def test_a_repeated_charge_is_archived_once_and_an_unreadable_entry_kept_aside(rig, db):
    """A charge is kept once per (id, usage time) whatever the outbox holds; its ledger entry,
    written again at another time, is a second balance change and is kept (the ledger
    reconciles with the balances Redis holds)."""
    r = rig(accounts=ACCOUNTS)
    r.charge(req(id="e1", kind="event", account="alice", service="sms", used=1))
    stream = r.store.keys.outbox("")
    (first, charged), = r.client.xrange(stream, min="(0-0")[-1:]
    later = int(first.split(b"-")[0]) + 1000
    r.client.xadd(stream, charged, id=f"{later}-0")  # the same charge again, a second later
    r.client.xadd(stream, {"r": msgpack.packb({"account": "alice", "ledger": "nope"})},
                  id=f"{later}-1")
    a = archive(db, r, batch=100)
    assert (a.totals.duplicates, a.totals.rejects) == (1, 1)
    assert db.execute("SELECT count(*) FROM charges WHERE id = 'e1'").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM ledger WHERE entry_id = 'e1'").fetchone() == (2,)
    (error,) = db.execute("SELECT error FROM archive_rejects").fetchone()
    assert "ledger 'nope' is not a list" in error
    # the same entry once more, in a later batch, at the same time: nothing new at all
    r.client.xadd(stream, charged, id=f"{later}-2")
    a = archive(db, r, batch=100)
    assert (a.totals.duplicates, a.totals.charges, a.totals.ledger) == (2, 0, 0)
    assert db.execute("SELECT count(*) FROM ledger WHERE entry_id = 'e1'").fetchone() == (2,)


def test_a_retention_keeps_archived_entries_in_the_outbox(rig, db):
    r = rig(accounts=ACCOUNTS)
    archive(db, r, retain_ms=3_600_000)
    assert r.client.xlen(r.store.keys.outbox("")) == 3


MIGRATIONS = Path(__file__).resolve().parents[2] / "billing" / "migrations"


def test_migrations_apply_once(db):
    assert apply_migrations(db) == []
    applied = [n for (n,) in db.execute("SELECT name FROM schema_migrations ORDER BY version")]
    assert applied[:2] == ["0001_archive.sql", "0002_archive_rejects.sql"]
    assert applied == sorted(p.name for p in MIGRATIONS.glob("*.sql"))


def test_on_a_cluster_every_slots_outbox_is_archived(rig, db, redis_cluster):
    r = rig(client=redis_cluster, catalogs="fixed", accounts="".join(
        f'- {{id: c{k}, plan: PREPAID_S, balance: "1.00"}}\n' for k in range(12)))
    outs = r.charge(*[req(id=f"x{k}", kind="event", account=f"c{k % 12}", service="sms",
                          used=1) for k in range(24)])
    a = Archiver(db, redis_cluster, prefix=r.prefix)
    streams = a.streams()
    assert len(streams) > 1 and all(s.startswith(f"{r.prefix}:outbox:{{") for s in streams)
    a.run(until_idle=True)
    assert a.totals.charges == len([o for o in outs if o.charge is not None]) == 24
    assert a.totals.account_changes == 12
    assert db.execute("SELECT count(DISTINCT stream) FROM archive_streams").fetchone() == (
        len(streams),)
