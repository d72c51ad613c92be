"""Webhook delivery: each event POSTed to every webhook that takes its type, signed
(``notifications.signing``), retried with exponential back-off, dead-lettered after the last
try — and kept in a durable journal until then, so a crash loses none.

A delivery is a ``Pending``: one event for one webhook, with the tries made so far. The
notifier writes the batch's pendings to the journal (Redis, ``notifications.state``) in
the same transaction as its slot states and offsets, then submits them here; a 2xx answer
or a dead letter on the broker removes one from the journal (``Journal.done``), a failed
try records the count (``Journal.tried``). A notifier restarted after a crash resumes
what the journal holds (``resume``): each event reaches each webhook at least once (a
crash between the 2xx and ``done`` sends it again; receivers drop repeats by event id).

Delivery runs on a few worker threads fed by a bounded queue, so a slow or dead receiver
never holds up the notifier for longer than the queue takes to fill: ``submit`` waits only
while the queue is full, and a queue entry leaves within ``tries`` × (``timeout_s`` + back-off).
A try succeeds on a 2xx answer; anything else (another status, a refused connection, a
timeout) is retried after ``backoff_s``, then twice that, ... up to ``max_backoff_s``.
After the last try the event goes to ``dead_letter`` with the last error.

``close`` drains: what is queued gets its next try (no back-off waits) within the drain
time; what is still not delivered then — a receiver down — stays in the journal for the
next start, with its tries so far, instead of being given up.

Secrets are never logged: log lines name the webhook, not its URL's query or its secret.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

import httpx
import orjson

from notifications.rules import Delivery, Webhook
from notifications.signing import HEADER, sign

log = logging.getLogger("chargeflow.notify")


@dataclass(frozen=True)
class Pending:
    """One event to deliver to one webhook (by name), with the tries made and the last
    error; what the journal keeps until a 2xx answer or a dead letter."""

    event: str  # the event's id
    webhook: str
    body: bytes
    tries: int = 0
    error: str = ""

    @property
    def key(self) -> str:
        """The journal's field: event ids have no ``|``, so the first one splits."""
        return f"{self.event}|{self.webhook}"

    def encode(self) -> bytes:
        return orjson.dumps({"tries": self.tries, "error": self.error,
                             "body": self.body.decode()})

    @classmethod
    def decode(cls, key: str, value: bytes) -> Pending:
        """``ValueError`` when ``key`` / ``value`` are not what ``encode`` wrote."""
        event, sep, webhook = key.partition("|")
        try:
            doc = orjson.loads(value)
            ok = sep and isinstance(doc, dict) and type(doc.get("tries")) is int \
                and isinstance(doc.get("error"), str) and isinstance(doc.get("body"), str)
        except orjson.JSONDecodeError:
            ok = False
        if not ok:
            raise ValueError(f"pending delivery {key!r} is unreadable")
        return cls(event, webhook, doc["body"].encode(), doc["tries"], doc["error"])


@dataclass(frozen=True)
class Failed:
    """An event given up on: what goes to the dead-letter topic."""

    webhook: str
    url: str
    body: bytes
    error: str
    tries: int


class Journal(Protocol):
    """Where pending deliveries are kept (``notifications.state.NotifyState``)."""

    def tried(self, p: Pending) -> None: ...

    def done(self, p: Pending) -> None: ...


class _Memory:
    """No journal: deliveries live in memory only (tests of delivery alone)."""

    def tried(self, p: Pending) -> None:
        pass

    def done(self, p: Pending) -> None:
        pass


