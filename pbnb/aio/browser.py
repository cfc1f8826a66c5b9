"""PB over the browser's ``WebSocket``, for pbnb in Pyodide (JupyterLite, a web page).

A browser has no sockets and Pyodide no threads: the page's ``WebSocket`` does
the upgrade, framing and closing, and its events run on Pyodide's event loop
(WebLoop). ``BrowserWebSocketTransport`` presents that object to the PB
``Connection`` as an asyncio transport, so ``await pb.connect("ws://...")``
works there as anywhere. The stream rules (1 MiB messages, close codes) are
those of :mod:`pbnb.aio.ws_stream`. Nothing here imports the ``websockets``
library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import PBConnectionLost, ProtocolError
from .address import Address
from .ws_stream import (
    BROWSER_OFFSET,
    NORMAL,
    UNSUPPORTED_DATA,
    close_code,
    close_text,
    closed_error,
    messages,
)

_CLOSING = 2  # WebSocket.readyState values: CONNECTING 0, OPEN 1, CLOSING 2, CLOSED 3


class BrowserWebSocketTransport(asyncio.Transport):
    """An asyncio transport over a JavaScript ``WebSocket``; the PB protocol is made on open."""

    def __init__(self, url: str, make_protocol: Callable[[], asyncio.BaseProtocol]):
        super().__init__()
        from pyodide.ffi import create_proxy, to_js

        import js

        self._url = url
        self._make_protocol = make_protocol
        self._to_js = to_js
        self._protocol: Any = None
        self._closing = False
        self._reason: BaseException | None = None
        #: Done once the WebSocket is open (the PB protocol is made); its error if it never opens.
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._socket = js.WebSocket.new(url)
        self._socket.binaryType = "arraybuffer"
        # Proxies keep the Python handlers callable from JavaScript; destroyed on close.
        self._handlers = {
            name: create_proxy(handler)
            for name, handler in (
                ("open", self._on_open),
                ("message", self._on_message),
                ("error", self._on_error),
                ("close", self._on_close),
            )
        }
        for name, handler in self._handlers.items():
            self._socket.addEventListener(name, handler)

    # ------------------------------------------------------- the browser's events

    def _on_open(self, event: Any) -> None:
        self._protocol = self._make_protocol()
        self._protocol.connection_made(self)
        if not self.upgraded.done():
            self.upgraded.set_result(None)

    def _on_message(self, event: Any) -> None:
        data = event.data
        if isinstance(data, str):  # a text message: PB travels in binary messages only
            self._reason = ProtocolError(f"{self._url} sent a text WebSocket message; pbnb takes binary only")
            self._close(UNSUPPORTED_DATA, self._reason)
            return
        if self._protocol is not None and self._reason is None:
            self._protocol.data_received(data.to_bytes())

    def _on_error(self, event: Any) -> None:
        pass  # a close event follows and says what can be said (listening also keeps Node's ws quiet)

    def _on_close(self, event: Any) -> None:
        reason = self._reason or closed_error(event.code, event.reason, self._url)
        if reason is None and not event.wasClean and not self._closing:
            # 1006: the browser gives no detail (a refused upgrade, a dead peer or proxy).
            reason = PBConnectionLost(f"the WebSocket to {self._url} closed abnormally (code {event.code})")
        if not self.upgraded.done():
            if reason is None or not event.wasClean:  # the browser says no more than 1006
                reason = PBConnectionLost(
                    f"could not open a WebSocket to {self._url}: nothing listens there, the upgrade "
                    "was refused, or the server does not trust this page's origin "
                    "(websocket_origins); the browser does not say which"
                )
            self.upgraded.set_exception(reason)
            self.upgraded.exception()  # the opener reports it
        if self._protocol is not None:
            self._protocol.connection_lost(reason)
        for name, handler in self._handlers.items():
            self._socket.removeEventListener(name, handler)
            handler.destroy()
        self._handlers.clear()

    # --------------------------------------------------- the PB protocol's transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        for payload in messages(data):
            self._socket.send(self._to_js(payload))  # one copy, into a Uint8Array

    def close(self) -> None:
        """Close with the code for the PB protocol's ``close_reason`` (1000 if none)."""
        self._close(None, getattr(self._protocol, "close_reason", None))

    def abort(self) -> None:
        self.close()

    def _close(self, code: int | None, reason: BaseException | None) -> None:
        if self._closing:
            return
        self._closing = True
        code = close_code(reason) if code is None else code
        if code != NORMAL:
            code += BROWSER_OFFSET  # browsers may send only 1000 and 3000-4999
        self._socket.close(code, close_text(reason))

    def is_closing(self) -> bool:
        return self._closing or self._socket.readyState >= _CLOSING

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"peername"`` is the URL (a page knows no addresses)."""
        return self._url if name == "peername" else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def pause_reading(self) -> None:
        pass  # a browser WebSocket cannot stop reading; its messages are queued here instead

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return not self._closing

    def get_write_buffer_size(self) -> int:
        return int(self._socket.bufferedAmount)

    def __repr__(self) -> str:
        return f"<pbnb.BrowserWebSocketTransport {self._url}>"


async def open_browser_websocket(address: Address, make: Callable[[], Any], timeout: float | None) -> Any:
    """``connect()`` in Pyodide: open the browser's WebSocket, return the PB Connection above it."""
    if not address.websocket:
        raise ValueError(
            f"{address} is raw PB over TCP, which a browser cannot open: connect with a ws:// or wss:// URL "
            "(a pbnb server takes WebSocket clients on the same port)"
        )
    transport = BrowserWebSocketTransport(address.url, make)
    try:
        await asyncio.wait_for(asyncio.shield(transport.upgraded), timeout)
    except BaseException as exc:
        transport.abort()
        if isinstance(exc, TimeoutError):
            raise PBConnectionLost(f"{address} did not open in {timeout}s") from None
        raise
    return transport.get_protocol()
