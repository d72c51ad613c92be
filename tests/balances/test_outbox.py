"""The outbox (docs/billing.md): every account write that moves money, charges or changes an
account's attributes appends one entry to the archive's stream in the same atomic script —
no dual write that could lose one side — and the identity index follows accounts load."""

from __future__ import annotations

import msgpack

from balances.accounts import parse_accounts
from balances.codec import decode_record
from tests.conftest import TUE_PEAK

SMS = {"kind": "event", "service": "sms", "ts": TUE_PEAK, "used": 1}


def read(client, key: str) -> list[dict]:
    out = []
    for _, f in client.xrange(key):
        doc = msgpack.unpackb(f[b"r"], raw=False)
        doc["records"] = [f[b"c%d" % k] for k in range(1, len(f))]
        out.append(doc)
    return out


def outbox(rig) -> list[dict]:
    return read(rig.client, rig.store.keys.outbox("any"))


def fields(entry: list) -> dict:
    return dict(zip(entry[::2], entry[1::2]))


def test_accounts_load_appends_attributes_and_openings_and_indexes_identities(rig):
    r = rig(accounts='- {id: alice, plan: PREPAID_S, balance: "10.00", msisdn: "4915112345", '
                     'imsi: "262011234567890", name: Alice, country: DE, customer: business, '
                     'vat_id: DE136695976}\n')
    (opened,) = outbox(r)
    assert opened["account"] == "alice"
    assert opened["account_attrs"] == {
        "plan": "PREPAID_S", "status": "active", "allow_negative": False, "name": "Alice",
        "country": "DE", "customer": "business", "vat_id": "DE136695976",
        "msisdn": "4915112345", "imsi": "262011234567890"}
    assert [fields(e) for e in opened["ledger"]] == [{
        "id": "open", "delta": "10000000", "balance": "10000000", "reason": "open",
        "actor": "cli"}]
    keys = r.store.keys
    assert r.client.get(keys.identity("msisdn", "4915112345")) == b"alice"
    assert r.client.get(keys.identity("imsi", "262011234567890")) == b"alice"
    assert r.store.attributes("alice")["country"] == "DE"

    # a new number for alice: the old one no longer names her; the balance is kept
    r.store.upsert_accounts(parse_accounts(
        '- {id: alice, plan: PREPAID_S, balance: "99.00", msisdn: "4915199999"}\n',
        r.catalog))
    assert r.client.get(keys.identity("msisdn", "4915112345")) is None
    assert r.client.get(keys.identity("msisdn", "4915199999")) == b"alice"
    changed = outbox(r)[-1]
    assert changed["ledger"] == [] and changed["account_attrs"]["msisdn"] == "4915199999"
    assert r.store.view("alice").balance == 10_000_000


def test_a_charge_is_in_the_outbox_once_with_its_ledger_entry(rig):
    r = rig(accounts='- {id: bob, plan: PREPAID_S, balance: "1.00"}\n')
    before = len(outbox(r))
    out = r.one(dict(SMS, id="s1", account="bob"))
    unknown = r.one(dict(SMS, id="s2", account="ghost"))  # no account: nothing archived
    assert unknown.decision.result == "USER_UNKNOWN"
    r.one(dict(SMS, id="s1", account="bob"))  # a replay writes nothing
    entries = outbox(r)[before:]
    assert len(entries) == 1
    (e,) = entries
    assert e["account"] == "bob"
    assert [decode_record(rec)["charge"] for rec in e["records"]] == [out.record()["charge"]]
    (ledger,) = [fields(x) for x in e["ledger"]]
    assert (ledger["id"], ledger["delta"], ledger["reason"]) == ("s1", "-90000", "event")


def test_the_outbox_lives_in_the_accounts_slot_on_a_cluster(rig, redis_cluster):
    r = rig(client=redis_cluster, catalogs="fixed",
            accounts='- {id: carol, plan: PREPAID_S, balance: "1.00", msisdn: "491701"}\n'
                     '- {id: dave, plan: PREPAID_S, balance: "1.00", imsi: "26201"}\n')
    keys = r.store.keys
    assert redis_cluster.get(keys.identity("msisdn", "491701")) == b"carol"
    assert redis_cluster.get(keys.identity("imsi", "26201")) == b"dave"
    r.one(dict(SMS, id="c1", account="carol"))
    entries = read(redis_cluster, keys.outbox("carol"))
    assert [e["account"] for e in entries if e["records"]] == ["carol"]


def test_a_top_up_is_ledgered_with_its_actor_and_in_the_outbox(rig):
    r = rig(accounts='- {id: erin, plan: PREPAID_S, balance: "1.00"}\n')
    before = len(outbox(r))
    assert r.store.topup("erin", 2_500_000, topup_id="pay-1", actor="key-42",
                         note="card payment").status == "ok"
    assert r.store.topup("erin", 2_500_000, topup_id="pay-1").status == "replay"  # once
    assert r.store.topup("erin", -500_000, reason="adjustment").status == "ok"  # no id
    entries = outbox(r)[before:]
    assert [fields(e["ledger"][0]) for e in entries] == [
        {"id": "pay-1", "delta": "2500000", "balance": "3500000", "reason": "topup",
         "actor": "key-42", "note": "card payment"},
        {"id": f"adjustment:{r.store.view('erin').version}", "delta": "-500000",
         "balance": "3000000", "reason": "adjustment", "actor": "cli"}]
    ledger = r.store.ledger("erin")
    assert [e["actor"] for e in ledger] == ["cli", "key-42", "cli"]
    assert r.store.reconciles("erin", 3_000_000)


def test_a_final_grant_that_charged_nothing_is_in_the_outbox_for_the_notifier_only(rig):
    """A session's ``initial`` only reserves: no ledger entry, no charge. When its grant is
    final (the balance pays less than asked) the entry's ``r`` names it (the notifier's
    ``--source outbox`` reads it); the archive's reading of the entry is unchanged."""
    from billing.outbox import decode_entry

    r = rig(accounts='- {id: fay, plan: PREPAID_S, balance: "0.50"}\n')
    before = len(outbox(r))
    voice = {"kind": "initial", "service": "voice", "ts": TUE_PEAK, "account": "fay",
             "destination": "4917612345", "seq": 0}
    normal = r.one(dict(voice, id="v0", session="s0", requested=1))  # not final: no entry
    assert (normal.decision.result, normal.decision.final) == ("SUCCESS", False)
    out = r.one(dict(voice, id="v1", session="s1", requested=100_000))
    assert (out.decision.result, out.decision.final) == ("SUCCESS", True)
    r.one(dict(voice, id="v1", session="s1", requested=100_000))  # a replay: nothing
    entries = outbox(r)[before:]
    assert [(e["final_grants"], e["ledger"], e["records"]) for e in entries] == [
        ([["v1", str(out.decision.granted), "500000", "0"]], [], [])]
    ((sid, raw),) = r.client.xrevrange(r.store.keys.outbox("fay"), count=1)
    assert decode_entry(sid, raw).records == []  # nothing for the archive
