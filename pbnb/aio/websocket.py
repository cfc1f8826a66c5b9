"""PB over WebSocket, with the ``websockets`` library's sans-IO protocol objects.

A ``WebSocketTransport`` sits between asyncio's TCP (or TLS) transport and a PB
``Connection``: to the TCP transport it is the protocol, to the Connection it
is the transport. It does the HTTP upgrade, then carries the PB byte stream in
binary messages (rules in :mod:`pbnb.aio.ws_stream`), so the broker, limits,
login, TLS and keepalive are the same as over raw TCP. The library does the
HTTP parsing, framing, masking and close handshake; this module moves bytes
and decides who may connect.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidMessage, PayloadTooBig
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from ..errors import LimitExceeded, PBConnectionLost, ProtocolError
from .ws_stream import (
    MAX_MESSAGE,
    UNSUPPORTED_DATA,
    close_code,
    close_text,
    closed_error,
    messages,
)

log = logging.getLogger("pbnb")

#: Seconds a side waits for the peer to finish the close handshake (and hang
#: up) before it drops the TCP connection itself.
CLOSE_TIMEOUT = 5.0

_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class WebSocketPolicy:
    """Who a server lets upgrade: the path (None: any) and the browser origins it trusts.

    ``origins`` None trusts only same-origin pages (Origin names the host the
    request went to); ``"*"`` in it trusts every page. Clients that send no
    Origin (anything but a browser) are never refused for it: only a browser
    can be tricked into connecting by a page, and browsers always send it.
    """

    path: str | None = None
    origins: tuple[str, ...] | None = None

    @classmethod
    def build(cls, path: str | None, origins: Iterable[str] | str | None) -> WebSocketPolicy:
        """Check and normalise ``serve()``'s ``websocket_path=`` and ``websocket_origins=``."""
        if path is not None and not (isinstance(path, str) and path.startswith("/")):
            raise ValueError(f"websocket_path must start with '/', got {path!r}")
        if isinstance(origins, str):
            origins = (origins,)
        if origins is not None:
            origins = tuple(_normal_origin(origin) if origin != "*" else "*" for origin in origins)
        return cls(path, origins)

    def refusal(self, request: Request) -> tuple[http.HTTPStatus, str] | None:
        """Why ``request`` may not upgrade (HTTP status, text), or None if it may."""
        path = urlsplit(request.path).path
        if self.path is not None and path != self.path:
            return http.HTTPStatus.NOT_FOUND, f"no pbnb broker at {path} (it is at {self.path})"
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return (
                http.HTTPStatus.UPGRADE_REQUIRED,
                f"this is a pbnb broker: it takes PB over WebSocket here, not plain HTTP ({request.method} "
                f"{path}); connect with pbnb.connect('ws://HOST:PORT{path}')",
            )
        origin = request.headers.get("Origin")
        if origin is not None and not self._trusts(origin, request.headers.get("Host", "")):
            return (
                http.HTTPStatus.FORBIDDEN,
                f"origin {origin} may not connect to this pbnb broker "
                "(serve it with websocket_origins=[...] naming that origin)",
            )
        return None

    def _trusts(self, origin: str, host: str) -> bool:
        try:
            origin = _normal_origin(origin)
        except ValueError:
            return False  # "null" (a file:// page, a sandboxed frame) and the like
        if self.origins is not None and ("*" in self.origins or origin in self.origins):
            return True
        scheme = origin.split(":", 1)[0]
        return origin.split("://", 1)[1] == _with_port(host.lower(), scheme)


def _normal_origin(origin: str) -> str:
    """``scheme://host:port`` in lower case with the port spelled out, or ValueError."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    return f"{parts.scheme}://{_with_port(parts.netloc, parts.scheme)}"


def _with_port(netloc: str, scheme: str) -> str:
    # "[::1]:80" and "example.org:443" have a port; "[::1]" and "example.org" take the default.
    if netloc.rsplit("]", 1)[-1].count(":") == 0:
        return f"{netloc}:{_DEFAULT_PORTS[scheme]}"
    return netloc


class WebSocketTransport(asyncio.Transport, asyncio.Protocol):
    """One WebSocket connection: a protocol for the TCP transport, a transport for PB.

    Made with :meth:`server` (an HTTP request has arrived on a server's port)
    or :meth:`client` (``connect("ws://...")``). Once the upgrade is done,
    ``opened(self)`` sets the PB protocol above (``set_protocol``) and makes the
    connection; until then ``upgraded`` is pending. ``on_failed()`` runs if the
    connection is lost before that.
    """

    def __init__(
        self,
        ws: Protocol,
        opened: Callable[[WebSocketTransport], None],
        *,
        policy: WebSocketPolicy | None = None,
        on_failed: Callable[[], Any] | None = None,
        where: str = "peer",
    ):
        super().__init__()
        self._ws = ws
        self._opened = opened
        self._policy = policy
        self._on_failed = on_failed
        self._loop = asyncio.get_running_loop()
        self._tcp: Any = None
        self._protocol: Any = None
        self._path: str | None = None
        self._closing = False
        self._cut = False
        self._reason: BaseException | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._request_headers: dict[str, str] = {}  # client: extra headers for the upgrade request
        self.where = where
        #: Done once the upgrade succeeded (the PB protocol is made); its error if it failed.
        self.upgraded: asyncio.Future[None] = self._loop.create_future()

    @classmethod
    def server(
        cls,
        policy: WebSocketPolicy,
        opened: Callable[[WebSocketTransport], None],
        *,
        on_failed: Callable[[], Any] | None = None,
    ) -> WebSocketTransport:
        """The server side of a connection whose first bytes were an HTTP request."""
        return cls(ServerProtocol(max_size=MAX_MESSAGE), opened, policy=policy, on_failed=on_failed)

    @classmethod
    def client(
        cls,
        url: str,
        make_protocol: Callable[[], asyncio.BaseProtocol],
        *,
        origin: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> WebSocketTransport:
        """The client side of ``connect(url)``; ``headers`` go with the upgrade request."""
        ws = ClientProtocol(parse_uri(url), origin=origin, max_size=MAX_MESSAGE)  # type: ignore[arg-type]

        def opened(transport: WebSocketTransport) -> None:
            protocol = make_protocol()
            transport.set_protocol(protocol)
            protocol.connection_made(transport)

        self = cls(ws, opened, where=url)
        self._request_headers = headers or {}
        return self

    # ------------------------------------------------ the TCP transport's protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport
        if self.where == "peer":
            peername = transport.get_extra_info("peername")
            self.where = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        ws = self._ws
        if isinstance(ws, ClientProtocol):
            request = ws.connect()
            for name, value in self._request_headers.items():
                request.headers[name] = value
            ws.send_request(request)
            self._send_pending()

    def data_received(self, data: bytes) -> None:
        self._ws.receive_data(data)
        self._received()

    def eof_received(self) -> bool | None:
        ws = self._ws
        # A frame cut short, or a message whose last fragment never came: the peer (or a
        # proxy) dropped the connection mid-message.
        self._cut = bool(ws.reader.buffer) or ws.current_size is not None
        ws.receive_eof()
        self._received()
        return None  # asyncio closes the transport once what we wrote is out

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        ws = self._ws
        reason = self._reason
        if reason is None and ws.close_rcvd is not None:
            reason = closed_error(ws.close_rcvd.code, ws.close_rcvd.reason, self.where)
        if reason is None and exc is not None:
            reason = exc
        if reason is None and ws.close_rcvd is None and ws.state is not State.CLOSED and not self._closing:
            reason = PBConnectionLost(f"the connection to {self.where} ended without a WebSocket close")
        if self._protocol is not None:
            self._protocol.connection_lost(reason)
        if not self.upgraded.done():
            self.upgraded.set_exception(
                reason or PBConnectionLost(f"{self.where} closed the connection during the WebSocket upgrade")
            )
            self.upgraded.exception()  # the opener reports it, if there is one
            if self._on_failed is not None:
                self._on_failed()

    def pause_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.resume_writing()

    # ------------------------------------------------------------- events

    def _received(self) -> None:
        ws = self._ws
        for event in ws.events_received():
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is _BINARY or opcode is _CONT:
                    if self._protocol is not None and self._reason is None:
                        self._protocol.data_received(event.data)
                elif opcode is Opcode.TEXT and self._reason is None:
                    self._fail(
                        UNSUPPORTED_DATA,
                        ProtocolError(
                            f"{self.where} sent a text WebSocket message; pbnb takes binary messages only"
                        ),
                    )
            elif isinstance(event, Request):
                self._answer(event)
            elif isinstance(event, Response):
                self._answered(event)
        if ws.parser_exc is not None and self._reason is None:
            self._reason = self._parser_error(ws.parser_exc)
            dropped = isinstance(self._reason, PBConnectionLost)  # by the peer: not its fault, maybe
            log.log(logging.INFO if dropped else logging.WARNING, "WebSocket: %s", self._reason)
        if ws.handshake_exc is not None and not self.upgraded.done() and self._reason is None:
            self._refused_request(ws.handshake_exc)
        self._send_pending()

    def _parser_error(self, exc: Exception) -> BaseException:
        if isinstance(exc, PayloadTooBig):
            return LimitExceeded(f"{self.where} sent a WebSocket message over {MAX_MESSAGE} bytes: {exc}")
        if isinstance(exc, EOFError):
            middle = " in the middle of a message" if self._cut else ""
            return PBConnectionLost(f"the connection to {self.where} ended{middle} without a WebSocket close")
        return ProtocolError(f"broken WebSocket stream from {self.where}: {exc}")

    def _fail(self, code: int, error: BaseException) -> None:
        self._reason = error
        log.warning("closing WebSocket connection with %s: %s", self.where, error)
        self._ws.fail(code, close_text(error))

    # ------------------------------------------------------------- upgrade

    def _answer(self, request: Request) -> None:
        """Server: accept or refuse the upgrade request."""
        ws = self._ws
        assert isinstance(ws, ServerProtocol) and self._policy is not None
        refusal = self._policy.refusal(request)
        response = ws.reject(*refusal) if refusal else ws.accept(request)
        if response.status_code != 101:
            text = response.body.decode(errors="replace").strip()
            self._reason = ProtocolError(
                f"refused WebSocket connection from {self.where}: HTTP {response.status_code} "
                f"{response.reason_phrase}: {text}"
            )
            log.warning("%s", self._reason)
        ws.send_response(response)
        self._send_pending()
        if response.status_code == 101:
            self._path = urlsplit(request.path).path
            self._open()

    def _refused_request(self, exc: Exception) -> None:
        """Server: not even an HTTP request; client: no valid response. Say so, then hang up."""
        ws = self._ws
        if isinstance(ws, ServerProtocol):
            why = f"{exc}{f': {exc.__cause__}' if exc.__cause__ else ''}"
            self._reason = ProtocolError(f"refused connection from {self.where}: {why}")
            log.warning("%s", self._reason)
            if isinstance(exc, InvalidMessage) and self._tcp is not None and not self._tcp.is_closing():
                # The library hangs up without an answer; give the client a reason first.
                self._tcp.write(ws.reject(http.HTTPStatus.BAD_REQUEST, f"{why}\n").serialize())
        else:
            self._reason = ProtocolError(
                f"{self.where} did not answer the WebSocket upgrade with HTTP ({exc}); "
                "is it a raw PB port? then connect with 'pb://host:port'"
            )

    def _answered(self, response: Response) -> None:
        """Client: the server's answer to the upgrade request."""
        problem = self._ws.handshake_exc
        if response.status_code == 101 and problem is None:
            self._open()
            return
        text = response.body.decode(errors="replace").strip() if response.body else ""
        self._reason = ProtocolError(
            f"{self.where} refused the WebSocket upgrade: HTTP {response.status_code} "
            f"{response.reason_phrase}{f': {text}' if text else ''}"
            + (f" ({problem})" if response.status_code == 101 else "")
        )

    def _open(self) -> None:
        self.upgraded.set_result(None)
        self._opened(self)

    def refuse(self, reason: BaseException) -> None:
        """Server: end an upgrade that has not completed in time with ``408 Request Timeout``."""
        ws = self._ws
        self._reason = reason
        if isinstance(ws, ServerProtocol) and ws.state is State.CONNECTING and not ws.eof_sent:
            ws.send_response(ws.reject(http.HTTPStatus.REQUEST_TIMEOUT, f"{reason}\n"))
            self._send_pending()
        else:
            self._tcp.abort()

    # ------------------------------------------------------------- output

    def _send_pending(self) -> None:
        tcp = self._tcp
        ws = self._ws
        for data in ws.data_to_send():
            if data:
                tcp.write(data)
            elif tcp.can_write_eof():
                tcp.write_eof()  # the peer hangs up in turn; then the connection is lost
            else:
                tcp.close()  # TLS cannot half-close
        if self._close_timer is None and ws.close_expected():
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, tcp.abort)

    # --------------------------------------------------- the PB protocol's transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        ws = self._ws
        if self._closing or ws.state is not State.OPEN:
            return  # as asyncio's own transports, once closing: dropped
        if len(data) <= MAX_MESSAGE:
            ws.send_binary(data)
        else:
            for payload in messages(data):
                ws.send_binary(payload)
        tcp = self._tcp
        for chunk in ws.data_to_send():
            tcp.write(chunk)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        """Close with the close code for the PB protocol's ``close_reason`` (1000 if none)."""
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        if ws.state is State.OPEN:
            reason = getattr(self._protocol, "close_reason", None)
            ws.send_close(close_code(reason), close_text(reason))
            self._send_pending()
        elif ws.state is State.CONNECTING:
            self._tcp.close()

    def abort(self) -> None:
        """Drop the connection; say why in a close frame if nothing else waits to go out."""
        tcp = self._tcp
        if self._ws.state is State.OPEN and not self._closing and not tcp.get_write_buffer_size():
            self.close()
            tcp.close()  # flushes the close frame, then hangs up without waiting for the peer's
        else:
            self._closing = True
            tcp.abort()

    def is_closing(self) -> bool:
        return self._closing or self._tcp is None or self._tcp.is_closing()

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The TCP transport's extra info, plus ``"websocket_path"`` (the path upgraded on)."""
        if name == "websocket_path":
            return self._path
        return self._tcp.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def pause_reading(self) -> None:
        self._tcp.pause_reading()

    def resume_reading(self) -> None:
        self._tcp.resume_reading()

    def is_reading(self) -> bool:
        return bool(self._tcp.is_reading())

    def get_write_buffer_size(self) -> int:
        return int(self._tcp.get_write_buffer_size())

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._tcp.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tcp.set_write_buffer_limits(high, low)

    def __repr__(self) -> str:
        return f"<pbnb.WebSocketTransport {self.where} {self._ws.state.name}>"
