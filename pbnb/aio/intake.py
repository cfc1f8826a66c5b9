"""A server's new connection until its first bytes say what it speaks: raw PB or HTTP.

A PB client opens with the preamble ``PBNB...``, a WebSocket client with an
HTTP request line (``GET /path HTTP/1.1``). So a server that takes both on one
port waits for the client's first bytes before it speaks, and then hands the
connection to its PB ``Connection``, directly or through a
``WebSocketTransport`` that carries PB above the upgrade.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..core.wire import MAGIC

log = logging.getLogger("pbnb")

_HTTP_METHOD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ ")
_SNIFFED = len(MAGIC)


def speaks_http(head: bytes) -> bool | None:
    """Whether a client opening with ``head`` sends HTTP (True) or PB (False); None: too few bytes.

    Anything that is neither goes to PB, whose broker says what was wrong with it.
    """
    start = head[:_SNIFFED]
    if start == MAGIC[: len(start)]:  # the preamble, or so far a prefix of it
        return False if len(start) == _SNIFFED else None
    if all(byte in _HTTP_METHOD_BYTES for byte in start):  # "GET ", "POST", ...
        return True if len(start) == _SNIFFED else None
    return False


class Intake(asyncio.Protocol):
    """Holds a new connection until its first bytes say what it speaks.

    Then ``decided(http, head)`` runs with what arrived so far, and the caller
    installs the protocol that serves it. ``lost()`` runs if the client leaves
    before that. The server's handshake timeout covers this wait.
    """

    def __init__(self, peer: str, decided: Callable[[bool, bytes], None], lost: Callable[[], None]):
        self._peer = peer
        self._decided = decided
        self._lost = lost
        self._head = b""
        self._done = False

    def data_received(self, data: bytes) -> None:
        self._head += data
        http = speaks_http(self._head)
        if http is not None:
            self._done = True
            self._decided(http, self._head)

    def eof_received(self) -> bool | None:
        log.info("%s hung up before it said anything", self._peer)
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._done:
            self._lost()
