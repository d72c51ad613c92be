"""Webhook delivery: each event POSTed to every webhook that takes its type, signed
(``notifications.signing``), retried with exponential back-off, dead-lettered after the last
try.

Delivery runs on a few worker threads fed by a bounded queue, so a slow or dead receiver
never holds up the notifier for longer than the queue takes to fill: ``submit`` waits only
while the queue is full, and a queue entry leaves within ``tries`` × (``timeout_s`` + back-off).
A try succeeds on a 2xx answer; anything else (another status, a refused connection, a
timeout) is retried after ``backoff_s``, then twice that, ... up to ``max_backoff_s``.
After the last try the event goes to ``dead_letter`` with the last error. At ``close`` the
queue is drained; an entry still waiting for a retry then is dead-lettered at once (its
error says so), so nothing is dropped silently.

Secrets are never logged: log lines name the webhook, not its URL's query or its secret.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from notifications.rules import Delivery, Webhook
from notifications.signing import HEADER, sign

log = logging.getLogger("chargeflow.notify")


@dataclass(frozen=True)
class Failed:
    """An event given up on: what goes to the dead-letter topic."""

    webhook: str
    url: str
    body: bytes
    error: str
    tries: int


class WebhookDelivery:
    def __init__(self, hooks: tuple[Webhook, ...], config: Delivery,
                 dead_letter: Callable[[Failed], None], *,
                 clock: Callable[[], float] = time.time):
        self.hooks = hooks
        self.config = config
        self.dead_letter = dead_letter
        self.clock = clock
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue = queue.Queue(maxsize=config.queue)
        self._stopping = threading.Event()
        self._client = httpx.Client(timeout=config.timeout_s, follow_redirects=False)
        self._threads = [threading.Thread(target=self._work, name=f"notify-webhook-{i}",
                                          daemon=True) for i in range(config.workers)]
        for t in self._threads:
            t.start()

    def submit(self, event_type: str, body: bytes) -> None:
        """Queue ``body`` for every webhook that takes ``event_type`` (waits while the
        queue is full)."""
        for hook in self.hooks:
            if event_type in hook.types:
                self._queue.put((hook, body))

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def wait_idle(self, timeout_s: float) -> bool:
        """Until every queued delivery finished (delivered or dead-lettered)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish the queue: first tries still run; retries are given up and dead-lettered."""
        self._stopping.set()
        self.wait_idle(timeout_s)
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout_s)
        self._client.close()

    # -- the workers
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._deliver(*item)
            except Exception:  # noqa: BLE001 - a worker must outlive any one delivery
                log.exception("webhook delivery failed unexpectedly")
            finally:
                self._queue.task_done()

    def _deliver(self, hook: Webhook, body: bytes) -> None:
        cfg = self.config
        error = ""
        tries = 0
        for attempt in range(1, cfg.tries + 1):
            tries = attempt
            error = self._try(hook, body)
            if not error:
                self.delivered += 1
                return
            if attempt == cfg.tries:
                break
            wait = min(cfg.backoff_s * 2 ** (attempt - 1), cfg.max_backoff_s)
            log.warning("webhook %s: try %d of %d failed (%s); again in %.2f s",
                        hook.name, attempt, cfg.tries, error, wait)
            if self._stopping.wait(wait):
                error = f"{error}; stopping before try {attempt + 1}"
                break
        self.failed += 1
        log.error("webhook %s: giving up after %d tries: %s", hook.name, tries, error)
        self.dead_letter(Failed(hook.name, hook.url, body, error, tries))

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
