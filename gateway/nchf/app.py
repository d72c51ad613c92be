"""The Nchf_ConvergedCharging HTTP surface (TS 32.291 API v3, CONTRACT §6.4), a plain ASGI
application (three routes do not need a framework):

    POST /nchf-convergedcharging/v3/chargingdata               201, Location …/{ref}
    POST /nchf-convergedcharging/v3/chargingdata/{ref}/update  200
    POST /nchf-convergedcharging/v3/chargingdata/{ref}/release 204
    GET  /metrics                                              Prometheus text

Every failure is ``application/problem+json`` (ProblemDetails): 400 for a body that is not
JSON or does not validate against the 3GPP schema, 404 for an unknown subscriber, ref or
path, 405 for another method, 413 for a body over ``max_body_bytes`` (what is over is
read and dropped, never kept), 503 with Retry-After
when the engines do not answer in time or Redis is down, 500 for a defect (logged).
"""

from __future__ import annotations

import logging
import re
import time

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

from charging.errors import StoreError
from gateway.nchf.schemas import NchfSchemas, SchemaProblem
from gateway.nchf.service import NchfService, Problem

log = logging.getLogger("chargeflow.nchf")

ROOT = "/nchf-convergedcharging/v3/chargingdata"
_REF_PATH = re.compile(re.escape(ROOT) + r"/([^/]{1,64})/(update|release)")
MAX_BODY_BYTES = 128 * 1024
DRAIN_BYTES = 64 * 1024 * 1024  # a body read and dropped before a 413, at most
_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class NchfMetrics:
    """requests and answers by operation and status, latency by operation, and the
    resultCode of every multipleUnitInformation."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.registry = registry
        self.requests = Counter("chargeflow_nchf_requests", "Nchf requests by operation",
                                ["op"], registry=registry)
        self.answers = Counter("chargeflow_nchf_answers",
                               "Nchf answers by operation and HTTP status", ["op", "status"],
                               registry=registry)
        self.latency = Histogram("chargeflow_nchf_latency_seconds",
                                 "From an Nchf request's arrival to its answer", ["op"],
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.units = Counter("chargeflow_nchf_unit_results",
                             "multipleUnitInformation answered, by resultCode", ["result"],
                             registry=registry)


class NchfApp:
    """The ASGI application over an ``NchfService``."""

    def __init__(self, service: NchfService, schemas: NchfSchemas, metrics: NchfMetrics,
                 max_body_bytes: int = MAX_BODY_BYTES):
        self.service = service
        self.schemas = schemas
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        service.on_unit = lambda code: metrics.units.labels(code).inc()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/metrics" and method == "GET":
            await _send(send, 200, generate_latest(self.metrics.registry),
                        "text/plain; version=0.0.4")
            return
        op, ref = _route(path)
        started = time.perf_counter()
        self.metrics.requests.labels(op).inc()
        try:
            raw = await self._read(scope, receive)
            if op == "other":
                raise Problem(404, "Not Found", f"no resource {_cut(path)} (the API root is "
                              f"{ROOT})", "RESOURCE_URI_STRUCTURE_NOT_FOUND")
            if method != "POST":
                raise Problem(405, "Method Not Allowed", f"{method} is not allowed on "
                              f"{_cut(path)}; use POST")
            body = self._parse(raw)
            status, headers, doc = await self._handle(op, ref, body, scope)
        except Problem as problem:
            status, doc = problem.status, problem.body()
            headers = [(b"allow", b"POST")] if status == 405 else []
            if problem.retry_after_s is not None:
                headers.append((b"retry-after", str(problem.retry_after_s).encode()))
            level = logging.WARNING if status >= 500 else logging.INFO
            log.log(level, "nchf %s %s: %d %s", op, ref or "-", status, problem.detail,
                    extra={"ref": ref, "op": op, "status": status})
        except StoreError as exc:
            status, doc = 503, Problem(503, "Service Unavailable", str(exc),
                                       "NF_CONGESTION").body()
            headers = [(b"retry-after", b"1")]
            log.warning("nchf %s %s: Redis: %s", op, ref or "-", exc,
                        extra={"ref": ref, "op": op, "status": status})
        except Exception:  # noqa: BLE001 - a defect answers 500, never drops the stream
            log.exception("nchf %s %s failed", op, ref or "-", extra={"ref": ref, "op": op})
            status, doc = 500, Problem(500, "Internal Server Error", "an internal error; it "
                                       "is logged", "SYSTEM_FAILURE").body()
            headers = []
        self.metrics.answers.labels(op, str(status)).inc()
        self.metrics.latency.labels(op).observe(time.perf_counter() - started)
        if status == 204:
            await _send(send, 204, b"", None, headers)
        else:
            kind = "application/json" if status < 300 else "application/problem+json"
            await _send(send, status, orjson.dumps(doc), kind, headers)

    async def _handle(self, op: str, ref: str | None, body: dict, scope) -> tuple:
        if op == "create":
            answer = await self.service.create(body)
            location = f"{_origin(scope)}{ROOT}/{answer.ref}".encode()
            log.debug("nchf create %s%s", answer.ref, " (replay)" if answer.replay else "",
                      extra={"ref": answer.ref, "op": op})
            return 201, [(b"location", location)], answer.body
        if op == "update":
            answer = await self.service.update(ref, body)
        else:
            answer = await self.service.release(ref, body)
        log.debug("nchf %s %s%s", op, ref, " (replay)" if answer.replay else "",
                  extra={"ref": ref, "op": op})
        return (204 if op == "release" else 200), [], answer.body

    async def _read(self, scope, receive) -> bytes:
        """The body, or a 413 ``Problem`` once it is over the limit. What is over is read
        and dropped (up to ``DRAIN_BYTES``) before the answer goes: hypercorn 0.18's HTTP/2
        protocol fails the whole connection, every stream of the SMF on it, when DATA
        comes for a stream already answered."""
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"),
                        None)
        if declared is not None and not declared.isdigit():
            raise Problem(400, "Bad Request", "Content-Length is not a number",
                          "INVALID_MSG_FORMAT")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Problem(400, "Bad Request", "the client went away", "INVALID_MSG_FORMAT")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_body_bytes:
                chunks.append(chunk)
            else:
                chunks.clear()
            if not message.get("more_body", False) or size > DRAIN_BYTES:
                break
        if size > self.max_body_bytes or (declared and int(declared) > self.max_body_bytes):
            raise _too_large(max(size, int(declared or 0)), self.max_body_bytes)
        return b"".join(chunks)

    def _parse(self, raw: bytes) -> dict:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, "Bad Request", f"the body is not JSON: {exc}",
                          "INVALID_MSG_FORMAT") from None
        try:
            self.schemas.check(body)
        except SchemaProblem as exc:
            cause = ("MANDATORY_IE_MISSING" if "is a required property" in exc.detail
                     else "MANDATORY_IE_INCORRECT")
            raise Problem(400, "Bad Request", f"the body is not a ChargingDataRequest (TS "
                          f"32.291): {exc}", cause,
                          [{"param": exc.where, "reason": exc.detail}]) from None
        return body


def _route(path: str) -> tuple[str, str | None]:
    if path == ROOT:
        return "create", None
    m = _REF_PATH.fullmatch(path)
    if m:
        return m.group(2), m.group(1)
    return "other", None


def _origin(scope) -> str:
    host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"),
                None)
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}"


def _too_large(size: int, limit: int) -> Problem:
    return Problem(413, "Payload Too Large", f"the body is {size} bytes or more; the limit is "
                   f"{limit}", "PAYLOAD_TOO_LARGE")


def _cut(text: str) -> str:
    return text if len(text) <= 100 else text[:100] + "…"


async def _send(send, status: int, body: bytes, content_type: str | None,
                headers: list | None = None) -> None:
    out = list(headers or [])
    if content_type:
        out.append((b"content-type", content_type.encode()))
    if status != 204:
        out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
