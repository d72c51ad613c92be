"""A lean HTTP/2 cleartext client (prior knowledge) for the benchmarks: many streams on one
connection over asyncio, on the ``h2`` protocol library. httpx's own HTTP/2 client measured
~100–200 requests/s here against a do-nothing server (its pool, not the server, was the
limit), too slow to load a door; this one sends each request as soon as it is due."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events


class H2Client:
    """``await request(method, path, body)`` -> (status, headers dict, body bytes)."""

    def __init__(self, host: str, port: int, max_streams: int = 100):
        self.host, self.port = host, port
        self.slots = asyncio.Semaphore(max_streams)
        self.pending: dict[int, tuple[asyncio.Future, dict]] = {}
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task | None = None
        self.window = asyncio.Event()

    async def open(self) -> H2Client:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(2**30)
        self._flush()
        self.task = asyncio.create_task(self._read())
        return self

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "application/json") -> tuple[int, dict, bytes]:
        async with self.slots:
            sid = self.conn.get_next_available_stream_id()
            fut = asyncio.get_running_loop().create_future()
            self.pending[sid] = (fut, {"headers": {}, "body": bytearray()})
            self.conn.send_headers(sid, [(":method", method), (":path", path),
                                         (":scheme", "http"),
                                         (":authority", f"{self.host}:{self.port}"),
                                         ("content-type", content_type),
                                         ("content-length", str(len(body)))],
                                   end_stream=not body)
            while body:
                room = min(self.conn.local_flow_control_window(sid),
                           self.conn.max_outbound_frame_size)
                if room <= 0:
                    self._flush()
                    self.window.clear()
                    await self.window.wait()
                    continue
                chunk, body = body[:room], body[room:]
                self.conn.send_data(sid, chunk, end_stream=not body)
            self._flush()
            return await fut

    async def _read(self) -> None:
        while True:
            data = await self.reader.read(1 << 16)
            if not data:
                for fut, _ in self.pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("the server closed the connection"))
                return
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    entry = self.pending.get(event.stream_id)
                    if entry is not None:
                        entry[1]["headers"] = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                        event.stream_id)
                    entry = self.pending.get(event.stream_id)
                    if entry is not None:
                        entry[1]["body"] += event.data
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    entry = self.pending.pop(event.stream_id, None)
                    if entry is not None and not entry[0].done():
                        headers = entry[1]["headers"]
                        entry[0].set_result((int(headers.get(":status", 0)), headers,
                                             bytes(entry[1]["body"])))
                elif isinstance(event, h2.events.WindowUpdated):
                    self.window.set()
            self._flush()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.conn.close_connection()
            self._flush()
            self.writer.close()
