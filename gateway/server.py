"""Running the front doors (CONTRACT §6.1): what every door gets, and their life cycle.

A door (Diameter Gy in ``gateway.diameter``, Nchf in ``gateway.nchf``, the account API in
``api``) is an object with ``name``, ``async start() -> (host, port)`` once it accepts
connections, and ``async close()``: stop accepting, drain what is in flight (Diameter: DPR
to its peers). ``run_doors`` starts the enabled ones on one asyncio loop, prints
``<door> listening on HOST:PORT`` for each, and on SIGTERM or SIGINT closes them and the
bridge, so ``chargeflow gateway`` / ``serve`` exit 0 after a drain.

Doors keep no session state of their own that another gateway would need: what a later
message of a session needs is in Redis (``Context.redis``), so any gateway instance may
serve any message of a session.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: the CLI imports the door framework at every start
    import redis.asyncio as aioredis

    from catalog_cache.store import CatalogCache
    from gateway.identities import Identities

log = logging.getLogger("chargeflow.gateway")


@dataclass(frozen=True)
class DoorConfig:
    """The doors' settings from the command line (CONTRACT §6.1, §6.3)."""

    diameter: tuple[str, int] | None = ("127.0.0.1", 3868)  # None: closed
    nchf: tuple[str, int] | None = ("127.0.0.1", 8081)
    api: tuple[str, int] | None = ("127.0.0.1", 8080)
    origin_host: str = "chargeflow.localdomain"
    origin_realm: str = "localdomain"
    peers: frozenset[str] | None = None  # Origin-Hosts accepted; None: any
    answer_timeout_ms: int = 3000
    prefix: str = "cf"
    extra: dict = field(default_factory=dict)  # door-specific settings (api keys, limits)


@dataclass
class Context:
    """What every door is given: the round trip to the engines, Redis (asyncio), subscriber
    look-ups, the catalog (rating groups -> services, tariffs' quotas) and the settings."""

    config: DoorConfig
    bridge: Bridge
    redis: aioredis.Redis
    identities: Identities
    catalogs: CatalogCache  # sync: refreshed at most every few seconds, a single GET


class Bridge(Protocol):
    """The round trip to the engines: ``gateway.bridge.KafkaBridge`` (over Kafka) or
    ``gateway.local.LocalBridge`` (an engine in this process). ``decide`` returns the
    decisions in order, or raises ``gateway.bridge.AnswerTimeout`` / ``Busy``."""

    async def decide(self, requests: Sequence[dict]) -> list[dict]: ...


class Door(Protocol):
    name: str

    async def start(self) -> tuple[str, int]: ...

    async def close(self) -> None: ...


#: door name -> factory(Context) -> Door; each door's package registers itself here
DOORS: dict[str, Callable[[Context], Door]] = {}


def register(name: str, factory: Callable[[Context], Door]) -> None:
    DOORS[name] = factory


async def run_doors(ctx: Context, names: list[str], stop: asyncio.Event | None = None,
                    out=sys.stdout) -> None:
    """Start the doors ``names``, announce them, serve until ``stop`` (or a signal)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    doors: list[Door] = []
    try:
        for name in names:
            door = DOORS[name](ctx)
            host, port = await door.start()
            doors.append(door)
            print(f"{name} listening on {host}:{port}", file=out, flush=True)
        await stop.wait()
        log.info("stopping: draining %s", ", ".join(d.name for d in doors))
    finally:
        for door in reversed(doors):
            try:
                await door.close()
            except Exception:  # noqa: BLE001 - close the others
                log.exception("closing the %s door failed", door.name)
