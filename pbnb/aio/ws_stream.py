"""The PB byte stream over WebSocket: how it is cut into messages and how a close is coded.

Shared by the transport on the ``websockets`` library (:mod:`pbnb.aio.websocket`)
and the one on a browser's ``WebSocket`` (:mod:`pbnb.aio.browser`); imports
neither, so it loads in Pyodide. ``docs/protocol.md`` states the same rules.
"""

from __future__ import annotations

from ..errors import LimitExceeded, PBConnectionLost, PBError, ProtocolError, ServerFull

#: The most bytes of the PB stream one binary WebSocket message carries. A
#: sender cuts its output into messages of at most this size, and a receiver
#: refuses a longer message (close code 1009) before buffering it: PB frames
#: may be far larger than this, and their own limit (``max_frame``) is checked
#: as their bytes arrive, as over TCP.
MAX_MESSAGE = 1024 * 1024

NORMAL = 1000
GOING_AWAY = 1001  # the peer went silent or stopped reading (keepalive, max_send_buffer)
UNSUPPORTED_DATA = 1003  # a text message: PB travels in binary messages only
POLICY_VIOLATION = 1008  # PB refused the stream (ProtocolError, a failed handshake)
MESSAGE_TOO_BIG = 1009  # a message over MAX_MESSAGE, or a PB frame over max_frame
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013  # ServerFull
# Browsers may send only 1000 and 3000-4999: they send 4000 + (code - 1000) instead.
BROWSER_OFFSET = 3000

# A close reason is at most 123 bytes of UTF-8 (RFC 6455, 5.5: 125 bytes with the code).
_MAX_REASON = 123


def close_code(reason: BaseException | None) -> int:
    """The close code that tells the peer why this side closes (``reason`` None: a normal close)."""
    if reason is None:
        return NORMAL
    if isinstance(reason, ServerFull):
        return TRY_AGAIN_LATER
    if isinstance(reason, LimitExceeded):
        return MESSAGE_TOO_BIG
    if isinstance(reason, PBConnectionLost):
        return GOING_AWAY
    if isinstance(reason, PBError):
        return POLICY_VIOLATION
    return INTERNAL_ERROR


def close_text(reason: BaseException | None) -> str:
    """A close reason short enough for a close frame (cut at a character boundary)."""
    if reason is None:
        return ""
    text = f"{type(reason).__name__}: {reason}"
    data = text.encode()
    if len(data) <= _MAX_REASON:
        return text
    return data[: _MAX_REASON - 3].decode(errors="ignore") + "..."


def closed_error(code: int | None, reason: str, where: str) -> BaseException | None:
    """What a close frame from the peer means here: None for a normal close, else the error."""
    if code is None or code in (NORMAL, GOING_AWAY, 1005):  # 1005: a close frame without a code
        return None
    if code >= 4000:
        code -= BROWSER_OFFSET
    said = f"{where} closed the WebSocket with code {code}{f' ({reason})' if reason else ''}"
    if code == TRY_AGAIN_LATER:
        return ServerFull(said)
    if code == MESSAGE_TOO_BIG:
        return LimitExceeded(said)
    return ProtocolError(said)


def messages(data: bytes | bytearray | memoryview) -> list[memoryview]:
    """Cut outgoing stream bytes into message payloads of at most MAX_MESSAGE bytes."""
    view = memoryview(data)
    if len(view) <= MAX_MESSAGE:
        return [view]
    return [view[start : start + MAX_MESSAGE] for start in range(0, len(view), MAX_MESSAGE)]
