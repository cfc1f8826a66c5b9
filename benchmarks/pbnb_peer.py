"""pbnb itself: a Root with an ``echo`` method, called through a RemoteReference."""

from __future__ import annotations

import asyncio
import time

import pbnb

from .harness import announce
from .workloads import SMALL, WINDOW

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

    async def close(self) -> None:
        await self._client.close()

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

    async def echoes(self, value: object, count: int) -> tuple[float, object]:
        call = self._root.callRemote
        start = time.perf_counter()
        for _ in range(count):
            result = await call("echo", value)
        return time.perf_counter() - start, result
