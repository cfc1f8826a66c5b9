"""pbnb: the Perspective Broker on asyncio and msgpack, at home in Jupyter.

The names here mirror Twisted's ``twisted.spread.pb`` so a PB program ports by
changing imports and awaiting instead of adding callbacks. Login lives in
:mod:`pbnb.cred`; the cred names Twisted's ``pb`` module offered (``IPerspective``,
``Portal``, ``Anonymous``, ...) are here too. The notebook layer loads with
``%load_ext pbnb``.
"""

from __future__ import annotations

from .aio.address import PB_PORT
from .aio.client import Client, connect
from .aio.connection import CallFuture, current_perspective
from .aio.progress import progress
from .aio.reconnect import ReconnectingClient, ReconnectStatus
from .aio.server import Server, current_server, serve
from .aio.streams import RemoteIterator
from .core.flavors import (
    Avatar,
    Cacheable,
    Copyable,
    CopyRegistry,
    IPBRoot,
    Referenceable,
    RemoteCache,
    RemoteCopy,
    Root,
    Viewable,
    allowInstancesOf,
    setUnjellyableForClass,
    survives_disconnect,
)
from .core.observing import ObservedCacheable, ObservedRemoteCache, WritableCacheable
from .core.progress import Progress
from .core.reference import CacheObserver, RemoteReference
from .core.wire import Limits
from .cred import Anonymous, IAnonymous, ICredentials, IPerspective, Portal
from .errors import (
    CallCancelled,
    DeadReferenceError,
    Error,
    InsecureJelly,
    LimitExceeded,
    NoSuchMethod,
    PBConnectionLost,
    PBError,
    PipelineError,
    ProtocolError,
    ReadOnlyField,
    RemoteError,
    SerializationError,
    ServerFull,
)

__version__ = "0.1.0"

#: The port PB servers listen on by default, as in Twisted (``python -m pbnb serve`` uses it,
#: and so does a ``pb://host`` URL without a port).
portno = PB_PORT

__all__ = [
    "Anonymous",
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
    "IAnonymous",
    "ICredentials",
    "IPBRoot",
    "IPerspective",
    "InsecureJelly",
    "LimitExceeded",
    "Limits",
    "NoSuchMethod",
    "ObservedCacheable",
    "ObservedRemoteCache",
    "PBConnectionLost",
    "PBError",
    "PipelineError",
    "Portal",
    "Progress",
    "ProtocolError",
    "ReadOnlyField",
    "ReconnectStatus",
    "ReconnectingClient",
    "Referenceable",
    "RemoteCache",
    "RemoteCopy",
    "RemoteError",
    "RemoteIterator",
    "RemoteReference",
    "Root",
    "SerializationError",
    "Server",
    "ServerFull",
    "Viewable",
    "WritableCacheable",
    "allowInstancesOf",
    "connect",
    "current_perspective",
    "current_server",
    "portno",
    "progress",
    "serve",
    "setUnjellyableForClass",
    "survives_disconnect",
]


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext pbnb``: register the magics (imported only now)."""
    from .notebook._magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext pbnb``."""
    from .notebook._magics import unload_ipython_extension as unload

    unload(ipython)
