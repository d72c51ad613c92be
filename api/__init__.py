"""The account API (CONTRACT §7): prepaid balance checks, top-ups and adjustments over
HTTP/1.1 and HTTP/2, behind API keys and roles. ``api.app`` is the application, ``api.keys``
the keys, ``api.cli`` the ``chargeflow api`` and ``apikey`` commands; importing this package
registers the door ``api`` that ``chargeflow serve`` / ``gateway`` open."""

from __future__ import annotations

from gateway.server import Context, register


def door(ctx: Context):
    """The API on ``ctx.config.api`` over the doors' Redis (the catalog cache's client, and
    the doors' asyncio client where there is one), served by hypercorn, or by granian with
    ``extra["api_server"] == "granian"`` (``--api-server``)."""
    from api.app import ApiSettings, create_app
    from gateway.http import AsgiDoor, GranianDoor

    settings = ApiSettings.from_extra(ctx.config.prefix, ctx.config.extra)
    app = create_app(ctx.catalogs.r, ctx.catalogs, settings, aclient=ctx.redis)
    server = ctx.config.extra.get("api_server", "hypercorn")
    kind = GranianDoor if server == "granian" else AsgiDoor
    return kind("api", app, ctx.config.api)


register("api", door)
