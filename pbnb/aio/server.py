"""Serving objects: ``await pbnb.serve(root, port=0)``."""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from collections.abc import Callable
from typing import Any

from ..core.broker import refusal_handshake
from ..errors import ServerFull
from ._options import split_options
from .connection import Connection, _serving

log = logging.getLogger("pbnb")

# How long a turned-away client may take to read why and hang up before it is dropped:
# plenty for a client on the far side of the world, short enough that a flood of
# refused connections cannot hold many sockets for long.
_REFUSAL_GRACE = 5.0


class Server:
    """A listening PB server. ``port`` is the bound port (useful with port=0).

    ``connections`` holds the live connections; with ``max_connections`` set,
    a client arriving while that many are live is turned away with ``ServerFull``.
    """

    def __init__(self, server: asyncio.base_events.Server, root: Any, max_connections: int | None = None):
        self._server = server
        self.root = root
        self.max_connections = max_connections
        self.connections: set[Connection] = set()
        self._refusals: set[_Refusal] = set()
        # Kept, so port, host and repr still answer after close() emptied the socket list.
        self._address = server.sockets[0].getsockname()[:2]
        self._closing: asyncio.Task[None] | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

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

    def close(self) -> asyncio.Future[None]:
        """Stop listening and close every connection; await the result to wait until done.

        It starts at once and runs on its own task, so it may also be called
        without awaiting; calling it again does no harm. From inside one of
        this server's remote methods it plays the part of Twisted's
        ``reactor.stop()``: the connection running the method cannot close
        before the method has answered, so there the result is already done,
        and the connections close once the method returns, its answer sent.
        """
        loop = asyncio.get_running_loop()
        if self._closing is None:
            self._closing = loop.create_task(self._close())
        if _serving.get() in self.connections:
            done = loop.create_future()
            done.set_result(None)
            return done
        return asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._server.close()
        refusals = list(self._refusals)
        for refusal in refusals:
            refusal.transport.abort()
        connections = list(self.connections)
        try:
            await asyncio.gather(*(connection.close() for connection in connections), return_exceptions=True)
            await asyncio.gather(*(refusal.closed for refusal in refusals))
            await self._server.wait_closed()
        finally:
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the server has been closed (by ``close()``, from anywhere)."""
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        """Serve until the server is closed (as ``reactor.run()`` ran until ``reactor.stop()``).

        Cancelling it closes the server.
        """
        try:
            await self.wait_closed()
        except asyncio.CancelledError:
            self.close()
            raise

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<pbnb.Server {self.host}:{self.port} {len(self.connections)} connection(s)>"

    def _admits(self, transport: asyncio.BaseTransport) -> bool:
        """Whether a new connection may be served; if not, turn it away saying why."""
        if self.max_connections is None or len(self.connections) < self.max_connections:
            return True
        here = _address(transport.get_extra_info("sockname"))  # as the client named us
        full = ServerFull(f"server at {here} is full (max_connections={self.max_connections})")
        log.warning("refused connection from %s: %s", _address(transport.get_extra_info("peername")), full)
        self._refusals.add(_Refusal(transport, full, self._refusals.discard))
        return False


async def serve(
    root: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    max_connections: int | None = None,
    reuse_port: bool = False,
    **options: Any,
) -> Server:
    """Start serving ``root`` (a Root, a Portal, or a factory called per connection).

    ``max_connections`` caps the connections served at once (None: no cap); a
    client over the cap gets ``ServerFull`` from ``connect``. ``reuse_port``
    (SO_REUSEPORT) lets several processes listen on one port, the kernel
    spreading new connections over them. Other keywords
    are limits (``max_frame=...``; see ``Limits``) or connection options:
    ``send_tracebacks`` (send tracebacks with errors), ``keepalive`` and
    ``dead_peer_timeout`` (seconds), ``handshake_timeout`` (seconds, 30),
    ``max_send_buffer`` (bytes held for a peer that stops reading, 64 MiB),
    ``registry`` (a ``CopyRegistry`` instead of the global one).
    """
    _check_max_connections(max_connections)
    connection_options, limits = split_options(options)
    loop = asyncio.get_running_loop()
    server: Server | None = None

    def closed(connection: Connection) -> None:
        server.connections.discard(connection)  # type: ignore[union-attr]
        log.info("connection from %s closed", connection.peer)

    def make() -> Connection:
        return _ServerConnection(
            server,  # type: ignore[arg-type]
            root,
            limits=limits,
            on_close=closed,
            **connection_options,
        )

    # Listening starts once the Server exists, so no connection arrives before it.
    listener = await loop.create_server(
        make, host, port, ssl=ssl, start_serving=False, reuse_port=reuse_port or None
    )
    server = Server(listener, root, max_connections)
    await listener.start_serving()
    log.info("serving %r on %s:%d", root, server.host, server.port)
    return server


def current_server() -> Server:
    """The Server whose client the running remote method serves.

    It lets a root served by ``python -m pbnb serve`` stop its server, as
    Twisted code called ``reactor.stop()``: ``pb.current_server().close()``.
    Raises LookupError outside a remote method, or in one served by ``connect``.
    """
    server = getattr(_serving.get(), "_server", None)
    if server is None:
        raise LookupError("current_server() is only known inside a remote method served by pbnb.serve")
    return server


def _address(peername: Any) -> str:
    return f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)


def _check_max_connections(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"max_connections must be an int or None, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"max_connections must be at least 1, got {value}")


class _ServerConnection(Connection):
    def __init__(self, server: Server, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Counted and checked only once made: a connection whose TLS handshake fails
        # is never made nor lost, and would hold its place (and Server.close()) forever.
        if not self._server._admits(transport):
            return
        super().connection_made(transport)
        self._server.connections.add(self)
        log.info("connection from %s", self.peer)


class _Refusal(asyncio.Protocol):
    """A connection turned away: tell the client why, then hang up once it has read that.

    What the client sent meanwhile (its preamble and HELLO) is read and dropped:
    closing a socket with unread bytes resets the connection, and a reset can
    destroy the explanation before the client reads it.
    """

    def __init__(
        self, transport: asyncio.BaseTransport, error: ServerFull, forget: Callable[[_Refusal], None]
    ):
        self.transport: Any = transport
        self._forget = forget
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        transport.set_protocol(self)
        self.transport.write(refusal_handshake(error))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:  # TLS: closing sends close_notify after the GOODBYE, then waits for the client's
            self.transport.close()
        self._timer = asyncio.get_running_loop().call_later(_REFUSAL_GRACE, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        self._timer.cancel()
        self._forget(self)
        self.closed.set_result(None)
