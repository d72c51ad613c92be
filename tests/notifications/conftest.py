"""Fixtures of the notifier's integration tests: a broker, a webhook receiver, a notifier.

* ``broker``: the embedded Kafka-protocol broker (tansu), one for the module.
* ``receiver``: a real HTTP server on a loopback port, in a thread. It verifies each
  request's signature with ``SECRET`` (a bad one gets 401 and is counted in ``refused``),
  answers from a per-path script of status codes (``fail(path, 500, 500)``: two 500s, then
  200) and records every request it accepted.
* ``topics``: topic names of this test only (the broker is shared by the module).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from flows.broker import EmbeddedBroker, ensure_topics
from notifications.notifier import Topics
from notifications.signing import HEADER, SignatureError, verify

SECRET = b"whsec_integration"


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[str]:
    b = EmbeddedBroker(tmp_path_factory.mktemp("broker"))
    address = b.start()
    yield address
    b.stop()


@pytest.fixture
def topics(broker) -> Topics:
    tag = uuid.uuid4().hex[:8]
    t = Topics(f"d.{tag}", f"c.{tag}", f"n.{tag}", f"n.{tag}.dlq")
    ensure_topics(broker, {t.decisions: 1, t.charges: 1, t.notifications: 1,
                           t.dead_letters: 1})
    return t


@dataclass
class Hit:
    path: str
    body: dict
    status: int


@dataclass
class Receiver:
    url: str
    script: dict[str, list[int]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, path: str, *statuses: int) -> None:
        self.script[path] = list(statuses)

    def delivered(self, path: str) -> list[dict]:
        with self.lock:
            return [h.body for h in self.hits if h.path == path and h.status == 200]

    def tries(self, path: str) -> int:
        with self.lock:
            return sum(h.path == path for h in self.hits)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                verify(SECRET, self.headers.get(HEADER, ""), body)
            except SignatureError:
                with rec.lock:
                    rec.refused += 1
                self._answer(401)
                return
            with rec.lock:
                script = rec.script.get(self.path, [])
                status = script.pop(0) if script else 200
                rec.hits.append(Hit(self.path, orjson.loads(body), status))
            self._answer(status)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def read_topic(address: str, topic: str) -> list[dict]:
    """Everything on partition 0 of ``topic`` now."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": uuid.uuid4().hex,
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5})
    try:
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, lo)])
        out: list[dict] = []
        deadline = time.monotonic() + 20
        while len(out) < hi - lo and time.monotonic() < deadline:
            out += [orjson.loads(m.value()) for m in consumer.consume(1000, 0.1)
                    if not m.error()]
        return out
    finally:
        consumer.close()


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)
