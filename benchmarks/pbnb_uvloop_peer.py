"""pbnb on uvloop (the ``speed`` extra): ``pbnb_peer``'s server and client on uvloop's event loop."""

from __future__ import annotations

import uvloop

from . import pbnb_peer
from .pbnb_peer import Client

__all__ = ["DRIVER", "Client", "serve"]

DRIVER = "uvloop"


def serve() -> None:
    uvloop.run(pbnb_peer.serving())
