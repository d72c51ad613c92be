"""Putting an engine together from configuration, and the broker-less JSONL mode.

``EngineConfig`` is read once, by the CLI, and handed to every worker; ``make_engine`` turns it
into an ``Engine`` with its own Redis connection, balance store, catalog cache and charger.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import chargeflow_native as native
from balances.charger import Charger
from balances.store import DEFAULT_LEDGER_RETENTION_S, DEFAULT_RETENTION_S, BalanceStore
from balances.sweeper import sweep
from catalog_cache.store import CatalogCache
from charging.rating import warm_up
from flows.engine import IDLE_TICK_S, Engine
from flows.observe import EngineMetrics
from flows.services import connect

OUTPUT_FILES = {"decision": "decisions.jsonl", "charge": "charges.jsonl",
                "reject": "rejects.jsonl"}


@dataclass(frozen=True)
class EngineConfig:
    redis_url: str
    prefix: str = "cf"
    fmt: str = "json"  # request encoding: json | msgpack
    retention_s: int = DEFAULT_RETENTION_S  # idempotency records
    ledger_retention_s: int = DEFAULT_LEDGER_RETENTION_S  # 0: keep the whole ledger
    cache_size: int = 200_000
    catalog_check_s: float = 0.1
    tune_gc: bool = False  # a long-running engine process: see ``tune_gc``
    sweep_every_s: float = 10.0  # how often a worker releases silent sessions


def tune_gc() -> None:
    """Set the cyclic garbage collector for an engine process. Every batch allocates tens of
    thousands of short-lived objects while a large cache of accounts lives on, so the default
    thresholds ran a collection every few hundred requests that walked all of it (measured:
    15-20 % of the engine's CPU). Objects alive after start-up (modules, compiled kernels)
    are frozen out of collections, and collections run ~70× less often; reference counting
    still frees everything that is not in a cycle at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def make_engine(config: EngineConfig, metrics: EngineMetrics | None = None) -> Engine:
    native.warn_if_stale()  # each worker: the JSONL mode and benchmarks build engines too
    client = connect(config.redis_url)
    store = BalanceStore(client, prefix=config.prefix, retention_s=config.retention_s,
                         ledger_retention_s=config.ledger_retention_s)
    catalogs = CatalogCache(client, prefix=config.prefix,
                            check_interval_s=config.catalog_check_s)
    charger = Charger(store, catalogs, lambda: time.time_ns() // 1_000_000,
                      cache_size=config.cache_size)
    warm_up(catalogs.current)  # compile the catalog and load the kernels now, not mid-batch
    if config.tune_gc:
        tune_gc()
    return Engine(charger, fmt=config.fmt, metrics=metrics,
                  sweeper=partial(sweep, store), sweep_every_s=config.sweep_every_s)


def run_jsonl(engine: Engine, lines: BinaryIO | Iterable[bytes], out_dir: Path,
              batch: int = 1024, wait_s: float = 0.002) -> None:
    """Decide every request of a JSONL stream, in order, into the three output files.

    A stream with a file descriptor (a file, a pipe, stdin) is read as it arrives: a batch
    is what came within ``wait_s`` (at most ``batch`` lines), and its outputs are flushed
    before the next read, so a process feeding a pipe gets each decision within a batch's
    time. Other iterables are read in chunks of ``batch`` lines.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {kind: open(out_dir / name, "wb") for kind, name in OUTPUT_FILES.items()}  # noqa: SIM115
    try:
        fileno = getattr(lines, "fileno", None)
        with _stop_signals() if fileno else nullcontext() as wake:
            chunks = (_stream_chunks(fileno(), batch, wait_s, wake) if fileno
                      else _chunks(lines, batch))
            for chunk in chunks:
                if not chunk:  # an idle tick of a stream: no request for a while
                    engine.idle()
                    continue
                for out in engine.process(chunk):
                    if out.kind != "reply":  # a reply repeats a decision for a gateway
                        files[out.kind].write(out.value + b"\n")
                for f in files.values():
                    f.flush()
    finally:
        for f in files.values():
            f.close()


@contextmanager
def _stop_signals() -> Iterator[int | None]:
    """SIGTERM and SIGINT end the input (README: they drain and stop the engine): the
    lines read so far are decided and written, then the run ends normally. Yields a file
    descriptor that becomes readable on such a signal (None off the main thread, where
    Python cannot handle signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    read_end, write_end = os.pipe()

    def stop(signum: int, frame: object) -> None:
        os.write(write_end, b"x")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield read_end
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(read_end)
        os.close(write_end)


def _chunks(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    payloads = (line.rstrip(b"\r\n") for line in lines if line.strip())
    while chunk := list(islice(payloads, size)):
        yield chunk


def _stream_chunks(fd: int, size: int, wait_s: float, stop: int | None = None,
                   idle_s: float = IDLE_TICK_S) -> Iterator[list[bytes]]:
    """Non-empty lines of ``fd`` in batches: a batch closes ``wait_s`` after its first line
    arrived (or at ``size`` lines, or at end of input — also when ``stop`` becomes
    readable). With nothing to read for ``idle_s``, an empty batch: the engine's idle
    tick (silent sessions are released with no traffic too)."""
    pending: list[bytes] = []
    tail: list[bytes] = []  # the line being read, in pieces (joined once it ends: a huge
    # line costs its length, not its length squared)
    opened = 0.0  # when the first pending line arrived
    watched = [fd] if stop is None else [fd, stop]
    while True:
        timeout = max(0.0, opened + wait_s - time.monotonic()) if pending else idle_s
        ready, _, _ = select.select(watched, [], [], timeout)
        if not ready and not pending:
            yield []  # idle
            continue
        if stop is not None and stop in ready:
            # a stop signal: the input ends here (a partial last line, whose rest is still
            # unread, is left to the next run rather than rejected as malformed)
            data, tail = b"", []
        else:
            data = os.read(fd, 1 << 20) if ready else None
        if data and b"\n" not in data:
            tail.append(data)
        elif data:
            lines = (b"".join(tail) + data if tail else data).split(b"\n")
            last = lines.pop()
            tail = [last] if last else []
            if not pending:
                opened = time.monotonic()
            pending += [x.rstrip(b"\r") for x in lines if x.strip()]
        elif data == b"" and tail:  # end of input without a final newline
            line = b"".join(tail)
            tail = []
            if line.strip():
                pending.append(line.rstrip(b"\r"))
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
            opened = time.monotonic()
        if pending and data and time.monotonic() - opened < wait_s:
            continue  # the batch is still open: read on
        if pending:
            yield pending
            pending = []
        if data == b"":
            return
