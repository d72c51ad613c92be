"""Webhook delivery against a receiver that hangs: bounded tries, every event accounted for
(delivered, dead-lettered or left in the journal), and a graceful close that keeps what it
could not deliver in the journal for the next start."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from notifications.delivery import Failed, Pending, WebhookDelivery
from notifications.rules import Delivery, Webhook


class Journal:
    """The journal's contract in memory: what is pending, by key."""

    def __init__(self, *pendings: Pending):
        self.held = {p.key: p for p in pendings}

    def tried(self, p: Pending) -> None:
        self.held[p.key] = p

    def done(self, p: Pending) -> None:
        self.held.pop(p.key, None)


def keep(into: list):
    """A dead-letter sink that accepts every letter."""
    return lambda failed: into.append(failed) or True


@pytest.fixture
def hanging() -> Iterator[str]:
    """A receiver that reads the request and never answers (until the test ends)."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            release.wait(30)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    release.set()
    server.shutdown()
    server.server_close()


def test_a_hanging_receiver_times_out_and_every_event_is_dead_lettered(hanging):
    dead: list[Failed] = []
    d = WebhookDelivery((Webhook("slow", hanging, b"k"),),
                        Delivery(tries=2, backoff_s=0.01, timeout_s=0.2, queue=1, workers=1),
                        keep(dead))
    for i in range(3):  # more than the queue holds: submit waits, then goes on
        for p in d.pending_for("low_balance", f"e{i}", b'{"id": "%d"}' % i):
            d.submit(p)
    assert d.wait_idle(30)
    d.close()
    assert sorted(f.body for f in dead) == [b'{"id": "0"}', b'{"id": "1"}', b'{"id": "2"}']
    assert all(f.tries == 2 and "Timeout" in f.error for f in dead)
    assert d.delivered == 0 and d.failed == 3


def test_close_leaves_a_waiting_retry_in_the_journal_with_its_tries(hanging):
    dead: list[Failed] = []
    journal = Journal()
    d = WebhookDelivery((Webhook("slow", hanging, b"k"),),
                        Delivery(tries=5, backoff_s=60, timeout_s=0.2, workers=1),
                        keep(dead), journal=journal)
    (p,) = d.pending_for("final_grant", "e1", b"{}")
    journal.tried(p)  # as the notifier's batch records it
    d.submit(p)
    d.close(timeout_s=5)
    assert dead == []
    (left,) = journal.held.values()
    assert (left.event, left.webhook, left.tries) == ("e1", "slow", 1)
    assert "Timeout" in left.error


def test_a_resumed_delivery_keeps_its_tries_and_a_removed_webhook_is_dead_lettered(hanging):
    dead: list[Failed] = []
    spent = Pending("e1", "slow", b'{"id": "e1"}', tries=3, error="HTTP 503")
    orphan = Pending("e2", "gone", b'{"id": "e2"}', tries=1, error="HTTP 500")
    journal = Journal(spent, orphan)
    d = WebhookDelivery((Webhook("slow", hanging, b"k"),),
                        Delivery(tries=3, timeout_s=0.2, workers=1), keep(dead),
                        journal=journal)
    assert d.resume(list(journal.held.values())) == 2
    assert d.wait_idle(10)
    d.close()
    assert journal.held == {}
    by_event = {f.body: f for f in dead}
    assert (by_event[spent.body].tries, by_event[spent.body].error) == (3, "HTTP 503")
    assert "no longer in the rules file" in by_event[orphan.body].error


def test_a_dead_letter_the_broker_did_not_take_stays_in_the_journal(hanging):
    p = Pending("e1", "slow", b"{}", tries=1, error="HTTP 503")
    journal = Journal(p)
    d = WebhookDelivery((Webhook("slow", hanging, b"k"),), Delivery(tries=1, timeout_s=0.2),
                        lambda failed: False, journal=journal)
    d.resume([p])
    assert d.wait_idle(10)
    d.close()
    assert list(journal.held) == [p.key]


def test_a_pending_delivery_reads_back_as_written_and_junk_is_refused():
    p = Pending("ntf_1", "crm|eu", b'{"id": "ntf_1", "value": "4.96"}', 2, "HTTP 503")
    assert Pending.decode(p.key, p.encode()) == p
    for key, value in (("ntf_1", p.encode()), (p.key, b"[]"), (p.key, b"{"),
                       (p.key, b'{"tries": "2", "error": "", "body": ""}')):
        with pytest.raises(ValueError):
            Pending.decode(key, value)


def test_an_event_goes_only_to_webhooks_of_its_type(hanging):
    dead: list[Failed] = []
    d = WebhookDelivery((Webhook("slow", hanging, b"k", frozenset({"final_grant"})),),
                        Delivery(tries=1, timeout_s=0.2), keep(dead))
    assert d.pending_for("low_balance", "e1", b"{}") == []
    assert d.pending_for("final_grant", "e1", b"{}") != []
    d.close()
    assert dead == []


def test_a_full_queue_stops_waiting_once_the_notifier_stops(hanging):
    """What does not fit is in the journal already: at a stop, submit gives up the wait."""
    stop = threading.Event()
    d = WebhookDelivery((Webhook("slow", hanging, b"k"),),
                        Delivery(tries=1, timeout_s=2, queue=1, workers=1), keep([]))
    first, second, third = (d.pending_for("low_balance", f"e{i}", b"{}")[0] for i in range(3))
    assert d.submit(first, stop) and d.submit(second, stop)  # one in a try, one queued
    stop.set()
    assert d.submit(third, stop) is False
    d.close(timeout_s=5)
