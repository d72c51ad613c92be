"""A Diameter door over a real Redis and an in-process engine (LocalBridge), on an asyncio
loop of its own thread, and a small blocking Gy client built on python-diameter's codec for
the tests that send bytes by hand (malformed input, retransmissions)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import threading
from dataclasses import dataclass
from functools import partial

import orjson
import redis.asyncio as aioredis
from diameter.message import Message, MessageHeader
from diameter.message.avp import Avp
from diameter.message.constants import (
    AVP_AUTH_APPLICATION_ID,
    AVP_CC_REQUEST_NUMBER,
    AVP_CC_REQUEST_TYPE,
    AVP_CC_SERVICE_SPECIFIC_UNITS,
    AVP_CC_TIME,
    AVP_CC_TOTAL_OCTETS,
    AVP_DESTINATION_REALM,
    AVP_EVENT_TIMESTAMP,
    AVP_FAILED_AVP,
    AVP_FINAL_UNIT_INDICATION,
    AVP_GRANTED_SERVICE_UNIT,
    AVP_HOST_IP_ADDRESS,
    AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_PRODUCT_NAME,
    AVP_RATING_GROUP,
    AVP_REQUESTED_ACTION,
    AVP_REQUESTED_SERVICE_UNIT,
    AVP_RESULT_CODE,
    AVP_SERVICE_CONTEXT_ID,
    AVP_SESSION_ID,
    AVP_SUBSCRIPTION_ID,
    AVP_SUBSCRIPTION_ID_DATA,
    AVP_SUBSCRIPTION_ID_TYPE,
    AVP_USED_SERVICE_UNIT,
    AVP_VALIDITY_TIME,
    AVP_VENDOR_ID,
)
from prometheus_client import CollectorRegistry

from balances.accounts import parse_accounts
from balances.store import BalanceStore
from catalog_cache.store import CatalogCache, load_catalog_text
from flows.provision import with_rating_groups
from flows.runtime import EngineConfig, make_engine
from gateway.diameter import DiameterDoor
from gateway.diameter.metrics import DiameterMetrics
from gateway.identities import Identities
from gateway.local import LocalBridge
from gateway.server import Context, DoorConfig
from tests.conftest import REDIS_URL, SAMPLE_TEXT

#: the sample catalog with rating groups: voice 100, data 200 and 201, sms 300
CATALOG = with_rating_groups(SAMPLE_TEXT, {"voice": [100], "data": [200, 201], "sms": [300]})
CATALOG += """\
  VOICE_ONLY:
    tariffs: {voice: VOICE_STD}
