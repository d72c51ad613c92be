"""Webhook delivery against a receiver that hangs: bounded tries, every event accounted for
(delivered or dead-lettered), and a graceful close that gives up retries loudly."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from notifications.delivery import Failed, WebhookDelivery
from notifications.rules import Delivery, Webhook


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
                        dead.append)
    for i in range(3):  # more than the queue holds: submit waits, then goes on
        d.submit("low_balance", b'{"id": "%d"}' % i)
    assert d.wait_idle(30)
    d.close()
    assert sorted(f.body for f in dead) == [b'{"id": "0"}', b'{"id": "1"}', b'{"id": "2"}']
    assert all(f.tries == 2 and "Timeout" in f.error for f in dead)
    assert d.delivered == 0 and d.failed == 3


def test_close_gives_up_a_waiting_retry_as_a_dead_letter(hanging):
    dead: list[Failed] = []
    d = WebhookDelivery((Webhook("slow", hanging, b"k"),),
                        Delivery(tries=5, backoff_s=60, timeout_s=0.2, workers=1),
                        dead.append)
    d.submit("final_grant", b"{}")
    d.close(timeout_s=5)
    (f,) = dead
    assert f.tries == 1 and "stopping before try 2" in f.error


def test_an_event_goes_only_to_webhooks_of_its_type(hanging):
    dead: list[Failed] = []
    d = WebhookDelivery((Webhook("slow", hanging, b"k", frozenset({"final_grant"})),),
                        Delivery(tries=1, timeout_s=0.2), dead.append)
    d.submit("low_balance", b"{}")
    assert d.pending() == 0
    d.close()
    assert dead == []
