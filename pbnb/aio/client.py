"""Connecting to a broker: ``await pbnb.connect(host, port)``."""

from __future__ import annotations

import asyncio
import ssl as _ssl
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..core.reference import RemoteReference
from ..errors import PBConnectionLost
from ._options import split_options
from .address import Address, parse_address
from .connection import Connection


class Client:
    """A connection to a PB server, seen from the side that opened it.

    ``getRootObject()`` and ``login()`` give the first references; everything
    else comes from calls on them. Use ``async with`` to close it reliably.
    """

    def __init__(self, connection: Connection):
        self.connection = connection

    @property
    def broker(self) -> Any:
        """The connection's sans-IO protocol state (tables, limits)."""
        return self.connection.broker

    @property
    def connected(self) -> bool:
        """Whether the connection is still up."""
        return not self.connection.closed.done()

    async def getRootObject(self) -> RemoteReference:
        """Return a reference to the server's root object."""
        return await self.connection.get_root()

    async def login(self, credentials: Any, mind: Any = None, *, client: Any = None) -> RemoteReference:
        """Log in through the server's Portal; return a reference to your avatar.

        ``mind`` is any Referenceable of yours; the server's realm receives a
        reference to it and can call you back through it. ``client=`` is the
        same argument under the name Twisted's ``PBClientFactory.login`` gave it.
        """
        from ..cred.client import login

        if client is not None:
            if mind is not None:
                raise TypeError("login() takes mind= or client= (the same thing), not both")
            mind = client
        return await login(await self.getRootObject(), credentials, mind)

    async def close(self) -> None:
        """Close the connection; pending calls fail with PBConnectionLost."""
        await self.connection.close()

    async def wait_closed(self) -> None:
        """Wait until the connection is down, for whatever reason."""
        await asyncio.shield(self.connection.closed)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<pbnb.Client {self.connection.peer} {state}>"


async def connect(
    host: str,
    port: int | None = None,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    root: Any = None,
    timeout: float | None = 30.0,
    origin: str | None = None,
    headers: Mapping[str, str] | None = None,
    **options: Any,
) -> Client:
    """Connect to a PB server and finish the handshake.

    ``connect(host, port)`` and ``connect("pb://host:port")`` speak raw PB
    over TCP; ``connect("ws://host:port/path")`` and ``"wss://..."`` speak PB
    over WebSocket (through HTTP proxies; in Pyodide, on the browser's
    WebSocket). ``ssl`` is the TLS context (``wss://`` without one uses the
    system's trusted certificates). ``origin`` and ``headers`` go with the
    WebSocket upgrade request (for example a Jupyter token:
    ``headers={"Authorization": "token ..."}``).

    ``root`` is an object this side offers to the server (the protocol is
    symmetric). Keywords are limits (``max_frame=...``; see ``Limits``) or
    connection options (``send_tracebacks``, ``keepalive``,
    ``dead_peer_timeout``, ``handshake_timeout``, ``max_send_buffer``,
    ``registry``; see ``serve``). Raises ``ConnectionRefusedError``
    (an ``OSError``) when nothing listens, ``ProtocolError`` when the peer is
    not a compatible pbnb server or refuses the WebSocket upgrade.
    """
    address = parse_address(host, port)
    if not address.websocket and (origin is not None or headers):
        raise ValueError("origin= and headers= apply to ws:// and wss:// URLs only")
    if address.scheme == "ws" and ssl is not None:
        raise ValueError(f"ssl= given for {address.url}: use a wss:// URL for WebSocket over TLS")
    connection_options, limits = split_options(options)
    loop = asyncio.get_running_loop()

    def make() -> Connection:
        return Connection(root, limits=limits, **connection_options)

    if sys.platform == "emscripten":  # Pyodide: no sockets, only the browser's WebSocket
        from .browser import open_browser_websocket

        connection = await open_browser_websocket(address, make, timeout)
    else:
        tls: dict[str, Any] = {"ssl": ssl}
        if address.scheme == "wss" and ssl is None:
            tls["ssl"] = _ssl.create_default_context()
        if tls["ssl"] is not None and server_hostname is not None:
            tls["server_hostname"] = server_hostname
        if address.websocket:
            connection = await _open_websocket(address, make, tls, timeout, origin, headers)
        else:
            connection = await _open(
                loop.create_connection(make, address.host, address.port, **tls), address, timeout
            )
    try:
        await asyncio.wait_for(asyncio.shield(connection.ready), timeout)
    except BaseException as exc:
        connection.abort()
        if isinstance(exc, TimeoutError):
            raise PBConnectionLost(f"{address} did not complete the pbnb handshake in {timeout}s") from None
        raise
    return Client(connection)


async def _open(opening: Awaitable[tuple[Any, Any]], address: Address, timeout: float | None = 30.0) -> Any:
    """Await a TCP connection; a refusal names the address."""
    try:
        _, protocol = await asyncio.wait_for(opening, timeout)
    except ConnectionRefusedError as exc:
        raise ConnectionRefusedError(exc.errno, f"no pbnb server at {address} (connection refused)") from None
    return protocol


async def _open_websocket(
    address: Address,
    make: Callable[[], Connection],
    tls: dict[str, Any],
    timeout: float | None,
    origin: str | None,
    headers: Mapping[str, str] | None,
) -> Connection:
    """Open a TCP connection, upgrade it to WebSocket, return the PB Connection above it."""
    from .websocket import WebSocketTransport

    loop = asyncio.get_running_loop()

    def transport() -> WebSocketTransport:
        return WebSocketTransport.client(address.url, make, origin=origin, headers=dict(headers or {}))

    ws = await _open(loop.create_connection(transport, address.host, address.port, **tls), address, timeout)
    try:
        await asyncio.wait_for(asyncio.shield(ws.upgraded), timeout)
    except BaseException as exc:
        ws.abort()
        if isinstance(exc, TimeoutError):
            raise PBConnectionLost(
                f"{address} did not complete the WebSocket upgrade in {timeout}s"
            ) from None
        raise
    return ws.get_protocol()