"""
assert CATALOG.count("rating_groups") == 3
VOICE, DATA, SMS, NO_SERVICE = 100, 200, 300, 999

ACCOUNTS = [
    {"id": "alice", "plan": "PREPAID_S", "balance": "10.00", "msisdn": "491700000001",
     "imsi": "262010000000001"},
    {"id": "bob", "plan": "PREPAID_S", "balance": "5.00", "status": "blocked",
     "msisdn": "491700000002"},
    {"id": "carol", "plan": "PREPAID_S", "balance": "0.50", "msisdn": "491700000003"},
    {"id": "dave", "plan": "PREPAID_S", "balance": "3.00", "msisdn": "491700000004"},
    {"id": "erin", "plan": "VOICE_ONLY", "balance": "2.00", "msisdn": "491700000005"},
]
ORIGIN_HOST, ORIGIN_REALM = "ocs.chargeflow.test", "chargeflow.test"
#: Tuesday 2026-11-24 10:00 Europe/Berlin (peak) in epoch seconds
TUE_PEAK_S = 1795510800


def prepare(client, prefix: str, accounts=ACCOUNTS):
    catalog = load_catalog_text(client, CATALOG, prefix=prefix)
    text = "\n".join(orjson.dumps(a).decode() for a in accounts)
    BalanceStore(client, prefix=prefix).upsert_accounts(parse_accounts(text, catalog))
    return catalog


class GyServer:
    """The door on 127.0.0.1 (a free port) with an in-process engine over ``prefix``."""

    def __init__(self, redis_client, prefix: str, *, peers: frozenset[str] | None = None,
                 timeout_s: float = 30.0, max_inflight: int = 256, make=None,
                 watchdog_s: float = 30.0):
        self.prefix = prefix
        self.config = DoorConfig(diameter=("127.0.0.1", 0), origin_host=ORIGIN_HOST,
                                 origin_realm=ORIGIN_REALM, peers=peers,
                                 answer_timeout_ms=int(timeout_s * 1000), prefix=prefix)
        self.bridge = LocalBridge(make or partial(make_engine, EngineConfig(
            redis_url=REDIS_URL, prefix=prefix)), timeout_s=timeout_s)
        self.registry = CollectorRegistry()
        self.max_inflight = max_inflight
        self.watchdog_s = watchdog_s
        self.sync = redis_client
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.door: DiameterDoor | None = None
        self.port = 0

    def start(self) -> GyServer:
        self.bridge.start()
        self.thread.start()
        self.port = self.call(self._start())[1]
        return self

    async def _start(self):
        self.client = aioredis.Redis.from_url(REDIS_URL)
        ctx = Context(self.config, self.bridge, self.client, Identities(self.client,
                                                                        self.prefix),
                      CatalogCache(self.sync, prefix=self.prefix, check_interval_s=0.5))
        self.door = DiameterDoor(ctx, metrics=DiameterMetrics(self.registry),
                                 max_inflight=self.max_inflight, dpa_timeout_s=0.3,
                                 watchdog_s=self.watchdog_s)
        return await self.door.start()

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.door.close())
            self.call(self.client.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.bridge.close()

    def metric(self, name: str, **labels) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


# -- a blocking client -----------------------------------------------------------------------

def avp(code: int, value, vendor: int = 0) -> Avp:
    return Avp.new(code, vendor, value=value)


def units(seconds: int | None = None, octets: int | None = None,
          events: int | None = None) -> list[Avp]:
    out = []
    if seconds is not None:
        out.append(avp(AVP_CC_TIME, seconds))
    if octets is not None:
        out.append(avp(AVP_CC_TOTAL_OCTETS, octets))
    if events is not None:
        out.append(avp(AVP_CC_SERVICE_SPECIFIC_UNITS, events))
    return out


def mscc(rg: int | None, requested: list[Avp] | None = None,
         used: list[Avp] | None = None) -> Avp:
    inner = []
    if requested is not None:
        inner.append(avp(AVP_REQUESTED_SERVICE_UNIT, requested))
    if used is not None:
        inner.append(avp(AVP_USED_SERVICE_UNIT, used))
    if rg is not None:
        inner.append(avp(AVP_RATING_GROUP, rg))
    return avp(AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, inner)


def ntp(epoch_s: int) -> Avp:
    a = Avp.new(AVP_EVENT_TIMESTAMP)
    a.payload = struct.pack("!I", epoch_s + 2208988800)
    return a


def ccr_avps(session: str, rtype: int, number: int, services: list[Avp], *,
             msisdn: str | None = "491700000001", action: int | None = None,
             ts: int | None = TUE_PEAK_S, host: str = "pgw.test") -> list[Avp]:
    avps = [avp(AVP_SESSION_ID, session), avp(AVP_ORIGIN_HOST, host.encode()),
            avp(AVP_ORIGIN_REALM, b"test"), avp(AVP_DESTINATION_REALM, ORIGIN_REALM.encode()),
            avp(AVP_AUTH_APPLICATION_ID, 4), avp(AVP_SERVICE_CONTEXT_ID, "32251@3gpp.org"),
            avp(AVP_CC_REQUEST_TYPE, rtype), avp(AVP_CC_REQUEST_NUMBER, number)]
    if msisdn is not None:
        avps.append(avp(AVP_SUBSCRIPTION_ID, [avp(AVP_SUBSCRIPTION_ID_TYPE, 0),
                                              avp(AVP_SUBSCRIPTION_ID_DATA, msisdn)]))
    if action is not None:
        avps.append(avp(AVP_REQUESTED_ACTION, action))
    if ts is not None:
        avps.append(ntp(ts))
    return avps + services


_hbh = itertools.count(1000)


def encode(command: int, avps: list[Avp], *, app: int = 4, flags: int = 0x80,
           hbh: int | None = None) -> bytes:
    n = next(_hbh) if hbh is None else hbh
    return Message(MessageHeader(1, 0, flags, command, app, n, n), avps).as_bytes()


@dataclass
class Answer:
    header: MessageHeader
    avps: list[Avp]
    raw: bytes

    def first(self, code: int):
        for a in self.avps:
            if a.code == code:
                return a
        return None

    @property
    def result(self) -> int | None:
        a = self.first(AVP_RESULT_CODE)
        return a.value if a is not None else None

    @property
    def failed(self) -> list[Avp]:
        a = self.first(AVP_FAILED_AVP)
        return a.value if a is not None else []

    def services(self) -> dict[int, dict]:
        """rating group -> {result, granted, validity, final}"""
        out = {}
        for m in self.avps:
            if m.code != AVP_MULTIPLE_SERVICES_CREDIT_CONTROL:
                continue
            d = {"result": None, "granted": None, "validity": None, "final": False}
            rg = None
            for a in m.value:
                if a.code == AVP_RATING_GROUP:
                    rg = a.value
                elif a.code == AVP_RESULT_CODE:
                    d["result"] = a.value
                elif a.code == AVP_VALIDITY_TIME:
                    d["validity"] = a.value
                elif a.code == AVP_FINAL_UNIT_INDICATION:
                    d["final"] = True
                elif a.code == AVP_GRANTED_SERVICE_UNIT:
                    d["granted"] = sum(u.value for u in a.value)
            out[rg] = d
        return out


class GyClient:
    def __init__(self, port: int, host: str = "pgw.test", timeout: float = 20):
        self.host = host
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> Answer:
        head = self._exactly(4)
        length = int.from_bytes(head[1:4], "big")
        data = head + self._exactly(length - 4)
        msg = Message.from_bytes(data, plain_msg=True)
        return Answer(msg.header, msg.avps, data)

    def closed(self) -> bool:
        """True once the server closed the connection (EOF, nothing more was sent)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the server")
            buf += chunk
        return buf

    def cer(self, host: str | None = None) -> Answer:
        self.send(encode(257, [avp(AVP_ORIGIN_HOST, (host or self.host).encode()),
                               avp(AVP_ORIGIN_REALM, b"test"),
                               avp(AVP_HOST_IP_ADDRESS, "127.0.0.1"), avp(AVP_VENDOR_ID, 0),
                               Avp.new(AVP_PRODUCT_NAME, value="test", is_mandatory=False),
                               avp(AVP_AUTH_APPLICATION_ID, 4)], app=0))
        return self.recv()

    def request(self, avps: list[Avp], command: int = 272, **kw) -> Answer:
        self.send(encode(command, avps, **kw))
        return self.recv()
