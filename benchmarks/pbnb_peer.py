"""pbnb itself: a Root with an ``echo`` method, called through a RemoteReference."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pbnb

from .harness import announce
from .workloads import DICTS, MIB, NESTED, SMALL, WINDOW, check_dicts, check_mib, check_nested

DRIVER = "asyncio"


class EchoRoot(pbnb.Root):
    def remote_echo(self, value: object) -> object:
        return value


async def serving() -> None:
    """Serve an EchoRoot on a free port until killed (on whichever loop runs it)."""
    server = await pbnb.serve(EchoRoot(), port=0)
    announce(server.port)
    await server.serve_forever()


def serve() -> None:
    asyncio.run(serving())


class Client:
    async def connect(self, port: int) -> None:
        self._client = await pbnb.connect("127.0.0.1", port)
        self._root = await self._client.getRootObject()

    async def sequential(self, count: int) -> float:
        call = self._root.callRemote
        start = time.perf_counter()
        for _ in range(count):
            await call("echo", SMALL)
        return time.perf_counter() - start

    async def pipelined(self, batches: int) -> float:
        call = self._root.callRemote
        start = time.perf_counter()
        for _ in range(batches):
            await asyncio.gather(*[call("echo", SMALL) for _ in range(WINDOW)])
        return time.perf_counter() - start

    async def dicts(self, count: int) -> float:
        return await self._echoes(DICTS, count, check_dicts)

    async def nested(self, count: int) -> float:
        return await self._echoes(NESTED, count, check_nested)

    async def mib(self, count: int) -> float:
        return await self._echoes(MIB, count, check_mib)

    async def _echoes(self, value: object, count: int, check: Callable[[object], None]) -> float:
        call = self._root.callRemote
        start = time.perf_counter()
        for _ in range(count):
            result = await call("echo", value)
        elapsed = time.perf_counter() - start
        check(result)
        return elapsed