class WebhookDelivery:
    def __init__(self, hooks: tuple[Webhook, ...], config: Delivery,
                 dead_letter: Callable[[Failed], bool], *, journal: Journal | None = None,
                 clock: Callable[[], float] = time.time):
        """``dead_letter`` returns whether the dead letter is on the broker: only then
        does the delivery leave the journal."""
        self.hooks = {h.name: h for h in hooks}
        self.config = config
        self.dead_letter = dead_letter
        self.journal = journal or _Memory()
        self.clock = clock
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue = queue.Queue(maxsize=config.queue)
        self._stopping = threading.Event()  # no more back-off waits: one try each
        self._closed = threading.Event()  # workers leave what is queued to the journal
        self._client = httpx.Client(timeout=config.timeout_s, follow_redirects=False)
        self._threads = [threading.Thread(target=self._work, name=f"notify-webhook-{i}",
                                          daemon=True) for i in range(config.workers)]
        for t in self._threads:
            t.start()

    def pending_for(self, event_type: str, event_id: str, body: bytes) -> list[Pending]:
        """The deliveries of one event: one per webhook that takes ``event_type``."""
        return [Pending(event_id, h.name, body) for h in self.hooks.values()
                if event_type in h.types]

    def submit(self, p: Pending, stop: threading.Event | None = None) -> bool:
        """Queue a delivery: waits while the queue is full, unless ``stop`` is set (then
        False: the delivery is left to the journal, which holds it already)."""
        while True:
            try:
                self._queue.put(p, timeout=0.1)
                return True
            except queue.Full:
                if stop is not None and stop.is_set():
                    return False

    def resume(self, pendings: Iterable[Pending], stop: threading.Event | None = None) -> int:
        """Queue what a journal held at start (a crash's leftovers); how many."""
        n = 0
        for p in pendings:
            if not self.submit(p, stop):
                break
            n += 1
        return n

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def wait_idle(self, timeout_s: float) -> bool:
        """Until every queued delivery finished (delivered, dead-lettered or, closing,
        left to the journal)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Drain: each queued delivery gets its next try (no back-off) within
        ``timeout_s``; what is not delivered stays in the journal for the next start."""
        self._stopping.set()
        self.wait_idle(timeout_s)
        self._closed.set()
        for t in self._threads:
            t.join(timeout_s + self.config.timeout_s)
        self._client.close()

    # -- the workers
    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._closed.is_set():
                    return
                continue
            try:
                if not self._closed.is_set():  # closed: it stays in the journal
                    self._deliver(item)
            except Exception:  # noqa: BLE001 - a worker must outlive any one delivery
                log.exception("webhook delivery failed unexpectedly; it stays pending")
            finally:
                self._queue.task_done()

    def _deliver(self, p: Pending) -> None:
        cfg = self.config
        hook = self.hooks.get(p.webhook)
        if hook is None:  # resumed from the journal, the webhook since removed
            self._give_up(p, None, f"{p.error or 'not delivered'}; the webhook is no longer "
                                   "in the rules file")
            return
        while p.tries < cfg.tries:
            error = self._try(hook, p.body)
            if not error:
                self.journal.done(p)
                self.delivered += 1
                return
            p = replace(p, tries=p.tries + 1, error=error)
            if p.tries == cfg.tries:
                break
            self.journal.tried(p)
            wait = min(cfg.backoff_s * 2 ** (p.tries - 1), cfg.max_backoff_s)
            if self._stopping.wait(wait):
                log.warning("webhook %s: try %d of %d failed (%s); stopping, the next "
                            "try after the restart", hook.name, p.tries, cfg.tries, error)
                return
            log.warning("webhook %s: try %d of %d failed (%s); again in %.2f s",
                        hook.name, p.tries, cfg.tries, error, wait)
        self._give_up(p, hook, p.error)

    def _give_up(self, p: Pending, hook: Webhook | None, error: str) -> None:
        self.failed += 1
        log.error("webhook %s: giving up after %d tries: %s", p.webhook, p.tries, error)
        if self.dead_letter(Failed(p.webhook, hook.url if hook else "", p.body, error,
                                   p.tries)):
            self.journal.done(p)
        else:
            log.error("webhook %s: the dead letter of event %s is not on the broker; the "
                      "delivery stays pending (tried again at the next start)",
                      p.webhook, p.event)

    def _try(self, hook: Webhook, body: bytes) -> str:
        """One POST; '' on a 2xx answer, else what went wrong."""
        headers = {"Content-Type": "application/json",
                   HEADER: sign(hook.secret, body, int(self.clock()))}
        try:
            resp = self._client.post(hook.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= resp.status_code < 300:
            return ""
        return f"HTTP {resp.status_code}"
