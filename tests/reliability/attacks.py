"""Rows for attacks: garbage, mutated sessions, crowds of idle sockets."""

from __future__ import annotations

import asyncio
import importlib.util
import random
from typing import Any

from pbnb.core.wire import PREAMBLE, Kind

from .harness import ROOT, WAIT, Case, Row, read_frames, until


async def garbage(count: int = 400) -> Row:
    openings = [b"GET / HTTP/1.1\r\n\r\n", b"PBNB\x00\x09\x00\x00", b"\x00" * 64, PREAMBLE + b"\xff" * 16]
    async with Case(f"attack: {count} connections of garbage / wrong versions") as case:
        goodbyes = 0
        for i in range(count):
            reader, writer = await case.raw(openings[i % len(openings)])
            headers = await read_frames(reader)
            goodbyes += bool(headers) and headers[-1][0] == Kind.GOODBYE
            writer.close()
        return await case.finish(f"{goodbyes} of {count} got a GOODBYE naming the problem", goodbyes == count)


def load_fuzz_harness() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_broker", ROOT / "fuzz" / "fuzz_broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _fuzz_echo(root: Any, value: Any) -> Any:
    """The fuzz root's echo answers [args, kwargs]."""
    args, _ = await root.callRemote("echo", value)
    return args[0]


async def fuzzed(count: int = 1000) -> Row:
    harness = load_fuzz_harness()
    seeds = harness.seed_streams()
    rng = random.Random(7)
    async with Case(
        f"attack: {count} connections of mutated sessions",
        harness.FuzzRoot(),
        echo=_fuzz_echo,
        registry=harness.registry,
    ) as case:
        for _ in range(count):
            stream = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 8)):
                stream[rng.randrange(len(stream))] = rng.randrange(256)
            reader, writer = await case.raw(bytes(stream))
            writer.write_eof()
            try:
                await asyncio.wait_for(reader.read(), 10)
            except (TimeoutError, ConnectionError):
                pass
            writer.close()
        await until(lambda: len(case.server.connections) == 1)
        return await case.finish("server kept serving; every mutated connection closed", True)


async def idle_flood(count: int = 1000, keepalive: float = 1.0) -> Row:
    async with Case(
        f"attack: {count} idle connections (no handshake)",
        keepalive=keepalive,
        dead_peer_timeout=3 * keepalive,
    ) as case:
        sockets = [await asyncio.open_connection("127.0.0.1", case.server.port) for _ in range(count)]
        case.connections += count
        # Each was accepted once the server's preamble arrives on it. (Waiting to see all
        # of them live at once would race the keepalive, which may drop the first ones
        # before the last are open on a loaded machine.)
        for reader, _ in sockets:
            await asyncio.wait_for(reader.readexactly(len(PREAMBLE)), WAIT)
        peak = case.memory.peak
        await until(lambda: len(case.server.connections) == 1, WAIT)
        for _, writer in sockets:
            writer.close()
        return await case.finish(
            f"all {count} dropped by keepalive (peak {peak:.0f} MiB while held); bystander stayed", True
        )
