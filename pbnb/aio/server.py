"""Serving objects: ``await pbnb.serve(root, port=0)``."""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from typing import Any

from ._options import split_options
from .connection import Connection

log = logging.getLogger("pbnb")


class Server:
    """A listening PB server. ``port`` is the bound port (useful with port=0)."""

    def __init__(self, server: asyncio.base_events.Server, root: Any):
        self._server = server
        self.root = root
        self.connections: set[Connection] = set()
        # Kept, so port, host and repr still answer after close() emptied the socket list.
        self._address = server.sockets[0].getsockname()[:2]

    @property
    def sockets(self) -> tuple:
        """The listening sockets."""
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port the server is bound to (useful after ``port=0``)."""
        return self._address[1]

    @property
    def host(self) -> str:
        """The address the server is bound to."""
        return self._address[0]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        self._server.close()
        connections = list(self.connections)
        await asyncio.gather(*(connection.close() for connection in connections), return_exceptions=True)
        await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        await self._server.serve_forever()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<pbnb.Server {self.host}:{self.port} {len(self.connections)} connection(s)>"


async def serve(
    root: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    **options: Any,
) -> Server:
    """Start serving ``root`` (a Root, a Portal, or a factory called per connection).

    Keywords are limits (``max_frame=...``; see ``Limits``) or connection
    options: ``send_tracebacks`` (send tracebacks with errors), ``keepalive``
    and ``dead_peer_timeout`` (seconds), ``handshake_timeout`` (seconds, 30),
    ``max_send_buffer`` (bytes held for a peer that stops reading, 64 MiB),
    ``registry`` (a ``CopyRegistry`` instead of the global one).
    """
    connection_options, limits = split_options(options)
    loop = asyncio.get_running_loop()
    server: Server | None = None

    def closed(connection: Connection) -> None:
        server.connections.discard(connection)  # type: ignore[union-attr]
        log.info("connection from %s closed", connection.peer)

    def make() -> Connection:
        return _ServerConnection(
            server.connections,  # type: ignore[union-attr]
            root,
            limits=limits,
            on_close=closed,
            **connection_options,
        )

    listener = await loop.create_server(make, host, port, ssl=ssl)
    server = Server(listener, root)
    log.info("serving %r on %s:%d", root, server.host, server.port)
    return server


class _ServerConnection(Connection):
    def __init__(self, live: set[Connection], *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._live = live

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Counted only once made: a connection whose TLS handshake fails is never
        # made nor lost, and Server.close() would wait for it forever.
        self._live.add(self)
        log.info("connection from %s", self.peer)
