"""pbnb: the Perspective Broker on asyncio and msgpack, at home in Jupyter.

The names here mirror Twisted's ``twisted.spread.pb`` so a PB program ports by
changing imports and awaiting instead of adding callbacks. Login lives in
:mod:`pbnb.cred`; the notebook layer loads with ``%load_ext pbnb``.
"""

from __future__ import annotations

from .aio.client import Client, connect
from .aio.connection import CallFuture, current_perspective
from .aio.reconnect import ReconnectingClient, ReconnectStatus
from .aio.server import Server, serve
from .core.flavors import (
    Avatar,
    Cacheable,
    Copyable,
    CopyRegistry,
    Referenceable,
    RemoteCache,
    RemoteCopy,
    Root,
    Viewable,
    setUnjellyableForClass,
)
from .core.observing import ObservedCacheable, ObservedRemoteCache
from .core.reference import CacheObserver, RemoteReference
from .core.wire import Limits
from .errors import (
    CallCancelled,
    DeadReferenceError,
    Error,
    InsecureJelly,
    LimitExceeded,
    NoSuchMethod,
    PBConnectionLost,
    PBError,
    ProtocolError,
    RemoteError,
    SerializationError,
    ServerFull,
)

__version__ = "0.1.0"

__all__ = [
    "Avatar",
    "CacheObserver",
    "Cacheable",
    "CallCancelled",
    "CallFuture",
    "Client",
    "CopyRegistry",
    "Copyable",
    "DeadReferenceError",
    "Error",
    "InsecureJelly",
    "LimitExceeded",
    "Limits",
    "NoSuchMethod",
    "ObservedCacheable",
    "ObservedRemoteCache",
    "PBConnectionLost",
    "PBError",
    "ProtocolError",
    "ReconnectStatus",
    "ReconnectingClient",
    "Referenceable",
    "RemoteCache",
    "RemoteCopy",
    "RemoteError",
    "RemoteReference",
    "Root",
    "SerializationError",
    "Server",
    "ServerFull",
    "Viewable",
    "connect",
    "current_perspective",
    "serve",
    "setUnjellyableForClass",
]


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext pbnb``: register the magics (imported only now)."""
    from .notebook._magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext pbnb``."""
    from .notebook._magics import unload_ipython_extension as unload

    unload(ipython)
