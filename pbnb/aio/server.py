"""Serving objects: ``await pbnb.serve(root, port=0)``."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as _ssl
from collections.abc import Callable, Iterable
from typing import Any, cast

from ..core.broker import refusal_handshake
from ..errors import PBError, ProtocolError, ServerFull
from ._options import split_options
from .connection import Connection, serving_connection
from .intake import Intake

log = logging.getLogger("pbnb")

# How long a turned-away client may take to read why and hang up before it is dropped:
# plenty for a client on the far side of the world, short enough that a flood of
# refused connections cannot hold many sockets for long.
_REFUSAL_GRACE = 5.0

#: A server's defaults for clients that have connected but not yet completed the TLS
#: and pbnb handshakes: an honest client needs milliseconds, so both are small.
HANDSHAKE_TIMEOUT = 10.0
# The first byte of a TLS client's first record (a handshake record: its ClientHello).
_TLS_HANDSHAKE_RECORD = 0x16
# Above the listen backlog (asyncio's 100): the loop accepts a whole burst of
# connections before it reads from any of them, so a smaller cap would push out
# honest clients of one burst whose first bytes are already waiting.
MAX_PENDING_HANDSHAKES = 128


class Server:
    """A listening PB server. ``port`` is the bound port (useful with port=0).

    ``connections`` holds the live connections; with ``max_connections`` set,
    a client arriving while that many have completed the handshake is turned away
    with ``ServerFull``. Clients still on their handshake (TLS, then pbnb's) are
    counted apart: at most ``max_pending_handshakes`` at once (a newcomer over it
    pushes out the one that has waited longest), each for at most
    ``handshake_timeout`` seconds, so sockets that never start cannot lock out
    real clients.
    """

    def __init__(
        self,
        server: asyncio.base_events.Server,
        root: Any,
        max_connections: int | None = None,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_pending_handshakes: int = MAX_PENDING_HANDSHAKES,
        websocket: Any = None,
    ):
        self._server = server
        # Who may upgrade to WebSocket (a WebSocketPolicy), or None: raw PB only.
        self.websocket = websocket
        self.root = root
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.max_pending_handshakes = max_pending_handshakes
        self.connections: set[Connection] = set()
        # Arrival order, oldest first; each with the timer that drops it.
        self._pending: dict[_ServerConnection, asyncio.TimerHandle] = {}
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
        if serving_connection() in self.connections:
            done = loop.create_future()
            done.set_result(None)
            return done
        return asyncio.shield(self._closing)

    @property
    def pending_handshakes(self) -> int:
        """How many clients have connected but not completed the handshake yet."""
        return len(self._pending)

    async def _close(self) -> None:
        self._server.close()
        for pending in list(self._pending):
            pending.drop_pending(ProtocolError("the server is closing"))
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

    def arrive(self, connection: _ServerConnection) -> None:
        """Count a new client as pending; push out the oldest pending one if there are too many."""
        if len(self._pending) >= self.max_pending_handshakes:
            oldest = next(iter(self._pending))
            oldest.drop_pending(
                ProtocolError(
                    f"{oldest.peer} was pushed out by newer clients: {len(self._pending)} handshakes "
                    f"were pending (max_pending_handshakes={self.max_pending_handshakes})"
                )
            )
        timeout = self.handshake_timeout
        why = ProtocolError(f"{connection.peer} did not complete the handshake in {timeout:g}s")
        self._pending[connection] = asyncio.get_running_loop().call_later(
            timeout, connection.drop_pending, why
        )

    def settle(self, connection: _ServerConnection) -> None:
        """The client completed its handshake, or left: it is no longer pending."""
        timer = self._pending.pop(connection, None)
        if timer is not None:
            timer.cancel()

    def refuse(self, transport: asyncio.BaseTransport, error: PBError) -> None:
        """Turn a client away: tell it ``error`` (over PB's handshake), then hang up."""
        self._refusals.add(_Refusal(transport, error, self._refusals.discard))

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Whether a new connection may be served; if not, turn it away saying why."""
        if self.max_connections is None:
            return True
        established = len(self.connections) - sum(
            1 for pending in self._pending if pending in self.connections
        )
        if established < self.max_connections:
            return True
        here = _address(transport.get_extra_info("sockname"))  # as the client named us
        full = ServerFull(f"server at {here} is full (max_connections={self.max_connections})")
        log.warning("refused connection from %s: %s", _address(transport.get_extra_info("peername")), full)
        self.refuse(transport, full)
        return False


async def serve(
    root: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    max_connections: int | None = None,
    reuse_port: bool = False,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    max_pending_handshakes: int = MAX_PENDING_HANDSHAKES,
    websocket: bool = True,
    websocket_path: str | None = None,
    websocket_origins: Iterable[str] | str | None = None,
    **options: Any,
) -> Server:
    """Start serving ``root`` (a Root, a Portal, or a factory called per connection).

    The port takes raw PB clients (``connect(host, port)``) and, unless
    ``websocket=False``, WebSocket clients (``connect("ws://host:port/path")``,
    browsers): the server tells them apart by their first bytes.
    ``websocket_path`` restricts the path (None: any); ``websocket_origins``
    lists the browser origins (``"https://example.org:8000"``, or ``"*"``) whose
    pages may connect besides same-origin ones: by default a web page from
    another site is refused, since any page a user opens could drive the broker.

    ``max_connections`` caps the connections served at once (None: no cap); a
    client over the cap gets ``ServerFull`` from ``connect``. A client has
    ``handshake_timeout`` seconds (10) to complete the TLS and pbnb handshakes,
    and at most ``max_pending_handshakes`` (128) may be on theirs at once: the
    longest waiting is dropped to make room. ``reuse_port``
    (SO_REUSEPORT) lets several processes listen on one port, the kernel
    spreading new connections over them. Other keywords
    are limits (``max_frame=...``; see ``Limits``) or connection options:
    ``send_tracebacks`` (send tracebacks with errors), ``keepalive`` and
    ``dead_peer_timeout`` (seconds), ``max_send_buffer`` (bytes held for a peer that stops reading, 64 MiB),
    ``registry`` (a ``CopyRegistry`` instead of the global one).
    """
    _check_max_connections(max_connections)
    if not handshake_timeout > 0:
        raise ValueError(f"handshake_timeout must be positive, got {handshake_timeout}")
    if max_pending_handshakes < 1:
        raise ValueError(f"max_pending_handshakes must be at least 1, got {max_pending_handshakes}")
    policy = _websocket_policy(websocket_path, websocket_origins) if websocket else None
    connection_options, limits = split_options(options)
    connection_options["handshake_timeout"] = None  # the server times the whole handshake, TLS included
    loop = asyncio.get_running_loop()
    server: Server | None = None

    def closed(connection: Connection) -> None:
        assert server is not None  # connections close only once the server listens
        server.connections.discard(connection)
        log.info("connection from %s closed", connection.peer)

    def make() -> Connection:
        return _ServerConnection(
            server,  # type: ignore[arg-type]
            ssl,
            root,
            limits=limits,
            on_close=closed,
            **connection_options,
        )

    # Listening starts once the Server exists, so no connection arrives before it.
    # TLS is started by each connection (see _ServerConnection), so that a client still
    # on its TLS handshake is counted and can be dropped like any other pending one.
    listener = await loop.create_server(make, host, port, start_serving=False, reuse_port=reuse_port or None)
    server = Server(
        listener,
        root,
        max_connections,
        handshake_timeout=handshake_timeout,
        max_pending_handshakes=max_pending_handshakes,
        websocket=policy,
    )
    await listener.start_serving()
    log.info("serving %r on %s:%d", root, server.host, server.port)
    return server


def current_server() -> Server:
    """The Server whose client the running remote method serves.

    It lets a root served by ``python -m pbnb serve`` stop its server, as
    Twisted code called ``reactor.stop()``: ``pb.current_server().close()``.
    Raises LookupError outside a remote method, or in one served by ``connect``.
    """
    server = getattr(serving_connection(), "_server", None)
    if server is None:
        raise LookupError("current_server() is only known inside a remote method served by pbnb.serve")
    return server


def _websocket_policy(path: str | None, origins: Iterable[str] | str | None) -> Any:
    # Checked now, so a bad argument fails serve() rather than every client. Imported
    # here so that `import pbnb` needs no websockets library (Pyodide has none).
    from .websocket import WebSocketPolicy

    return WebSocketPolicy.build(path, origins)


def _address(peername: Any) -> str:
    return f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)


def _check_max_connections(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"max_connections must be an int or None, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"max_connections must be at least 1, got {value}")


def _settle_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _ServerConnection(Connection):
    """A server's connection: pending (counted by the Server) until its handshakes are done."""

    def __init__(self, server: Server, tls: _ssl.SSLContext | None, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._server = server
        self._tls = tls
        self._raw: asyncio.Transport | None = None  # the TCP transport, until pbnb runs on it
        self._starting: asyncio.Task[None] | None = None
        self._upgrading: Any = None  # the WebSocketTransport while its upgrade is pending

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)
        self.peer = _address(transport.get_extra_info("peername"))
        self._server.arrive(self)
        if self._tls is None:
            self._begin(transport)
            return
        tcp = cast(asyncio.Transport, transport)  # a server's connections run on a socket transport
        tcp.pause_reading()  # start_tls takes it over; no byte may reach us before
        self._starting = self._loop.create_task(self._start_tls(tcp))

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        first = await self._peek(raw)
        if first and first[0] != _TLS_HANDSHAKE_RECORD:
            # A client without TLS (pbnb's preamble, or HTTP): tell it in the clear, so that
            # its connect() says what is wrong instead of finding the connection closed.
            self._server.settle(self)
            error = ProtocolError(f"the server at {_address(raw.get_extra_info('sockname'))} requires TLS")
            log.info("refused %s: it did not start TLS", self.peer)
            self._server.refuse(raw, error)
            return
        # Until pbnb runs on it, what arrives over TLS (the client may send its preamble
        # at once) waits in `held`.
        held = _Held(lambda: self._server.settle(self))
        try:
            tls = await self._loop.start_tls(
                raw,
                held,
                self._tls,  # type: ignore[arg-type]
                server_side=True,
                ssl_handshake_timeout=self._server.handshake_timeout,
            )
        except (TimeoutError, OSError, _ssl.SSLError) as exc:
            log.info("TLS handshake with %s failed: %s", self.peer, exc or type(exc).__name__)
            self._server.settle(self)
            raw.abort()
            return
        if tls is None or held.lost:  # dropped while the handshake ran
            return
        tls.set_protocol(self)
        self._begin(tls, bytes(held.data))

    async def _peek(self, raw: asyncio.Transport) -> bytes:
        """The client's first byte, left unread for TLS to read (b"" if it hangs up first)."""
        sock = raw.get_extra_info("socket").dup()  # a socket of our own on the same connection
        try:
            readable = self._loop.create_future()
            self._loop.add_reader(sock.fileno(), _settle_once, readable)
            try:
                await readable
            finally:
                self._loop.remove_reader(sock.fileno())
            return sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return b""
        finally:
            sock.close()

    def _begin(self, transport: asyncio.BaseTransport, head: bytes = b"") -> None:
        """Serve a client whose TCP (and TLS) handshake is done; ``head``: what it sent meanwhile.

        A server that takes WebSocket clients too waits for the client's first
        bytes to learn which kind it is (see intake.py); otherwise PB starts at once.
        """
        if self._server.websocket is None:
            self._open(transport)
            if head and self.transport is transport:
                self.data_received(head)
            return
        intake = Intake(
            self.peer,
            lambda http, data: self._sniffed(transport, http, data),
            lambda: self._server.settle(self),
        )
        transport.set_protocol(intake)
        if head:
            intake.data_received(head)

    def _sniffed(self, transport: asyncio.BaseTransport, http: bool, head: bytes) -> None:
        if not http:
            transport.set_protocol(self)
            self._open(transport)
            transport.get_protocol().data_received(head)  # type: ignore[attr-defined]  # maybe a refusal: the server is full
            return
        from .websocket import WebSocketTransport

        def opened(ws: WebSocketTransport) -> None:
            self._upgrading = None
            ws.set_protocol(self)
            self._open(ws)

        self._upgrading = ws = WebSocketTransport.server(
            self._server.websocket, opened, on_failed=lambda: self._server.settle(self)
        )
        transport.set_protocol(ws)
        ws.connection_made(transport)
        ws.data_received(head)

    def _open(self, transport: asyncio.BaseTransport) -> None:
        # Counted and checked only once made: a connection whose TLS handshake fails
        # is never served, and must not hold a place among the connections.
        if not self._server.admit(transport):
            self._server.settle(self)
            return
        super().connection_made(transport)
        self._raw = None
        self._server.connections.add(self)
        self.ready.add_done_callback(lambda _ready: self._server.settle(self))
        log.info("connection from %s", self.peer)

    def drop_pending(self, reason: BaseException) -> None:
        """Drop a client that has not completed its handshake (logged at INFO: strangers do that)."""
        self._server.settle(self)
        log.info("dropping %s", reason)
        if self._upgrading is not None:  # an HTTP client: answer in HTTP
            self._upgrading.refuse(reason)
        elif self.transport is not None:
            self.close_reason = reason
            self.transport.abort()
        elif self._raw is not None:
            self._raw.abort()
        if self._starting is not None:
            self._starting.cancel()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._server.settle(self)
        if self.transport is None:  # lost during the TLS handshake: never served
            return
        super().connection_lost(exc)


class _Held(asyncio.Protocol):
    """Keeps what arrives over a fresh TLS transport until its connection takes over."""

    def __init__(self, on_lost: Callable[[], Any]):
        self.data = bytearray()
        self.lost = False
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self._on_lost()


class _Refusal(asyncio.Protocol):
    """A connection turned away: tell the client why, then hang up once it has read that.

    What the client sent meanwhile (its preamble and HELLO) is read and dropped:
    closing a socket with unread bytes resets the connection, and a reset can
    destroy the explanation before the client reads it.
    """

    def __init__(self, transport: asyncio.BaseTransport, error: PBError, forget: Callable[[_Refusal], None]):
        self.transport = cast(asyncio.Transport, transport)
        self.close_reason = error  # read by a WebSocket transport for its close code
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
