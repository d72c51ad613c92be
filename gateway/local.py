"""The doors' round trip to an engine in the same process: ``chargeflow serve`` without
``--kafka``.

The embedded broker slows as record batches pile up in its partitions, so a one-box OCS that
must run for hours does not put its gateway traffic through it: the doors hand their
requests to an engine on a thread of this process instead, micro-batched as the Kafka flow
batches them (at most ``batch`` requests, or what came within ``wait_s``). It is the same
engine (``flows.engine.Engine`` over ``service.charging``): the same validation, the same
store writes, idempotency records and outbox, the same decisions; requests are decided in
the order they arrived, so one account's requests are applied in order. What it does not do
is write Kafka topics: decisions go back to the door that asked, charges reach the archive
through the outbox (docs/billing.md).

``decide`` keeps ``gateway.bridge.KafkaBridge``'s promises: ``AnswerTimeout`` when no
decision comes within ``timeout_s`` (the request is still decided), ``Busy`` beyond
``max_inflight`` waiting requests.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

import orjson

from gateway.bridge import DEFAULT_MAX_INFLIGHT, DEFAULT_TIMEOUT_S, AnswerTimeout, Busy

log = logging.getLogger("chargeflow.gateway")


class RequestRejected(Exception):
    """The engine rejected a request a door built: a defect of the door, not of the input."""


class LocalBridge:
    def __init__(self, make_engine: Callable[[], object], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, batch: int = 1024,
                 wait_s: float = 0.001):
        self.make_engine = make_engine  # called on the engine's own thread
        self.timeout_s = timeout_s
        self.max_inflight = max_inflight
        self.batch = batch
        self.wait_s = wait_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._inflight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.answered = self.timed_out = self.refused = 0

    def start(self, timeout_s: float = 120.0) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="gateway-engine")
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._failed is not None:
            raise RuntimeError(f"the in-process engine did not start: {self._failed}")

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def inflight(self) -> int:
        return self._inflight

    async def decide(self, requests: Sequence[dict]) -> list[dict]:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._inflight + len(requests) > self.max_inflight:
                self.refused += 1
                raise Busy(f"{self._inflight} requests already wait for the engine")
            self._inflight += len(requests)
        futures = []
        try:
            for req in requests:
                future = loop.create_future()
                futures.append(future)
                self._queue.put((orjson.dumps(req), loop, future, time.monotonic_ns()))
            try:
                async with asyncio.timeout(self.timeout_s):
                    out = [await f for f in futures]
            except TimeoutError:
                self.timed_out += 1
                raise AnswerTimeout(f"no decision within {self.timeout_s:.1f} s") from None
            self.answered += len(out)
            return out
        finally:
            with self._lock:
                self._inflight -= len(requests)

    # -- the engine's thread
    def _run(self) -> None:
        try:
            engine = self.make_engine()
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._failed = exc
            self._ready.set()
            return
        self._ready.set()
        while not self._stop.is_set():
            items = self._take()
            if not items:
                engine.idle()  # silent sessions are released with no traffic too
                continue
            try:
                outputs = engine.process([p for p, *_ in items], [t for *_, t in items])
            except Exception as exc:  # noqa: BLE001 - process never raises for a message
                log.exception("the in-process engine failed a batch")
                for _, loop, future, _ in items:
                    _call(loop, _fail, future, exc)
                continue
            self._answer(items, outputs)

    def _take(self) -> list:
        """What came within ``wait_s`` of the first request (at most ``batch``); nothing
        after a second without requests (an idle tick)."""
        try:
            first = self._queue.get(timeout=1.0)
        except queue.Empty:
            return []
        if first is None:
            return []
        items = [first]
        deadline = time.monotonic() + self.wait_s
        while len(items) < self.batch:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                break
            items.append(item)
        return items

    def _answer(self, items: list, outputs: list) -> None:
        waiting: dict[str, list] = {}
        for payload, loop, future, _ in items:
            waiting.setdefault(orjson.loads(payload)["id"], []).append((loop, future))
        for out in outputs:
            if out.kind == "decision":
                decision = orjson.loads(out.value)
                # an id asked twice in one batch: both get its first decision (a replay's
                # is the same)
                for loop, future in waiting.pop(decision["id"], []):
                    _call(loop, _resolve, future, decision)
            elif out.kind == "reject":
                reject = orjson.loads(out.value)
                for loop, future in waiting.pop(reject.get("id"), []):
                    _call(loop, _fail, future, RequestRejected(
                        f"{reject['error']}: {reject['detail']}"))


def _call(loop: asyncio.AbstractEventLoop, fn, future: asyncio.Future, value) -> None:
    try:
        loop.call_soon_threadsafe(fn, future, value)
    except RuntimeError:  # the door's loop closed meanwhile: nobody waits for it
        pass


def _resolve(future: asyncio.Future, value: dict) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
