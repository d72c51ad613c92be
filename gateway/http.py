"""The HTTP stack the Nchf door and the account API share: an ASGI application served by
hypercorn on one port, HTTP/2 cleartext with prior knowledge and HTTP/1.1 side by side
(CONTRACT §6.1, §6.4, §7).

``AsgiDoor(name, app, address)`` is a ``gateway.server.Door``: ``start`` binds the socket
itself (so ``port 0`` reports the port it got) and hands it to hypercorn; ``close`` stops
accepting and lets requests in flight finish, up to ``graceful_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from hypercorn.asyncio import serve
from hypercorn.config import Config

log = logging.getLogger("chargeflow.gateway")


class AsgiDoor:
    """One ASGI application on ``address`` (host, port) under hypercorn."""

    def __init__(self, name: str, app, address: tuple[str, int], *,
                 graceful_s: float = 5.0) -> None:
        self.name = name
        self.app = app
        self.address = address
        self.graceful_s = graceful_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> tuple[str, int]:
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"the {self.name} door cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from exc
        sock.listen(1024)
        sock.set_inheritable(True)
        self._sock = sock
        config = Config()
        config.bind = [f"fd://{sock.fileno()}"]
        config.h2_max_concurrent_streams = 256
        config.graceful_timeout = self.graceful_s
        config.keep_alive_timeout = 75
        # hypercorn closes a connection after 1000 requests by default: an SMF keeps one
        # HTTP/2 connection for days, and the streams in flight at the GOAWAY fail
        config.keep_alive_max_requests = 1 << 62
        config.accesslog = None
        config.errorlog = logging.getLogger(f"chargeflow.{self.name}.server")
        # hypercorn reads a body into memory in chunks: the app refuses one above its limit
        # on Content-Length, and h11/h2 bound what one request may buffer
        config.h11_max_incomplete_size = 64 * 1024
        self._task = asyncio.create_task(
            serve(self.app, config, shutdown_trigger=self._stop.wait), name=f"{self.name}-http")
        await asyncio.sleep(0)  # let hypercorn take the socket before the door is announced
        bound = sock.getsockname()
        return bound[0], bound[1]

    async def close(self) -> None:
        self._stop.set()
        await _drained(self.name, self._task, self._sock, self.graceful_s)


class GranianDoor:
    """One ASGI application on ``address`` under granian's embedded server (its HTTP/1.1 and
    HTTP/2 in Rust threads, the application on this process's event loop): the same door as
    ``AsgiDoor``, at about three times hypercorn's requests per second and core.

    The socket is bound here, as in ``AsgiDoor``, and handed to granian; granian's ``auto``
    mode answers HTTP/1.1 and HTTP/2 with prior knowledge on it. ``close`` stops accepting
    and lets requests in flight finish, up to ``graceful_s``.
    """

    def __init__(self, name: str, app, address: tuple[str, int], *,
                 graceful_s: float = 5.0, max_header_bytes: int = 64 * 1024) -> None:
        self.name = name
        self.app = app
        self.address = address
        self.graceful_s = graceful_s
        self.max_header_bytes = max_header_bytes
        self._server = None
        self._task: asyncio.Task | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> tuple[str, int]:
        from granian._granian import SocketHolder
        from granian.constants import HTTPModes, Interfaces
        from granian.http import HTTP1Settings, HTTP2Settings
        from granian.server.embed import Server

        sock = _listen(self.name, self.address)
        self._sock = sock
        door = self

        class _Server(Server):
            def _init_shared_socket(self):  # the socket bound above (port 0 included)
                self._ssp = None
                self._shd = SocketHolder(sock.fileno(), False, 1024)
                self._sfd = sock.fileno()

        server = _Server(self.app, address=self.address[0], port=sock.getsockname()[1],
                         interface=Interfaces.ASGINL, http=HTTPModes.auto, websockets=False,
                         backlog=1024, log_enabled=False,
                         http1_settings=HTTP1Settings(max_buffer_size=door.max_header_bytes),
                         http2_settings=HTTP2Settings(max_concurrent_streams=256,
                                                      max_headers_size=door.max_header_bytes))
        server.workers_kill_timeout = max(1, int(self.graceful_s))
        self._server = server
        self._task = asyncio.create_task(server.serve(), name=f"{self.name}-http")
        await asyncio.sleep(0)
        bound = sock.getsockname()
        return bound[0], bound[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.stop()
        await _drained(self.name, self._task, self._sock, self.graceful_s)


async def _drained(name: str, task: asyncio.Task | None, sock: socket.socket | None,
                   graceful_s: float) -> None:
    """After a door's server was told to stop: wait for it to finish its requests in flight
    (cancelled ``graceful_s`` + 2 s on), then close the socket the door bound."""
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await asyncio.wait_for(task, graceful_s + 2)
            except TimeoutError:
                log.warning("the %s door did not drain in %.0f s", name, graceful_s)
                task.cancel()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _listen(name: str, address: tuple[str, int]) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"the {name} door cannot listen on {host}:{port}: "
                      f"{exc.strerror or exc}") from exc
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock
