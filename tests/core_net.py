"""Helpers for the core tests over real loopback sockets."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pbnb as pb
from pbnb.aio.connection import Connection

# A hang detector, not an assertion: generous, so a loaded 2-core CI machine never trips it.
TIMEOUT = 60.0


@dataclass
class Session:
    """A server, one client connected to it, and the client's reference to the server's root."""

    server: pb.Server
    client: pb.Client
    root: pb.RemoteReference

    @property
    def server_side(self) -> Connection:
        """The server's end of the one connection."""
        (connection,) = self.server.connections
        return connection


@asynccontextmanager
async def serving(root: Any, **options: Any) -> AsyncIterator[pb.Server]:
    """Serve ``root`` on a free loopback port; close the server afterwards."""
    server = await pb.serve(root, host="127.0.0.1", port=0, **options)
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def connected(
    root: Any,
    *,
    client_root: Any = None,
    server_options: dict[str, Any] | None = None,
    client_options: dict[str, Any] | None = None,
) -> AsyncIterator[Session]:
    """Serve ``root`` on a free loopback port, connect a client, and close both afterwards."""
    async with serving(root, **(server_options or {})) as server:
        client = await pb.connect("127.0.0.1", server.port, root=client_root, **(client_options or {}))
        try:
            ref = await within(client.getRootObject())
            yield Session(server, client, ref)
        finally:
            await client.close()


async def within(awaitable: Any, timeout: float = TIMEOUT) -> Any:
    """Await with a timeout, so a hang fails the test instead of stalling it."""
    return await asyncio.wait_for(awaitable, timeout)


def released(connection: Connection, obj: Any) -> asyncio.Event:
    """An event set when the peer of ``connection`` releases ``obj``."""
    event = asyncio.Event()
    connection.on_release(obj, event.set)
    return event


async def collect_and_wait(event: asyncio.Event) -> None:
    """Collect garbage, then wait for the release it should cause to reach the owner."""
    gc.collect()
    await within(event.wait())
