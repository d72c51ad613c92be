"""The front doors under load: Gy CCRs/s and Nchf requests/s through ``chargeflow gateway``,
next to the engine's own Kafka round trip, in one run on one machine (issue: front doors,
"Performance"). Figures are reported, never asserted.

    python -m bench.doors [--rates 1000,2000,5000] [--seconds 10] [--burst 5000] [--out DIR]
    chargeflow bench doors ...                      # the same

One embedded Redis and broker in a private data dir, the sample catalog with rating groups
(voice 100, data 200, sms 300) and ``--accounts`` subscribers with an MSISDN and an IMSI;
one engine (``chargeflow run``) and one gateway (``chargeflow gateway --kafka``, its doors
on free ports). Each phase offers SMS charging at a rate, open loop (latency from when a
request was due, not when it got out):

* ``kafka``: engine requests (one SMS ``event``) produced to ``chargeflow.requests`` and
  their decisions read back: the engine's own round trip (``bench.harness.drive``);
* ``diameter``: CCR-EVENT (DIRECT_DEBITING, one unit of rating group 300) over 4 TCP
  connections, answers matched by hop-by-hop id;
* ``nchf``: ChargingDataRequest updates (one unit used and one requested, rating group 300)
  over one HTTP/2 connection (``bench.h2client``), on contexts created before the phase,
  never two at once on the same context (an SMF's order).

Then each unthrottled (``--burst`` requests at once). The load generator runs in this
process, on the same two cores as what it measures: its own cost is in every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from balances.accounts import AccountSpec
from bench.h2client import H2Client
from bench.harness import Phase, Proc, drive, measure, run_facts, save_result, wait_ready
from flows import provision as provisioning
from flows.broker import EmbeddedBroker, ensure_topics
from flows.cli_common import sample_catalog_path
from flows.dataflow import Topics
from flows.services import Services

TS_S = 1795510800  # Tuesday 2026-11-24 10:00 Europe/Berlin
NCHF_ROOT = "/nchf-convergedcharging/v3/chargingdata"
SMS_RG = 300
#: how long a phase waits for its last answers after its last request was due; what has
#: not come by then counts as unanswered (the phase is not ``complete``)
DRAIN_S = 10.0
NTP_OFFSET = 2208988800


def catalog_text() -> str:
    return provisioning.with_rating_groups(sample_catalog_path().read_text(),
                                           {"voice": [100], "data": [200], "sms": [SMS_RG]})


def msisdn(i: int) -> str:
    return f"4917{i:08d}"


def imsi(i: int) -> str:
    return f"00101{i:010d}"


# -- Diameter ---------------------------------------------------------------------------------

class GyLoad:
    """CCR-EVENTs over ``connections`` TCP connections to the Diameter door."""

    def __init__(self, port: int, n_accounts: int, connections: int = 4):
        from diameter.message import Message, MessageHeader
        from diameter.message import constants as c
        from diameter.message.avp import Avp

        self.Message, self.MessageHeader, self.Avp, self.c = Message, MessageHeader, Avp, c
        self.port = port
        self.n_accounts = n_accounts
        self.connections = connections
        self.hbh = itertools.count(1)
        self.streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.waiting: dict[int, tuple[int, asyncio.Future]] = {}
        self.readers: list[asyncio.Task] = []
        self.results: dict[int, int] = {}

    def _avp(self, code, value):
        return self.Avp.new(code, 0, value=value)

    def _encode(self, command: int, avps: list, app: int) -> tuple[int, bytes]:
        n = next(self.hbh)
        return n, self.Message(self.MessageHeader(1, 0, 0x80, command, app, n, n),
                               avps).as_bytes()

    def _ccr(self, i: int) -> tuple[int, bytes]:
        c, a = self.c, self._avp
        ts = self.Avp.new(c.AVP_EVENT_TIMESTAMP)
        ts.payload = struct.pack("!I", TS_S + NTP_OFFSET)
        avps = [a(c.AVP_SESSION_ID, f"bench.pgw;{time.time_ns()};{i}"),
                a(c.AVP_ORIGIN_HOST, b"bench.pgw"), a(c.AVP_ORIGIN_REALM, b"bench"),
                a(c.AVP_DESTINATION_REALM, b"localdomain"), a(c.AVP_AUTH_APPLICATION_ID, 4),
                a(c.AVP_SERVICE_CONTEXT_ID, "32274@3gpp.org"), a(c.AVP_CC_REQUEST_TYPE, 4),
                a(c.AVP_CC_REQUEST_NUMBER, 0), a(c.AVP_REQUESTED_ACTION, 0),
                a(c.AVP_SUBSCRIPTION_ID, [a(c.AVP_SUBSCRIPTION_ID_TYPE, 0),
                                          a(c.AVP_SUBSCRIPTION_ID_DATA,
                                            msisdn(i % self.n_accounts))]),
                ts,
                a(c.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, [
                    a(c.AVP_REQUESTED_SERVICE_UNIT, [a(c.AVP_CC_SERVICE_SPECIFIC_UNITS, 1)]),
                    a(c.AVP_RATING_GROUP, SMS_RG)])]
        return self._encode(272, avps, 4)

    async def open(self) -> None:
        c, a = self.c, self._avp
        for k in range(self.connections):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            _, cer = self._encode(257, [a(c.AVP_ORIGIN_HOST, f"bench.pgw{k}".encode()),
                                        a(c.AVP_ORIGIN_REALM, b"bench"),
                                        a(c.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
                                        a(c.AVP_VENDOR_ID, 0),
                                        self.Avp.new(c.AVP_PRODUCT_NAME, value="bench",
                                                     is_mandatory=False),
                                        a(c.AVP_AUTH_APPLICATION_ID, 4)], 0)
            writer.write(cer)
            await writer.drain()
            await self._read_one(reader)  # the CEA
            self.streams.append((reader, writer))
            self.readers.append(asyncio.create_task(self._read(reader)))

    @staticmethod
    async def _read_one(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readexactly(4)
        return head + await reader.readexactly(int.from_bytes(head[1:4], "big") - 4)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                data = await self._read_one(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            hbh = int.from_bytes(data[12:16], "big")
            waiting = self.waiting.pop(hbh, None)
            if waiting is not None and not waiting[1].done():
                waiting[1].set_result(data)

    def result_code(self, data: bytes) -> int | None:
        msg = self.Message.from_bytes(data, plain_msg=True)
        for avp in msg.avps:
            if avp.code == self.c.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL:
                for inner in avp.value:
                    if inner.code == self.c.AVP_RESULT_CODE:
                        return inner.value
        for avp in msg.avps:
            if avp.code == self.c.AVP_RESULT_CODE:
                return avp.value
        return None

    async def one(self, i: int) -> None:
        hbh, data = self._ccr(i)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[hbh] = (i, fut)
        writer = self.streams[i % len(self.streams)][1]
        writer.write(data)
        try:
            answer = await asyncio.wait_for(fut, DRAIN_S)
        finally:
            self.waiting.pop(hbh, None)
        code = self.result_code(answer)
        self.results[code] = self.results.get(code, 0) + 1
        if code != 2001:  # 3004 too busy, or a refusal: not a charge answered
            raise RuntimeError(f"Result-Code {code}")

    async def close(self) -> None:
        for _, writer in self.streams:
            writer.close()
        for task in self.readers:
            task.cancel()


# -- Nchf -------------------------------------------------------------------------------------

def nchf_body(i: int, seq: int, units: list | None) -> dict:
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(TS_S))
    body = {"subscriberIdentifier": f"imsi-{imsi(i)}",
            "nfConsumerIdentification": {"nodeFunctionality": "SMF", "nFName":
                                         "9b1e5a6c-0000-4000-8000-00000000b001"},
            "invocationTimeStamp": ts, "invocationSequenceNumber": seq}
    if units is not None:
        body["multipleUnitUsage"] = units
    return body


def nchf_usage(seq: int) -> list:
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(TS_S))
    return [{"ratingGroup": SMS_RG, "requestedUnit": {"serviceSpecificUnits": 1},
             "usedUnitContainer": [{"localSequenceNumber": seq, "serviceSpecificUnits": 1,
                                    "triggerTimestamp": ts}]}]


class NchfLoad:
    """Updates on contexts created beforehand, one at a time per context, over one HTTP/2
    connection (``bench.h2client``: httpx's client was the bottleneck at ~150/s)."""

    def __init__(self, port: int, n_contexts: int):
        self.port = port
        self.client: H2Client | None = None
        self.n = n_contexts
        self.refs: list[str] = []
        self.seq: list[int] = []
        self.free: asyncio.Queue[int] = asyncio.Queue()
        self.results: dict[int, int] = {}

    async def open(self) -> None:
        self.client = await H2Client("127.0.0.1", self.port).open()

        async def create(i: int) -> str:
            status, headers, body = await self.client.request(
                "POST", NCHF_ROOT, orjson.dumps(nchf_body(i, 0, None)))
            if status != 201:
                raise SystemExit(f"Nchf create for context {i} answered {status}: "
                                 f"{body[:300]!r}")
            return headers["location"].rstrip("/").rsplit("/", 1)[-1]

        for start in range(0, self.n, 100):
            self.refs += await asyncio.gather(*(create(i) for i in
                                                range(start, min(self.n, start + 100))))
        self.seq = [0] * self.n
        for i in range(self.n):
            self.free.put_nowait(i)

    async def one(self, _: int) -> None:
        k = await asyncio.wait_for(self.free.get(), DRAIN_S)
        try:
            self.seq[k] += 1
            status, _, _ = await asyncio.wait_for(self.client.request(
                "POST", f"{NCHF_ROOT}/{self.refs[k]}/update",
                orjson.dumps(nchf_body(k, self.seq[k], nchf_usage(self.seq[k])))), DRAIN_S)
            self.results[status] = self.results.get(status, 0) + 1
            if status != 200:  # 503 too busy, or a refusal: not a charge answered
                raise RuntimeError(f"status {status}")
        finally:
            self.free.put_nowait(k)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


async def offer(load, system: str, rate: float, seconds: float, count: int) -> Phase:
    """Open loop: request i is due at i / rate (all at once when rate is 0)."""
    phase = Phase(system, rate, seconds)  # received: requests answered as charges
    latencies: list[tuple[float, float]] = []
    total = int(rate * seconds) if rate else count
    start = time.monotonic()
    pending: set[asyncio.Task] = set()
    failed = 0

    async def timed(i: int, due: float) -> None:
        nonlocal failed
        try:
            await load.one(i)
        except Exception:  # noqa: BLE001 - counted: a request that got no answer
            failed += 1
            return
        now = time.monotonic()
        latencies.append((now - start, (now - due) * 1000))

    for i in range(total):
        due = start + (i / rate if rate else 0.0)
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(timed(i, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
        phase.sent += 1
        if not rate and len(pending) >= 2000:  # unthrottled, with a bounded window
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if pending:
        await asyncio.wait(pending, timeout=DRAIN_S)
        for task in list(pending):
            task.cancel()
    latencies.sort()
    measure(phase, latencies, keep=4000)
    return phase


def announced(proc: subprocess.Popen, want: int, log: Path, what: str) -> dict[str, int]:
    """The ports a ``serve`` or ``gateway`` process announced on its stdout (``<door>
    listening on HOST:PORT``), once ``want`` doors did (within 60 s); else the process is
    killed and the run stops, showing the end of its log."""
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(ports) < want and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"(\w+) listening on [^:]+:(\d+)", line)
        if m:
            ports[m.group(1)] = int(m.group(2))
    if len(ports) < want:
        proc.kill()
        raise SystemExit(f"{what} did not open its doors; see {log}:\n"
                         + log.read_text()[-2000:])
    return ports


def _sms_requests(n_accounts: int):
    n = itertools.count()

    def next_request() -> tuple[str, bytes, bytes]:
        i = next(n)
        account = f"g{i % n_accounts:05d}"
        rid = f"k{time.time_ns()}-{i}"
        return rid, account.encode(), orjson.dumps(
            {"id": rid, "kind": "event", "account": account, "service": "sms",
             "ts": TS_S * 1000, "used": 1})

    return next_request


def run(rates: list[float], seconds: float, burst: int, n_accounts: int,
        out_dir: Path | None, doors: tuple[str, ...] = ("diameter", "nchf"),
        via: str = "kafka") -> dict:
    tmp = tempfile.TemporaryDirectory(prefix="cf-bench-doors-")
    data = Path(tmp.name)
    services = Services(None, data)
    procs: list[Proc] = []
    phases: list[Phase] = []
    results: dict[str, dict] = {}
    try:
        client = services.redis()
        specs = [AccountSpec(f"g{i:05d}", "PREPAID_S", 10**13, msisdn=msisdn(i),
                             imsi=imsi(i)) for i in range(n_accounts)]
        provisioning.provision(client, services.prefix, specs, catalog_text=catalog_text(),
                               source="sample catalog with rating groups")
        url = services.embedded.url
        brokers = EmbeddedBroker(data).start()
        t = Topics()
        ensure_topics(brokers, {t.requests: 1, t.decisions: 1, t.charges: 1, t.rejects: 1})
        engine = Proc(["-m", "flows.cli", "run", "--kafka", brokers,
                       "--redis", url], data / "engine.log").start()
        procs.append(engine)
        wait_ready(brokers, t.requests, t.decisions, _sms_requests(n_accounts), 1)
        gateway_log = data / "gateway.log"
        gw = subprocess.Popen(
            [sys.executable, "-m", "flows.cli",
             *(["gateway", "--kafka", brokers, "--redis", url, "--instance", "bench"]
               if via == "kafka" else ["serve", "--data-dir", str(data)]),
             *(["--diameter", "127.0.0.1:0"] if "diameter" in doors else ["--no-diameter"]),
             *(["--nchf", "127.0.0.1:0"] if "nchf" in doors else ["--no-nchf"]),
             "--no-api"],
            stdout=subprocess.PIPE, stderr=open(gateway_log, "ab"), text=True)
        ports = announced(gw, len(doors), gateway_log, "the gateway")

        async def doors_phases() -> None:
            loads = {}
            if "diameter" in ports:
                loads["diameter"] = GyLoad(ports["diameter"], n_accounts)
            if "nchf" in ports:
                loads["nchf"] = NchfLoad(ports["nchf"], min(n_accounts, 2000))
            for name, load in loads.items():
                await load.open()
                await offer(load, name, 200, 2, 0)  # warm-up
            for rate in [*rates, 0]:
                for name, load in loads.items():
                    phase = await offer(load, name, rate, seconds, burst)
                    phase.label = f"{name} {'burst' if not rate else f'{rate:g}/s'}"
                    phases.append(phase)
                    print(_line(phase), flush=True)
                    # the engine's own round trip beside each rate, as the doors see it
                if rate:
                    kafka = await asyncio.to_thread(
                        drive, brokers, t.requests, t.decisions, _sms_requests(n_accounts),
                        "kafka", rate, seconds)
                    kafka.label = f"kafka {rate:g}/s"
                    phases.append(kafka)
                    print(_line(kafka), flush=True)
            kafka = await asyncio.to_thread(drive, brokers, t.requests, t.decisions,
                                            _sms_requests(n_accounts), "kafka", 0, 0,
                                            count=burst)
            kafka.label = "kafka burst"
            phases.append(kafka)
            print(_line(kafka), flush=True)
            for name, load in loads.items():
                results[name] = {str(k): v for k, v in load.results.items()}
                await load.close()

        try:
            asyncio.run(doors_phases())
        finally:
            gw.terminate()
            try:
                gw.wait(30)
            except subprocess.TimeoutExpired:
                gw.kill()
    finally:
        for p in procs:
            p.stop()
        EmbeddedBroker(data).stop()
        services.embedded.stop()
        tmp.cleanup()
    result = {**run_facts(), "via": via, "accounts": n_accounts, "seconds": seconds,
              "answers": results, "phases": [p.summary() for p in phases]}
    if out_dir is not None:
        print(f"wrote {save_result(out_dir, 'doors', result)}")
    return result


def _line(p: Phase) -> str:
    return (f"{p.label:<22} sent {p.sent:>7,}  answered {p.received:>7,}  "
            f"{p.achieved_rps:>9,.0f}/s  p50 {p.p50_ms} ms  p99 {p.p99_ms} ms")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="chargeflow bench doors", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--rates", default="1000,2000,5000",
                    help="offered rates, requests/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per paced phase")
    ap.add_argument("--burst", type=int, default=5000, help="requests of the unthrottled phase")
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--doors", default="diameter,nchf", help="the doors to load")
    ap.add_argument("--via", choices=("kafka", "serve"), default="kafka",
                    help="kafka: chargeflow gateway --kafka (the doors' round trip through the "
                         "broker); serve: chargeflow serve, its engine in the doors' process")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    result = run(rates, args.seconds, args.burst, args.accounts, args.out,
                 tuple(d.strip() for d in args.doors.split(",") if d.strip()), args.via)
    if args.json:
        print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
