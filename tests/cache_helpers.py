"""Shared pieces of the Cacheable tests: a recording Cacheable, its copy, and socket plumbing."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import pbnb as pb
from pbnb.aio.connection import Connection

# A hang detector, not an assertion: generous, so a loaded 2-core CI machine never trips it.
TIMEOUT = 60.0


class Waiting:
    """Lets a test await a condition that remote calls make true (no sleeping)."""

    def _waiters(self) -> list[tuple[Callable[[], bool], asyncio.Future]]:
        if "_pending_waits" not in self.__dict__:
            self.__dict__["_pending_waits"] = []
        return self.__dict__["_pending_waits"]

    def _wake(self) -> None:
        for condition, waiter in self._waiters():
            if not waiter.done() and condition():
                waiter.set_result(None)

    async def wait_until(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        if condition():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters().append((condition, waiter))
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters().remove((condition, waiter))


class Board(Waiting, pb.Cacheable):
    """A Cacheable that records every hook call."""

    def __init__(self, text: str = "hello"):
        self.text = text
        self.observed: list[tuple[Any, Any]] = []
        self.stopped: list[tuple[Any, Any]] = []

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        self.observed.append((perspective, observer))
        label = getattr(perspective, "name", None)
        return {"text": self.text if label is None else f"{self.text} for {label}"}

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        self.stopped.append((perspective, observer))
        self._wake()

    async def wait_stopped(self, count: int = 1) -> None:
        """Wait until stoppedObserving ran ``count`` times in all."""
        await self.wait_until(lambda: len(self.stopped) >= count)


class BoardCopy(Waiting, pb.RemoteCache):
    """The peer's copy of a Board; it logs every observe_ call it receives."""

    def __init__(self) -> None:
        raise AssertionError("a RemoteCache must be built without calling __init__")

    def setCopyableState(self, state: Any) -> None:
        self.text = state["text"]
        self.log: list[Any] = []

    def observe_append(self, item: Any) -> str:
        self.log.append(item)
        self._wake()
        return f"{len(self.log)} items"

    def observe_text(self, text: str) -> None:
        self.text = text

    async def wait_for_items(self, count: int) -> None:
        await self.wait_until(lambda: len(self.log) >= count)


pb.setUnjellyableForClass(Board, BoardCopy)


class Owner(pb.Root):
    """A root that hands out one Board and checks what comes back."""

    def __init__(self, board: pb.Cacheable):
        self.board = board

    def remote_get(self) -> pb.Cacheable:
        return self.board

    def remote_twice(self) -> list[pb.Cacheable]:
        return [self.board, {"again": self.board}]

    def remote_is_mine(self, thing: Any) -> bool:
        return thing is self.board

    def remote_ping(self) -> str:
        return "pong"


def server_side(server: pb.Server, client: pb.Client) -> Connection:
    """The server's Connection for ``client``."""
    host, port = client.connection.transport.get_extra_info("sockname")[:2]
    for connection in server.connections:
        if connection.peer == f"{host}:{port}":
            return connection
    raise LookupError(f"the server has no connection from {host}:{port}")


async def collect_and_settle(*brokers_of: Any) -> None:
    """Collect garbage, then let the DECACHE/UNCACHED round trips finish."""
    gc.collect()  # its weakref callbacks queue the DECACHEs ahead of the pings below
    for client in brokers_of:
        root = await client.getRootObject()
        await asyncio.wait_for(root.callRemote("ping"), TIMEOUT)


def empty_tables(broker: Any) -> bool:
    # The live observers' set (the owner's quick test in a broadcast) empties with its table.
    return all(count == 0 for count in broker.table_sizes().values()) and not broker._tables.observers
