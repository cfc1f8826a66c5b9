"""Helpers for the WebSocket tests: TLS contexts for wss://, a server and a client over ws or wss."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trustme
from core_net import within
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

import pbnb as pb


class Tls:
    """A certificate authority made for the test run and contexts for both ends."""

    def __init__(self) -> None:
        self.authority = trustme.CA()
        self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.authority.issue_cert("pbnb.test", "127.0.0.1", "localhost").configure_cert(self.server)
        self.client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.authority.configure_trust(self.client)


@asynccontextmanager
async def ws_serving(root: Any, scheme: str, tls: Tls, **options: Any) -> AsyncIterator[pb.Server]:
    """Serve ``root`` on a free loopback port, over TLS when ``scheme`` is wss."""
    server = await pb.serve(root, port=0, ssl=tls.server if scheme == "wss" else None, **options)
    try:
        yield server
    finally:
        await server.close()


def ws_url(server: pb.Server, scheme: str, path: str = "/pb") -> str:
    return f"{scheme}://127.0.0.1:{server.port}{path}"


@asynccontextmanager
async def ws_client(url: str, tls: Tls, **options: Any) -> AsyncIterator[pb.Client]:
    """Connect to ``url``, trusting the test's authority for wss://."""
    if url.startswith("wss:"):
        options.setdefault("ssl", tls.client)
    client = await within(pb.connect(url, **options))
    try:
        yield client
    finally:
        await client.close()


class RawWebSocket:
    """A hand-driven WebSocket client (the library's sans-IO client over asyncio streams).

    For tests that must send what pbnb's own client never would: text messages,
    oversized announcements, half a frame.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: ClientProtocol):
        self.reader = reader
        self.writer = writer
        self.ws = ws
        self.response: Response | None = None
        self.early: list[Frame] = []

    @classmethod
    async def open(cls, port: int, path: str = "/pb", headers: dict[str, str] | None = None) -> RawWebSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ws = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"))
        request = ws.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        ws.send_request(request)
        peer = cls(reader, writer, ws)
        peer.flush()
        while peer.response is None:
            events = await peer.receive()
            peer.response = next((e for e in events if isinstance(e, Response)), None)
            if peer.response is None and ws.state is State.CLOSED:
                raise ConnectionError("closed before the upgrade response")
        # Frames that came with the response (the server speaks PB at once after the upgrade).
        peer.early = [e for e in events if isinstance(e, Frame)]
        return peer

    def flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.writer.write(data)
            elif self.writer.can_write_eof():
                self.writer.write_eof()

    async def receive(self) -> list[Any]:
        """Read once from the socket; return the events (frames, response) it made."""
        data = await within(self.reader.read(65536))
        if data:
            self.ws.receive_data(data)
        else:
            self.ws.receive_eof()
        self.flush()
        return self.ws.events_received()

    async def close_frame(self) -> Close:
        """Read until the server's close frame; return it."""
        while self.ws.close_rcvd is None:
            if self.ws.state is State.CLOSED:
                raise ConnectionError("closed without a close frame")
            await self.receive()
        return self.ws.close_rcvd

    async def until_closed(self) -> bytes:
        """Read until the server hangs up; return the PB bytes that came in binary messages."""
        received = bytearray()
        events, self.early = self.early, []
        while True:
            for event in events:
                if isinstance(event, Frame) and event.opcode in (Opcode.BINARY, Opcode.CONT):
                    received += event.data
            if self.ws.state is State.CLOSED:
                return bytes(received)
            events = await self.receive()

    def close(self) -> None:
        self.writer.close()
