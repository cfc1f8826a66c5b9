"""pbnb over WebSocket: the same server and workloads as ``pbnb_peer``, the client on ``ws://``."""

from __future__ import annotations

import pbnb

from . import pbnb_peer
from .pbnb_peer import DRIVER, serve

__all__ = ["DRIVER", "Client", "serve"]


class Client(pbnb_peer.Client):
    async def connect(self, port: int) -> None:
        self._client = await pbnb.connect(f"ws://127.0.0.1:{port}/")
        self._root = await self._client.getRootObject()
