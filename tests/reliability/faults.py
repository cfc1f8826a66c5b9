"""Rows for faults: peers that die, reset, stop reading, trickle or fall silent."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import sys
import time

import msgpack

import pbnb as pb
from pbnb.core import serialize
from pbnb.core.wire import PREAMBLE, Kind, encode_frame

from .harness import ROOT, WAIT, Case, Row, Solo, run_module, until


async def client_killed(count: int = 10) -> Row:
    async with Case(f"fault: {count} clients SIGKILLed mid-call") as case:
        processes = [await run_module("reliability.hang_client", str(case.server.port)) for _ in range(count)]
        try:
            for process in processes:
                await asyncio.wait_for(process.stdout.readline(), WAIT)
            case.connections += count
            case.calls += 3 * count
            connections = list(case.server.connections)
        finally:
            for process in processes:
                process.send_signal(signal.SIGKILL)
                await process.wait()
        await until(lambda: len(case.server.connections) == 1)
        leftovers = sum(sum(c.broker.table_sizes().values()) for c in connections if c.closed.done())
        tasks = sum(len(c._tasks) for c in connections)
        ok = leftovers == 0 and tasks == 0
        return await case.finish(f"all {count} server connections closed, {leftovers} table entries left", ok)


async def server_killed() -> Row:
    measure = Solo()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests" / "procs" / "serve_root.py"),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        _word, port = (await asyncio.wait_for(process.stdout.readline(), WAIT)).decode().split()
        client = await pb.connect("127.0.0.1", int(port))
        root = await client.getRootObject()
        call = root.callRemote("hang")
        await asyncio.wait_for(process.stdout.readline(), WAIT)  # HANGING
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    outcome = ""
    try:
        await asyncio.wait_for(call, WAIT)
    except pb.PBConnectionLost as exc:
        outcome = f"pending call: PBConnectionLost ({exc})"
    try:
        await root.callRemote("hang")
    except pb.DeadReferenceError:
        outcome += "; later call: DeadReferenceError"
    ok = "DeadReferenceError" in outcome and not any(client.broker.table_sizes().values())
    return measure.row("fault: server SIGKILLed mid-call", 1, 2, outcome, ok)


async def reset() -> Row:
    async with Case("fault: connection reset (RST) mid-call") as case:
        client, root = await case.client()
        call = root.callRemote("hang")
        await root.callRemote("echo", 0)
        sock = client.connection.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.connection.transport.abort()
        lost = False
        try:
            await asyncio.wait_for(call, WAIT)
        except pb.PBConnectionLost:
            lost = True
        await until(lambda: len(case.server.connections) == 1)
        case.calls += 2
        return await case.finish(
            "client: PBConnectionLost; server connection closed, its call cancelled", lost
        )


async def stalled_reader(batches: int = 200) -> Row:
    async with Case("fault: peer stops reading (4 KiB answers)") as case:
        reader, writer = await case.raw()
        case.send(writer, encode_frame([Kind.ROOT, 1]))
        await until(lambda: len(case.server.connections) == 2)
        connection = case.attacker()
        args = msgpack.packb([[4096], {}])
        high_water = connection.transport.get_write_buffer_limits()[1]

        def held_back() -> bool:
            # Not reading because answers pile up, not merely between the turns of a long read.
            transport = connection.transport
            return not transport.is_reading() and transport.get_write_buffer_size() > high_water

        sent = 0
        while not held_back() and sent < batches * 1000:
            case.send(
                writer,
                b"".join(
                    encode_frame([Kind.CALL, n, 1, "blob", serialize.PLAIN], args)
                    for n in range(sent + 2, sent + 1002)
                ),
            )
            sent += 1000
            await asyncio.sleep(0)
        paused = held_back()
        buffered = connection.transport.get_write_buffer_size()
        bystander_ok = await case.bystander_ok(100)
        answers = 0

        async def drain() -> None:
            nonlocal answers
            await reader.readexactly(len(PREAMBLE))
            while answers < sent + 1:
                frame = await reader.readexactly(int.from_bytes(await reader.readexactly(4), "big"))
                header = msgpack.unpackb(frame[2 : 2 + int.from_bytes(frame[:2], "big")])
                answers += header[0] == Kind.ANSWER

        await asyncio.wait_for(drain(), WAIT * 4)
        writer.close()
        case.calls += sent
        ok = paused and bystander_ok and answers == sent + 1 and buffered < 64 << 20
        return await case.finish(
            f"server stopped reading after {sent:,} calls with {buffered / 2**20:.1f} MiB buffered; "
            f"bystander served meanwhile; all {answers:,} answered once the peer read again",
            ok,
        )


async def slow_peer(interval: float = 1.0, bystander_calls: int = 2000) -> Row:
    async with Case(f"fault: peer sends 1 byte every {interval:g}s") as case:
        reader, writer = await case.raw()
        frame = encode_frame([Kind.ROOT, 1])
        complete = asyncio.Event()

        async def trickle() -> None:
            for byte in frame:
                case.send(writer, bytes([byte]))
                await asyncio.sleep(interval)
            complete.set()

        baseline_started = time.perf_counter()
        await case.bystander_ok(bystander_calls)
        baseline = time.perf_counter() - baseline_started
        slow = asyncio.create_task(trickle())
        during_started = time.perf_counter()
        await case.bystander_ok(bystander_calls)
        during = time.perf_counter() - during_started
        finished_first = not complete.is_set()
        await slow
        await asyncio.wait_for(reader.readexactly(len(PREAMBLE)), WAIT)
        writer.close()
        return await case.finish(
            f"bystander's {bystander_calls} calls done before the slow peer's {len(frame)}-byte frame "
            f"({during * 1000:.0f} ms vs {baseline * 1000:.0f} ms without it)",
            finished_first,
        )


async def silent_peer(keepalive: float = 1.0) -> Row:
    timeout = 3 * keepalive
    async with Case(
        f"fault: silent peer (keepalive {keepalive:g}s, timeout {timeout:g}s)",
        keepalive=keepalive,
        dead_peer_timeout=timeout,
    ) as case:
        _reader, writer = await case.raw()
        await until(lambda: len(case.server.connections) == 2)
        silent = case.attacker()
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.shield(silent.closed), WAIT)
        detected = time.perf_counter() - started
        ok = isinstance(silent.close_reason, pb.PBConnectionLost) and not any(
            silent.broker.table_sizes().values()
        )
        writer.close()
        # The bystander answers pings, so it is still connected after several timeouts.
        return await case.finish(f"dropped after {detected:.1f}s: {silent.close_reason}", ok)


async def trickle(interval: float = 0.5, keepalive: float = 1.0) -> Row:
    """A peer that sends a byte now and then, never finishing a frame, is not alive."""
    timeout = 3 * keepalive
    async with Case(
        f"fault: peer trickles 1 byte every {interval:g}s (keepalive {keepalive:g}s, timeout {timeout:g}s)",
        keepalive=keepalive,
        dead_peer_timeout=timeout,
    ) as case:
        _reader, writer = await case.raw()
        await until(lambda: len(case.server.connections) == 2)
        trickler = case.attacker()
        frame = encode_frame([Kind.CALL, 2, 1, "echo", serialize.PLAIN], msgpack.packb([["x" * 100], {}]))
        started = time.perf_counter()

        async def drip() -> None:
            for byte in frame:
                case.send(writer, bytes([byte]))
                await asyncio.sleep(interval)

        dripping = asyncio.create_task(drip())
        await asyncio.wait_for(asyncio.shield(trickler.closed), WAIT)
        dropped_after = time.perf_counter() - started
        dripping.cancel()
        writer.close()
        ok = isinstance(trickler.close_reason, pb.PBConnectionLost) and dropped_after < WAIT
        return await case.finish(f"dropped after {dropped_after:.1f}s: {trickler.close_reason}", ok)
