"""The floor: asyncio streams and msgpack with a 4-byte length prefix, no RPC layer.

Requests are ``[request_id, method, args]`` and answers ``[request_id, result]``;
the server answers in order, so the client reads answers back in order too.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import msgpack

from .harness import announce
from .workloads import SMALL, WINDOW

DRIVER = "asyncio"
#: msgpack has one array type: tuples travel as arrays and come back as lists. The
#: floor keeps msgpack's defaults for them, the least work that moves the same items,
#: which is also what the serialization table's floor does (see benchmarks/README.md).
CARRIES_TUPLES = False
_PREFIX = struct.Struct(">I")
_HIGH_WATER = 256 * 1024


def frame(value: object) -> bytes:
    """``value`` as the floor sends it: msgpack behind a 4-byte big-endian length.

    Aware datetimes go as msgpack's own timestamp ext (and come back as aware UTC
    datetimes), the cheapest way msgpack has to carry them.
    """
    body = msgpack.packb(value, datetime=True)
    return _PREFIX.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next value ``frame`` made, read from ``reader``."""
    (size,) = _PREFIX.unpack(await reader.readexactly(4))
    return msgpack.unpackb(await reader.readexactly(size), timestamp=3)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    methods = {"echo": lambda value: value}
    try:
        while True:
            request_id, method, args = await read_frame(reader)
            writer.write(frame([request_id, methods[method](*args)]))
            if writer.transport.get_write_buffer_size() > _HIGH_WATER:
                await writer.drain()
    except asyncio.IncompleteReadError:
        writer.close()


def serve() -> None:
    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


class Client:
    async def connect(self, port: int) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._next_id = 0

    async def close(self) -> None:
        """Hang up; the server's handler then ends on the end of its stream."""
        self._writer.close()
        await self._writer.wait_closed()

    async def _call(self, value: object) -> object:
        self._next_id += 1
        self._writer.write(frame([self._next_id, "echo", [value]]))
        _, result = await read_frame(self._reader)
        return result

    async def sequential(self, count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            await self._call(SMALL)
        return time.perf_counter() - start

    async def pipelined(self, batches: int) -> float:
        start = time.perf_counter()
        for _ in range(batches):
            for _ in range(WINDOW):
                self._next_id += 1
                self._writer.write(frame([self._next_id, "echo", [SMALL]]))
            for _ in range(WINDOW):
                await read_frame(self._reader)
        return time.perf_counter() - start

    async def echoes(self, value: object, count: int) -> tuple[float, object]:
        start = time.perf_counter()
        for _ in range(count):
            result = await self._call(value)
        return time.perf_counter() - start, result
