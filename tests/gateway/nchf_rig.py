"""A running Nchf door for the tests: two door instances (two ports) over one real Redis
and one in-process engine (gateway.local.LocalBridge), on an asyncio loop of their own
thread, so the tests talk to them over real sockets with independent clients (httpx over
HTTP/2 with prior knowledge, curl, schemathesis)."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from dataclasses import dataclass, field
from functools import partial

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from balances.accounts import parse_accounts
from balances.store import BalanceStore
from catalog_cache.store import CatalogCache, load_catalog_text
from flows.provision import with_rating_groups
from flows.runtime import EngineConfig, make_engine
from gateway.identities import Identities
from gateway.local import LocalBridge
from gateway.nchf import make_door
from gateway.nchf.app import NchfMetrics
from gateway.nchf.schemas import NchfSchemas
from gateway.server import Context, DoorConfig
from tests.conftest import REDIS_URL, SAMPLE_TEXT

ROOT = "/nchf-convergedcharging/v3/chargingdata"
TS = "2026-11-24T10:00:00+01:00"  # a Tuesday, in the peak band
#: rating groups: voice 100, data 10 and 20, sms 30; rating group 99 names no service
CATALOG = (with_rating_groups(SAMPLE_TEXT, {"voice": [100], "data": [10, 20], "sms": [30]})
           + """\
  FLAT:
    tariffs: {voice: VOICE_STD, data: DATA_STD, sms: SMS_STD}
  VOICE_ONLY:
    tariffs: {voice: VOICE_STD}
""")
ACCOUNTS = [
    {"id": "nina", "plan": "FLAT", "balance": "100.00", "imsi": "001010000000001"},
    {"id": "otto", "plan": "FLAT", "balance": "100.00", "msisdn": "4917000000002"},
    {"id": "dora", "plan": "FLAT", "balance": "0.30", "imsi": "001010000000003"},
    {"id": "vera", "plan": "VOICE_ONLY", "balance": "5.00", "imsi": "001010000000004"},
    {"id": "rita", "plan": "FLAT", "balance": "50.00", "imsi": "001010000000005"},
    {"id": "fuzz", "plan": "FLAT", "balance": "1000.00", "imsi": "001010000000009"},
]


@dataclass
class Doors:
    urls: list[str]
    prefix: str
    store: BalanceStore
    bridge: LocalBridge
    metrics: list[NchfMetrics] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.urls[0]


def request(seq: int = 0, *, imsi: str | None = None, units: list | None = None,
            **extra) -> dict:
    """A ChargingDataRequest shaped as free5GC's SMF sends it."""
    body = {
        "subscriberIdentifier": f"imsi-{imsi}" if imsi else None,
        "nfConsumerIdentification": {"nodeFunctionality": "SMF", "nFName":
                                     "9b1e5a6c-0000-4000-8000-000000000001",
                                     "nFIPv4Address": "127.0.0.2"},
        "invocationTimeStamp": TS,
        "invocationSequenceNumber": seq,
        "notifyUri": "http://127.0.0.2:8000/nsmf-callback/notify_x",
        "pDUSessionChargingInformation": {
            "chargingId": 1,
            "userInformation": {"servedGPSI": "msisdn-0000000000",
                                "servedPEI": "imeisv-1110000000000000"},
            "pduSessionInformation": {"pduSessionID": 1, "dnnId": "internet",
                                      "networkSlicingInfo": {"sNSSAI": {"sst": 1}},
                                      "pduType": "IPV4",
                                      "servingNetworkFunctionID": {
                                          "servingNetworkFunctionInformation": {
                                              "nodeFunctionality": "AMF"}}}},
    }
    if body["subscriberIdentifier"] is None:
        del body["subscriberIdentifier"]
    if units is not None:
        body["multipleUnitUsage"] = units
    body.update(extra)
    return body


def usage(rg: int, *, requested: dict | None = None, **used) -> dict:
    """One multipleUnitUsage: ``used`` fields in one usedUnitContainer (none if empty)."""
    item: dict = {"ratingGroup": rg, "uPFID": "9b1e5a6c-0000-4000-8000-0000000000aa"}
    if requested is not None:
        item["requestedUnit"] = requested
    if used:
        item["usedUnitContainer"] = [{"localSequenceNumber": 1, "quotaManagementIndicator":
                                      "ONLINE_CHARGING", "triggerTimestamp": TS, **used}]
    return item


class SlowEngine:
    """The real engine, taking ``delay_s`` longer over every batch (a loaded engine)."""

    def __init__(self, engine, delay_s: float):
        self.engine = engine
        self.delay_s = delay_s

    def process(self, payloads, entered):
        time.sleep(self.delay_s)
        return self.engine.process(payloads, entered)

    def idle(self):
        self.engine.idle()


@functools.cache
def shared_schemas() -> NchfSchemas:
    """The 3GPP schemas, built once for all the tests' doors (about 2 s)."""
    return NchfSchemas()


def start_doors(redis_client, prefix: str, n: int = 2, *, timeout_s: float = 20,
                engine_delay_s: float = 0.0, door_redis_url: str = REDIS_URL):
    """Load the catalog and accounts under ``prefix``, start ``n`` doors; returns
    (Doors, stop)."""
    catalog = load_catalog_text(redis_client, CATALOG, prefix=prefix)
    store = BalanceStore(redis_client, prefix=prefix)
    store.upsert_accounts(parse_accounts("\n".join(orjson.dumps(a).decode()
                                                   for a in ACCOUNTS), catalog))
    engine = partial(make_engine, EngineConfig(redis_url=REDIS_URL, prefix=prefix))
    if engine_delay_s:
        engine = partial(lambda make: SlowEngine(make(), engine_delay_s), engine)
    bridge = LocalBridge(engine, timeout_s=timeout_s)
    bridge.start()
    ready = threading.Event()
    state: dict = {}

    def run():
        async def main():
            client = aioredis.Redis.from_url(door_redis_url, socket_connect_timeout=2)
            config = DoorConfig(nchf=("127.0.0.1", 0), prefix=prefix)
            ctx = Context(config, bridge, client, Identities(client, prefix),
                          CatalogCache(redis_client, prefix=prefix, check_interval_s=2.0))
            doors = [make_door(ctx, NchfMetrics(CollectorRegistry()), shared_schemas())
                     for _ in range(n)]
            state["urls"] = [f"http://127.0.0.1:{(await d.start())[1]}" for d in doors]
            state["metrics"] = [d.app.metrics for d in doors]
            state["stop"] = stop = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()
            for d in doors:
                await d.close()
            await client.aclose()

        try:
            asyncio.run(main())
        finally:
            ready.set()

    thread = threading.Thread(target=run, daemon=True, name="nchf-doors")
    thread.start()
    assert ready.wait(30) and "urls" in state, "the Nchf doors did not start"

    def stop():
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(15)
        bridge.close()

    return Doors(state["urls"], prefix, store, bridge, state["metrics"]), stop
