"""Fixtures for the account API: the real application on a real socket (gateway.http.AsgiDoor,
hypercorn, on a port of its own) against the shared Redis under a private prefix.

* ``make_api(accounts=ACCOUNTS, **settings)`` loads the sample catalog and ``accounts``,
  creates one key per role (plus a revoked one), starts the API and returns an ``ApiEnv``;
  everything is stopped and deleted after the test (or the module, for ``module_api``).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from api.app import ApiSettings, create_app
from api.keys import KeyStore
from balances.accounts import parse_accounts
from balances.store import BalanceStore
from catalog_cache.store import CatalogCache, load_catalog_text
from gateway.http import AsgiDoor, GranianDoor
from tests.conftest import SAMPLE_TEXT, delete_prefix

ACCOUNTS = [
    {"id": "alice", "plan": "PREPAID_S", "balance": "100.00"},
    {"id": "bob", "plan": "PREPAID_S", "balance": "100.00"},
]


class Server:
    """An ASGI app served by AsgiDoor on 127.0.0.1 (a free port) from a thread's own loop."""

    def __init__(self, app, door=AsgiDoor):
        self.app = app
        self.door = door
        self.address: tuple[str, int] | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        door = self.door("api", self.app, ("127.0.0.1", 0), graceful_s=1.0)
        try:
            self.address = await door.start()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await door.close()

    def start(self) -> str:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None or self.address is None:
            raise RuntimeError(f"the API did not start: {self._error}")
        return f"http://127.0.0.1:{self.address[1]}"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@dataclass
class ApiEnv:
    client: object  # redis.Redis
    prefix: str
    url: str
    store: BalanceStore
    keys: dict[str, str] = field(default_factory=dict)  # role (and "revoked") -> key
    ids: dict[str, str] = field(default_factory=dict)  # role -> key id

    def http(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=20, **kw)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def snapshot(self) -> dict[bytes, bytes]:
        """Every key under the prefix and its content (DUMP), except the rate buckets,
        which every authenticated request moves."""
        out = {}
        for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
            if b":api:bucket:" not in key:
                out[key] = self.client.dump(key)
        return out

    def balance(self, account: str) -> int:
        return self.store.view(account).balance


def build(client, prefix: str, accounts: list[dict], door=AsgiDoor, **settings
          ) -> tuple[ApiEnv, Server]:
    catalog = load_catalog_text(client, SAMPLE_TEXT, prefix=prefix)
    store = BalanceStore(client, prefix=prefix)
    if accounts:
        text = "\n".join(orjson.dumps(a).decode() for a in accounts)
        store.upsert_accounts(parse_accounts(text, catalog))
    settings.setdefault("rate_per_s", 1000.0)
    settings.setdefault("burst", 1000)
    app = create_app(client, CatalogCache(client, prefix=prefix, check_interval_s=0.5),
                     ApiSettings(prefix=prefix, **settings))
    server = Server(app, door)
    env = ApiEnv(client, prefix, server.start(), store)
    ks = KeyStore(client, prefix)
    for role, account in (("admin", None), ("agent", None), ("selfcare", "alice")):
        record, key = ks.create(role, account, name=f"test {role}")
        env.keys[role], env.ids[role] = key, record.id
    record, key = ks.create("admin", name="revoked")
    ks.revoke(record.id)
    env.keys["revoked"] = key
    return env, server


@pytest.fixture
def make_api(redis_client, prefix) -> Iterator[Callable[..., ApiEnv]]:
    servers: list[Server] = []

    def make(accounts: list[dict] = ACCOUNTS, door=AsgiDoor, **settings) -> ApiEnv:
        env, server = build(redis_client, f"{prefix}:{len(servers)}", accounts, door,
                            **settings)
        servers.append(server)
        return env

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="module", params=[AsgiDoor, GranianDoor], ids=["hypercorn", "granian"])
def module_api(redis_client, request) -> Iterator[ApiEnv]:
    """The API on each of its servers (``--api-server``), for the whole module."""
    p = f"t{uuid.uuid4().hex[:12]}"
    env, server = build(redis_client, p, ACCOUNTS, request.param)
    yield env
    server.stop()
    delete_prefix(redis_client, p)
