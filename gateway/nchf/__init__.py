"""The Nchf_ConvergedCharging front door (TS 32.291 API v3; CONTRACT §6.1, §6.2, §6.4,
§6.5), on ``gateway.http.AsgiDoor``: HTTP/2 cleartext with prior knowledge and HTTP/1.1 on
one port (``--nchf HOST:PORT``).

    schemas.py   the 3GPP OpenAPI files as a jsonschema registry; bodies validated
    units.py     Nchf units <-> chargeflow units, decisions -> multipleUnitInformation (pure)
    context.py   the ChargingDataRef contexts in Redis (any instance serves any message)
    service.py   messages -> chargeflow requests -> the engine -> answers
    app.py       the ASGI application: routes, ProblemDetails, metrics, logs

Settings in ``DoorConfig.extra``: ``nchf_schemas`` (the directory of the 3GPP files; else
``$CHARGEFLOW_3GPP_DIR``, else the files shipped in gateway/nchf/openapi/),
``nchf_max_body_bytes`` (128 KiB), ``nchf_context_ttl_s`` (a day).
"""

from __future__ import annotations

import os

from gateway.http import AsgiDoor
from gateway.nchf.app import MAX_BODY_BYTES, NchfApp, NchfMetrics
from gateway.nchf.context import Contexts
from gateway.nchf.schemas import DEFAULT_DIR, NchfSchemas
from gateway.nchf.service import NchfService
from gateway.server import Context, register


def build_app(ctx: Context, metrics: NchfMetrics | None = None,
              schemas: NchfSchemas | None = None) -> NchfApp:
    """The door's ASGI application over a door ``Context`` (the schemas are read here,
    unless given: they are immutable once built, doors may share them)."""
    extra = ctx.config.extra
    schemas = schemas or NchfSchemas(extra.get("nchf_schemas")
                                     or os.environ.get("CHARGEFLOW_3GPP_DIR") or DEFAULT_DIR)
    contexts = Contexts(ctx.redis, ctx.config.prefix,
                        ttl_s=int(extra.get("nchf_context_ttl_s", 86_400)))
    service = NchfService(ctx.bridge, ctx.identities, ctx.catalogs, contexts)
    return NchfApp(service, schemas, metrics or NchfMetrics(),
                   max_body_bytes=int(extra.get("nchf_max_body_bytes", MAX_BODY_BYTES)))


def make_door(ctx: Context, metrics: NchfMetrics | None = None,
              schemas: NchfSchemas | None = None) -> AsgiDoor:
    app = build_app(ctx, metrics, schemas)
    assert ctx.config.nchf is not None, "the Nchf door is closed (--no-nchf)"
    return AsgiDoor("nchf", app, ctx.config.nchf)


register("nchf", make_door)
