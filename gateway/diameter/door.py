"""The Diameter door: peers over TCP on asyncio (RFC 6733 §5), credit control on top.

One ``Peer`` per connection: it waits for a CER (``cer_timeout_s``), answers it (3010 and
close for an Origin-Host ``--peers`` does not list, 5010 and close for a peer without the
credit-control application), then reads messages: DWR/DWA, DPR/DPA, CCRs. Each request is
handled in a task of its own and answered when done (answers may leave in another order
than their requests came: peers correlate them by Hop-by-Hop Identifier); at most
``max_inflight`` of a connection are in flight, after which the peer is not read any
further until one is answered (TCP back-pressure, no unbounded queue). Silence for
``watchdog_s`` gets a DWR; a second silence closes the connection.

Bytes that are not Diameter (``wire.NotDiameter``) close their connection and no other.
``close()`` stops accepting, lets the requests in flight be answered, sends every peer a
DPR (REBOOTING) and closes once it answered (or after ``dpa_timeout_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from diameter.message import Message
from diameter.message.constants import (
    APP_DIAMETER_CREDIT_CONTROL_APPLICATION,
    AVP_AUTH_APPLICATION_ID,
    AVP_DISCONNECT_CAUSE,
    AVP_HOST_IP_ADDRESS,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_ORIGIN_STATE_ID,
    AVP_PRODUCT_NAME,
    AVP_RESULT_CODE,
    AVP_VENDOR_ID,
    AVP_VENDOR_SPECIFIC_APPLICATION_ID,
)

from gateway.diameter import wire
from gateway.diameter.credit import CreditControlService
from gateway.diameter.metrics import DiameterMetrics
from gateway.diameter.sessions import GySessions
from gateway.diameter.wire import AnswerError, NotDiameter

log = logging.getLogger("chargeflow.diameter")

CER, DWR, DPR, CCR = 257, 280, 282, 272
COMMANDS = {CER: "CER", DWR: "DWR", DPR: "DPR", CCR: "CCR"}
RELAY = 0xFFFFFFFF
REBOOTING = 0


class DiameterDoor:
    """``gateway.server.Door`` for Diameter Gy/Ro (CONTRACT §6.3). Its metrics go to
    ``metrics`` (default: ``DiameterMetrics`` on prometheus_client's default registry,
    which takes one door per process)."""

    name = "diameter"

    def __init__(self, ctx, *, metrics: DiameterMetrics | None = None, max_inflight: int = 256,
                 watchdog_s: float = 30.0, cer_timeout_s: float = 10.0,
                 dpa_timeout_s: float = 2.0):
        self.ctx = ctx
        self.config = ctx.config
        self.metrics = metrics or DiameterMetrics()
        self.max_inflight = max_inflight
        self.watchdog_s = watchdog_s
        self.cer_timeout_s = cer_timeout_s
        self.dpa_timeout_s = dpa_timeout_s
        self.credit = CreditControlService(ctx, GySessions(ctx.redis, ctx.config.prefix))
        self.state_id = int(time.time()) & 0xFFFFFFFF  # Origin-State-Id: this life
        self._server: asyncio.Server | None = None
        self._peers: set[Peer] = set()
        self._ids = random.getrandbits(32)

    def next_id(self) -> int:
        self._ids = (self._ids + 1) & 0xFFFFFFFF
        return self._ids

    async def start(self) -> tuple[str, int]:
        host, port = self.config.diameter
        try:
            self._server = await asyncio.start_server(self._connected, host, port)
        except OSError as exc:
            raise OSError(f"the diameter door cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from exc
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(p.disconnect() for p in list(self._peers)),
                             return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _connected(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        peer = Peer(self, reader, writer)
        self._peers.add(peer)
        try:
            await peer.run()
        finally:
            self._peers.discard(peer)

    # -- the base protocol's answers
    def base_avps(self) -> list:
        return [wire.new(AVP_ORIGIN_HOST, self.config.origin_host.encode()),
                wire.new(AVP_ORIGIN_REALM, self.config.origin_realm.encode())]


class Peer:
    def __init__(self, door: DiameterDoor, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.door = door
        self.reader = reader
        self.writer = writer
        self.origin_host: str | None = None
        self.open = False
        self.closing = False
        self.slots = asyncio.Semaphore(door.max_inflight)
        self.tasks: set[asyncio.Task] = set()
        self.dpa = asyncio.Event()
        self.address = writer.get_extra_info("peername")

    async def run(self) -> None:
        reason = "closed by peer"
        try:
            reason = await self._serve()
        except NotDiameter as exc:
            reason = "not diameter"
            log.warning("%s sent bytes that are not Diameter (%s): connection closed",
                        self.address, exc)
        except (asyncio.IncompleteReadError, ConnectionError):
            reason = "closed by peer"
        except TimeoutError:
            reason = "timeout"
        except Exception:  # noqa: BLE001 - a defect ends this connection, not the door
            reason = "error"
            log.exception("the connection of %s failed", self.origin_host or self.address)
        finally:
            if self.open:
                self.door.metrics.peers.dec()
            self.open = False
            self.door.metrics.closed.labels(reason).inc()
            await self._finish()

    async def _serve(self) -> str:
        data = await asyncio.wait_for(wire.read_message(self.reader), self.door.cer_timeout_s)
        if not self._is_request(data, CER):
            log.warning("%s did not start with a CER: connection closed", self.address)
            return "no CER"
        if not await self._capabilities(data):
            return "refused"
        waiting_dwa = False
        while True:
            try:
                head = await asyncio.wait_for(self.reader.readexactly(4),
                                              self.door.watchdog_s)
            except TimeoutError:
                if waiting_dwa or self.closing:
                    return "watchdog"
                waiting_dwa = True
                self._send(wire.request(DWR, 0, self.door.next_id(), self.door.next_id(),
                                        self.door.base_avps() + [self._state_id()]))
                continue
            waiting_dwa = False
            data = await wire.read_message(self.reader, head)
            if data[4] & wire.FLAG_REQUEST == 0:
                self._answered(data)
                if self.closing and self.dpa.is_set():
                    return "disconnected"
                continue
            await self.slots.acquire()
            task = asyncio.create_task(self._request(data, time.perf_counter()))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    def _is_request(data: bytes, command: int) -> bool:
        return bool(data[4] & wire.FLAG_REQUEST) and int.from_bytes(data[5:8], "big") == command

    def _answered(self, data: bytes) -> None:
        command = int.from_bytes(data[5:8], "big")
        if command == DPR:
            self.dpa.set()

    def _send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def _state_id(self):
        return wire.new(AVP_ORIGIN_STATE_ID, self.door.state_id)

    # -- capabilities exchange
    async def _capabilities(self, data: bytes) -> bool:
        metrics = self.door.metrics
        metrics.requests.labels("CER").inc()
        try:
            msg = wire.decode(data)
            wire.unsupported_mandatory(msg.avps)
            host = _one_text(msg, AVP_ORIGIN_HOST)
            _one_text(msg, AVP_ORIGIN_REALM)
        except AnswerError as err:
            self._send(self._cea(wire.decode_header(data), err.code, err))
            metrics.answers.labels("CER", str(err.code)).inc()
            await self.writer.drain()
            return False
        code = wire.SUCCESS
        peers = self.door.config.peers
        if peers is not None and host not in peers:
            code = wire.UNKNOWN_PEER
            log.warning("CER from %s (%s), not a listed peer: 3010, connection closed", host,
                        self.address)
        elif not _has_credit_control(msg):
            code = wire.NO_COMMON_APPLICATION
            log.warning("CER from %s without the credit-control application (4): 5010", host)
        if code == wire.SUCCESS:  # open before the CEA leaves: the peer may ask at once
            self.origin_host = host
            self.open = True
            metrics.peers.inc()
            log.info("peer %s connected from %s", host, self.address)
        self._send(self._cea(msg.header, code))
        metrics.answers.labels("CER", str(code)).inc()
        await self.writer.drain()
        return code == wire.SUCCESS

    def _cea(self, header, code: int, err: AnswerError | None = None) -> bytes:
        host = self.writer.get_extra_info("sockname")[0]
        avps = [wire.new(AVP_RESULT_CODE, code), *self.door.base_avps(),
                wire.new(AVP_HOST_IP_ADDRESS, host), wire.new(AVP_VENDOR_ID, 0),
                wire.new(AVP_PRODUCT_NAME, "chargeflow", mandatory=False), self._state_id(),
                wire.new(AVP_AUTH_APPLICATION_ID, APP_DIAMETER_CREDIT_CONTROL_APPLICATION)]
        if err is not None:
            avps.append(wire.new(wire.AVP_ERROR_MESSAGE, err.reason[:200]))
            if err.failed:
                avps.append(wire.failed_avp(err.failed))
        return wire.answer(header, avps, error=3000 <= code < 4000)

    # -- requests
    async def _request(self, data: bytes, started: float) -> None:
        metrics = self.door.metrics
        command = "?"
        try:
            header = wire.decode_header(data)
            command = COMMANDS.get(header.command_code, str(header.command_code))
            reply, command, code = await self._answer(header, data)
            metrics.requests.labels(command).inc()
            metrics.answers.labels(command, str(code)).inc()
            metrics.latency.labels(command).observe(time.perf_counter() - started)
            self._send(reply)
            await self.writer.drain()
            if command == "DPR":
                self.closing = True
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - one request's defect: 5012, the peer stays up
            log.exception("answering a %s failed", command)
            with contextlib.suppress(Exception):
                err = AnswerError(wire.UNABLE_TO_COMPLY, "internal error")
                self._send(wire.error_answer(wire.decode_header(data), err,
                                             self.door.config.origin_host,
                                             self.door.config.origin_realm))
        finally:
            self.slots.release()

    async def _answer(self, header, data: bytes) -> tuple[bytes, str, int]:
        cfg = self.door.config
        code = header.command_code
        name = COMMANDS.get(code, str(code))
        try:
            if header.command_flags & wire.FLAG_ERROR:
                raise AnswerError(wire.INVALID_HDR_BITS, "a request with the E bit")
            if code == CCR:
                if header.application_id != APP_DIAMETER_CREDIT_CONTROL_APPLICATION:
                    raise AnswerError(wire.APPLICATION_UNSUPPORTED, "application "
                                      f"{header.application_id} is not supported here")
                msg = wire.decode(data)
                return await self.door.credit.answer(msg)
            msg = wire.decode(data)
            wire.unsupported_mandatory(msg.avps)
            if code == DWR:
                return (wire.answer(header, [wire.new(AVP_RESULT_CODE, wire.SUCCESS),
                                             *self.door.base_avps(), self._state_id()]),
                        name, wire.SUCCESS)
            if code == DPR:
                log.info("peer %s disconnects", self.origin_host)
                return (wire.answer(header, [wire.new(AVP_RESULT_CODE, wire.SUCCESS),
                                             *self.door.base_avps()]), name, wire.SUCCESS)
            if code == CER:  # again on an open connection
                return self._cea(header, wire.SUCCESS), name, wire.SUCCESS
            raise AnswerError(wire.COMMAND_UNSUPPORTED, f"command {code} is not supported")
        except AnswerError as err:
            return (wire.error_answer(header, err, cfg.origin_host, cfg.origin_realm),
                    name, err.code)

    # -- the end
    async def disconnect(self) -> None:
        """Drain, send DPR, close when it is answered (or after ``dpa_timeout_s``)."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=self.door.ctx.config.answer_timeout_ms
                               / 1000 + 1)
        if self.open and not self.writer.is_closing():
            self.closing = True
            self._send(wire.request(DPR, 0, self.door.next_id(), self.door.next_id(),
                                    self.door.base_avps() + [
                                        wire.new(AVP_DISCONNECT_CAUSE, REBOOTING)]))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.dpa.wait(), self.door.dpa_timeout_s)
        self.writer.close()

    async def _finish(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def _one_text(msg: Message, code: int) -> str:
    found = [a for a in msg.avps if a.code == code and not a.vendor_id]
    if not found:
        raise AnswerError(wire.MISSING_AVP, f"AVP {code} is missing", [wire.placeholder(code)])
    try:
        return found[0].payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnswerError(wire.INVALID_AVP_VALUE, "not UTF-8", [found[0]]) from exc


def _has_credit_control(msg: Message) -> bool:
    apps = []
    for avp in msg.avps:
        if avp.code == AVP_AUTH_APPLICATION_ID and len(avp.payload) == 4:
            apps.append(int.from_bytes(avp.payload, "big"))
        elif avp.code == AVP_VENDOR_SPECIFIC_APPLICATION_ID:
            with contextlib.suppress(AnswerError):
                apps += [int.from_bytes(a.payload, "big") for a in wire.children(avp)
                         if a.code == AVP_AUTH_APPLICATION_ID and len(a.payload) == 4]
    return APP_DIAMETER_CREDIT_CONTROL_APPLICATION in apps or RELAY in apps
