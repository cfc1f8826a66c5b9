"""Soak, fault and attack runs against a pbnb server; prints the table in docs/reliability.md.

    .venv/bin/python scripts/reliability.py            # the full run (1,000,000 calls, a few minutes)
    .venv/bin/python scripts/reliability.py --short    # the CI run (under two minutes)

The soak starts a server in this process and client processes that each open
several connections; every client calls in a loop, passing references both
ways and fetching and dropping a Cacheable, and checks every answer. Memory is
this process's resident set (the server's side). Then each limit, fault and
attack is tried against a fresh server with a bystander client that must keep
working. The exit status is non-zero if any row failed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import random
import signal
import socket
import struct
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

import pbnb as pb  # noqa: E402
from pbnb.core import serialize  # noqa: E402
from pbnb.core.wire import PREAMBLE, Kind, encode_frame  # noqa: E402

WAIT = 60.0


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


@dataclass
class Row:
    case: str
    connections: int
    calls: int
    seconds: float
    mem_before: float
    mem_after: float
    result: str
    ok: bool

    def markdown(self) -> str:
        status = "pass" if self.ok else "**FAIL**"
        return (
            f"| {self.case} | {self.connections:,} | {self.calls:,} | {self.seconds:.1f} | "
            f"{self.mem_before:.0f} | {self.mem_after:.0f} | {status}: {self.result} |"
        )


# --------------------------------------------------------------- soak objects


class Item(pb.Referenceable):
    live: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, n: int):
        self.n = n
        Item.live.add(self)

    def remote_value(self) -> int:
        return self.n


class Board(pb.Cacheable):
    def __init__(self) -> None:
        self.observers: list = []
        self.version = 0

    def getTypeToCopyFor(self, perspective: Any) -> str:
        return "reliability.Board"  # the same whether this file runs as a script or a module

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        self.observers.append(observer)
        return {"version": self.version}

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        self.observers.remove(observer)


class BoardCopy(pb.RemoteCache):
    def setCopyableState(self, state: Any) -> None:
        self.version = state["version"]


pb.setUnjellyableForClass("reliability.Board", BoardCopy)


class SoakRoot(pb.Root):
    def __init__(self) -> None:
        self.board = Board()
        self.answered = 0
        self.sent = {"item": 0, "callback": 0, "board": 0}

    def remote_echo(self, value: Any) -> Any:
        self.answered += 1
        return value

    def remote_item(self, n: int) -> Item:
        self.answered += 1
        self.sent["item"] += 1
        return Item(n)

    def remote_take(self, item: Item) -> int:
        self.answered += 1
        return item.n  # the client's reference came home as the Item itself

    async def remote_callback(self, callback: Any, n: int) -> Any:
        self.answered += 1
        self.sent["callback"] += 1
        return await callback.callRemote("twice", n)

    def remote_blob(self, size: int) -> bytes:
        self.answered += 1
        return b"b" * size

    def remote_board(self) -> Board:
        self.answered += 1
        self.sent["board"] += 1
        return self.board

    async def remote_hang(self) -> None:
        await asyncio.get_running_loop().create_future()


class Recorder:
    """Serves one SoakRoot and remembers every connection, to check its tables afterwards."""

    def __init__(self, root: SoakRoot):
        self.root = root
        self.connections: list = []

    def _pb_root_for(self, connection: Any) -> SoakRoot:
        self.connections.append(connection)
        return self.root

    def tables(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for connection in self.connections:
            for name, size in connection.broker.table_sizes().items():
                totals[name] = totals.get(name, 0) + size
        return totals


class Doubler(pb.Referenceable):
    def remote_twice(self, n: int) -> int:
        return 2 * n


# ------------------------------------------------------------- soak: clients


async def soak_client(port: int, calls: int, window: int, rng: random.Random) -> dict[str, int]:
    """One connection making ``calls`` calls, ``window`` at a time; counts what it saw."""
    client = await pb.connect("127.0.0.1", port)
    root = await client.getRootObject()
    doubler = Doubler()
    made = wrong = 0

    async def operation() -> int:
        nonlocal wrong
        n = rng.randrange(1_000_000)
        pick = rng.random()
        if pick < 0.7:
            value = {"n": n, "items": [n, str(n), (n, b"x")]}
            wrong += await root.callRemote("echo", value) != value
            return 1
        if pick < 0.8:
            item = await root.callRemote("item", n)
            wrong += await item.callRemote("value") != n
            wrong += await root.callRemote("take", item) != n
            return 3
        if pick < 0.9:
            wrong += await root.callRemote("callback", doubler, n) != 2 * n
            return 1
        board = await root.callRemote("board")
        wrong += not isinstance(board, BoardCopy)
        return 1

    async def lane() -> None:
        nonlocal made
        while made < calls:
            done = await operation()  # not `made += await ...`: that adds to a stale value
            made += done

    await asyncio.gather(*(lane() for _ in range(window)))
    await client.close()
    leftovers = sum(client.broker.table_sizes().values())
    return {"calls": made, "wrong": wrong, "leftovers": leftovers}


async def worker(port: int, clients: int, calls: int, window: int, seed: int) -> None:
    rng = random.Random(seed)
    results = await asyncio.gather(
        *(soak_client(port, calls, window, random.Random(rng.random())) for _ in range(clients)),
        return_exceptions=True,
    )
    summary = {"calls": 0, "wrong": 0, "leftovers": 0, "errors": []}
    for result in results:
        if isinstance(result, BaseException):
            summary["errors"].append(repr(result))
        else:
            for key in ("calls", "wrong", "leftovers"):
                summary[key] += result[key]
    print(json.dumps(summary), flush=True)


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE
    )


# ------------------------------------------------------------------ soak run


async def soak(clients: int, processes: int, total_calls: int) -> Row:
    gc.collect()
    before = rss_mib()
    recorder = Recorder(SoakRoot())
    server = await pb.serve(recorder, keepalive=5.0)
    per_process = clients // processes
    per_client = total_calls // (per_process * processes)
    started = time.perf_counter()
    workers = [
        await spawn("--worker", str(server.port), str(per_process), str(per_client), str(seed))
        for seed in range(processes)
    ]
    samples: list[tuple[int, float]] = []

    async def sample() -> None:
        while True:
            samples.append((recorder.root.answered, rss_mib()))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    outputs = await asyncio.gather(*(process.stdout.read() for process in workers))
    for process in workers:
        await process.wait()
    duration = time.perf_counter() - started
    await until(lambda: not server.connections)
    sampler.cancel()
    summaries = [json.loads(output) for output in outputs]
    calls = sum(summary["calls"] for summary in summaries)
    errors = [error for summary in summaries for error in summary["errors"]]
    wrong = sum(summary["wrong"] for summary in summaries)
    client_leftovers = sum(summary["leftovers"] for summary in summaries)
    gc.collect()
    await asyncio.sleep(0.1)
    tables = recorder.tables()
    live_items = len(Item.live)
    observers = len(recorder.root.board.observers)
    sent = recorder.root.sent
    warm = [rss for answered, rss in samples if answered >= calls * 0.1]
    warm_rss = warm[0] if warm else before
    peak_after_warmup = max(warm, default=warm_rss)
    after = rss_mib()
    await server.close()
    ok = (
        not errors
        and not wrong
        and calls >= total_calls * 0.99
        and not any(tables.values())
        and not live_items
        and not observers
        and not client_leftovers
        and len(recorder.connections) == per_process * processes
    )
    result = (
        f"{calls:,} calls answered ({calls / duration:,.0f}/s), {wrong} wrong, {len(errors)} client errors; "
        f"{sent['item']:,} references handed out, used, sent home and dropped, "
        f"{sent['callback']:,} calls back through client references, {sent['board']:,} cache fetches; "
        f"server RSS {warm_rss:.0f} MiB after warm-up (10% of calls), peak {peak_after_warmup:.0f} MiB "
        f"(growth {peak_after_warmup - warm_rss:+.1f} MiB); server tables after: "
        f"{sum(tables.values())} entries, {live_items} Items alive, {observers} cache observers"
    )
    if errors:
        result += f"; first error: {errors[0]}"
    return Row(
        f"soak: {per_process * processes} clients in {processes} processes",
        len(recorder.connections),
        calls,
        duration,
        before,
        after,
        result,
        ok,
    )


# --------------------------------------------------- cases: shared machinery


class Case:
    """A fresh server plus a bystander that must keep working; measures the case."""

    def __init__(self, name: str, root: Any = None, **options: Any):
        self.name = name
        self.root = root if root is not None else SoakRoot()
        self.options = options
        self.connections = 1
        self.calls = 0

    async def __aenter__(self) -> Case:
        gc.collect()
        self.mem_before = rss_mib()
        self.started = time.perf_counter()
        self.server = await pb.serve(self.root, **self.options)
        self.bystander = await pb.connect("127.0.0.1", self.server.port)
        self.bystander_root = await self.bystander.getRootObject()
        return self

    async def bystander_ok(self, count: int = 20) -> bool:
        for i in range(count):
            if await self.bystander_root.callRemote("echo", i) != i:
                return False
        self.calls += count
        return True

    async def finish(self, result: str, ok: bool) -> Row:
        ok = ok and await self.bystander_ok()
        await self.bystander.close()
        try:
            await until(lambda: not self.server.connections, 10)
        except TimeoutError:
            ok, result = False, f"{result}; {len(self.server.connections)} connections never closed"
        await self.server.close()
        gc.collect()
        seconds = time.perf_counter() - self.started
        return Row(self.name, self.connections, self.calls, seconds, self.mem_before, rss_mib(), result, ok)

    async def __aexit__(self, *exc_info: Any) -> None:
        # Both are idempotent: finish() already closed them unless the case crashed.
        await self.bystander.close()
        await self.server.close()

    async def client(self, **options: Any) -> tuple[pb.Client, pb.RemoteReference]:
        self.connections += 1
        client = await pb.connect("127.0.0.1", self.server.port, **options)
        return client, await client.getRootObject()

    async def raw(self, opening: bytes | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.connections += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        hello = PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": 1 << 20}])
        writer.write(hello if opening is None else opening)
        return reader, writer


async def read_frames(reader: asyncio.StreamReader) -> list[list]:
    """Every frame header the server sends until it hangs up."""
    data = await asyncio.wait_for(reader.read(), WAIT)
    headers, pos = [], len(PREAMBLE)
    while pos + 6 <= len(data):
        body = int.from_bytes(data[pos : pos + 4], "big")
        head_len = int.from_bytes(data[pos + 4 : pos + 6], "big")
        headers.append(msgpack.unpackb(data[pos + 6 : pos + 6 + head_len]))
        pos += 4 + body
    return headers


async def expect_limit(call: Awaitable[Any], name: str) -> tuple[bool, str]:
    """Await a call that must fail with LimitExceeded whose message mentions ``name``."""
    try:
        await call
    except pb.LimitExceeded as exc:
        return name in str(exc), f"{type(exc).__name__}: {str(exc)[:90]}"
    return False, "the call went through"


# ------------------------------------------------------------- cases: limits


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def limit_frame() -> Row:
    async with Case("limit: max_frame (1 GiB frame announced)", max_frame=1 << 20) as case:
        reader, writer = await case.raw()
        writer.write((1 << 30).to_bytes(4, "big") + (8).to_bytes(2, "big"))
        headers = await read_frames(reader)
        writer.close()
        ok = headers[-1][0] == Kind.GOODBYE and headers[-1][1] == "pbnb.errors.LimitExceeded"
        return await case.finish(f"connection closed with GOODBYE: {headers[-1][2][:80]}", ok)


async def limit_string() -> Row:
    async with Case("limit: max_frame=1 MiB, sender side (from the peer's HELLO)", max_frame=1 << 20) as case:
        client, root = await case.client()
        ok, text = await expect_limit(root.callRemote("echo", b"x" * (2 << 20)), "frame limit")
        ok = ok and client.connected and await root.callRemote("echo", "small") == "small"
        case.calls += 2
        await client.close()
        return await case.finish(f"refused before sending: {text}; connection kept", ok)


async def limit_in_call(name: str, value: Any, option: str, **limits: Any) -> Row:
    async with Case(f"limit: {option}", **limits) as case:
        client, root = await case.client()
        ok, text = await expect_limit(root.callRemote("echo", value), name)
        ok = ok and await root.callRemote("echo", 1) == 1 and client.connected
        case.calls += 2
        await client.close()
        return await case.finish(f"call failed with {text}; connection kept", ok)


async def limit_inbound() -> Row:
    root = SoakRoot()
    async with Case("limit: max_inbound_calls=100", root, max_inbound_calls=100) as case:
        client, peer_root = await case.client()
        hanging = [peer_root.callRemote("hang") for _ in range(100)]
        connection = _attacker_side(case)
        await until(lambda: connection.broker.table_sizes()["inbound_calls"] == 100)
        extra = await asyncio.gather(
            *(peer_root.callRemote("echo", i) for i in range(50)), return_exceptions=True
        )
        refused = sum(isinstance(error, pb.LimitExceeded) for error in extra)
        for call in hanging:
            call.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)
        await until(lambda: connection.broker.table_sizes()["inbound_calls"] == 0)
        ok = refused == 50 and await peer_root.callRemote("echo", 2) == 2
        case.calls += 151
        await client.close()
        return await case.finish(f"{refused} of 50 calls over the limit refused; cancelled the rest", ok)


async def limit_references() -> Row:
    async with Case("limit: max_references=100", max_references=100) as case:
        client, root = await case.client()
        held = [await root.callRemote("item", i) for i in range(99)]  # plus the root: 100
        ok, text = await expect_limit(root.callRemote("item", 100), "max_references")
        sent_ok, sent_text = await expect_limit(
            root.callRemote("echo", [Doubler() for _ in range(101)]), "max_references"
        )
        del held
        gc.collect()
        connection = next(c for c in case.server.connections if c.broker.table_sizes()["exports"] > 1)
        await until(lambda: connection.broker.table_sizes()["exports"] == 1)
        ok = ok and sent_ok and await (await root.callRemote("item", 1)).callRemote("value") == 1
        case.calls += 103
        await client.close()
        return await case.finish(f"handing out: {text}; receiving: {sent_text}; slots freed by DECREF", ok)


async def limit_caches() -> Row:
    class Boards(SoakRoot):
        def remote_boards(self, count: int) -> list:
            return [Board() for _ in range(count)]

    async with Case("limit: max_caches=10", Boards(), max_caches=10) as case:
        client, root = await case.client()
        boards = await root.callRemote("boards", 10)
        ok, text = await expect_limit(root.callRemote("boards", 1), "max_caches")
        ok = ok and len(boards) == 10 and await root.callRemote("echo", 3) == 3
        case.calls += 3
        await client.close()
        return await case.finish(f"{text}; connection kept", ok)


async def limit_logins() -> Row:
    from pbnb.cred import InMemoryPasswordChecker, Portal, UnauthorizedLogin, UsernamePassword

    class Realm:
        def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: type) -> tuple:
            return interfaces[0], pb.Avatar(), lambda: None

    checker = InMemoryPasswordChecker(ada="lovelace", iterations=4096)
    portal = Portal(Realm(), [checker], max_failures=3)
    gc.collect()
    before, started = rss_mib(), time.perf_counter()
    server = await pb.serve(portal)
    guesser = await pb.connect("127.0.0.1", server.port)
    refused = 0
    for attempt in range(5):
        try:
            await guesser.login(UsernamePassword("ada", f"guess {attempt}"))
        except (UnauthorizedLogin, pb.PBConnectionLost, pb.DeadReferenceError):
            refused += 1
    await asyncio.wait_for(guesser.wait_closed(), WAIT)
    honest = await pb.connect("127.0.0.1", server.port)
    ok = refused == 5 and await honest.login(UsernamePassword("ada", "lovelace")) is not None
    await honest.close()
    await server.close()
    result = "5 guesses refused, connection dropped after the 3rd failure; an honest login then works"
    return Row(
        "limit: failed logins (max_failures=3)",
        2,
        6,
        time.perf_counter() - started,
        before,
        rss_mib(),
        result,
        ok,
    )


# -------------------------------------------------------------- cases: faults

HANG_CLIENT = """
import asyncio, sys
import pbnb as pb

class Callback(pb.Referenceable):
    def remote_twice(self, n):
        return 2 * n

async def main():
    client = await pb.connect("127.0.0.1", int(sys.argv[1]))
    root = await client.getRootObject()
    call = root.callRemote("hang")
    await root.callRemote("callback", Callback(), 1)
    print("calling", flush=True)
    await call

asyncio.run(main())
"""

HANG_SERVER = """
import asyncio
import pbnb as pb

class Root(pb.Root):
    async def remote_hang(self):
        print("started", flush=True)
        await asyncio.get_running_loop().create_future()

async def main():
    server = await pb.serve(Root())
    print(server.port, flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


async def run_script(script: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT)
    )


async def fault_client_killed(count: int) -> Row:
    async with Case(f"fault: {count} clients SIGKILLed mid-call") as case:
        processes = [await run_script(HANG_CLIENT, str(case.server.port)) for _ in range(count)]
        for process in processes:
            await asyncio.wait_for(process.stdout.readline(), WAIT)
        case.connections += count
        case.calls += 3 * count
        connections = list(case.server.connections)
        for process in processes:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        await until(lambda: len(case.server.connections) == 1)
        leftovers = sum(sum(c.broker.table_sizes().values()) for c in connections if c.closed.done())
        tasks = sum(len(c._tasks) for c in connections)
        ok = leftovers == 0 and tasks == 0
        return await case.finish(f"all {count} server connections closed, {leftovers} table entries left", ok)


async def fault_server_killed() -> Row:
    gc.collect()
    before, started = rss_mib(), time.perf_counter()
    process = await run_script(HANG_SERVER)
    port = int(await asyncio.wait_for(process.stdout.readline(), WAIT))
    client = await pb.connect("127.0.0.1", port)
    root = await client.getRootObject()
    call = root.callRemote("hang")
    await asyncio.wait_for(process.stdout.readline(), WAIT)
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
    return Row(
        "fault: server SIGKILLed mid-call",
        1,
        2,
        time.perf_counter() - started,
        before,
        rss_mib(),
        outcome,
        ok,
    )


async def fault_reset() -> Row:
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


async def fault_stalled_reader(batches: int) -> Row:
    async with Case("fault: peer stops reading (4 KiB answers)") as case:
        reader, writer = await case.raw()
        writer.write(encode_frame([Kind.ROOT, 1]))
        await until(lambda: len(case.server.connections) == 2)
        connection = _attacker_side(case)
        args = msgpack.packb([[4096], {}])
        sent = 0
        while connection.transport.is_reading() and sent < batches * 1000:
            writer.write(
                b"".join(
                    encode_frame([Kind.CALL, n, 1, "blob", serialize.PLAIN], args)
                    for n in range(sent + 2, sent + 1002)
                )
            )
            sent += 1000
            await asyncio.sleep(0)
        paused = not connection.transport.is_reading()
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


def _attacker_side(case: Case) -> Any:
    """The server's connection that is not the bystander's (the case has exactly one more)."""
    port = case.bystander.connection.transport.get_extra_info("sockname")[1]
    (other,) = [c for c in case.server.connections if not c.peer.endswith(f":{port}")]
    return other


async def fault_slow_peer(interval: float, bystander_calls: int) -> Row:
    async with Case(f"fault: peer sends 1 byte every {interval:g}s") as case:
        reader, writer = await case.raw()
        frame = encode_frame([Kind.ROOT, 1])
        complete = asyncio.Event()

        async def trickle() -> None:
            for byte in frame:
                writer.write(bytes([byte]))
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


async def fault_silent_peer(keepalive: float) -> Row:
    timeout = 3 * keepalive
    async with Case(
        f"fault: silent peer (keepalive {keepalive:g}s, timeout {timeout:g}s)",
        keepalive=keepalive,
        dead_peer_timeout=timeout,
    ) as case:
        _reader, writer = await case.raw()
        await until(lambda: len(case.server.connections) == 2)
        silent = _attacker_side(case)
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.shield(silent.closed), WAIT)
        detected = time.perf_counter() - started
        ok = isinstance(silent.close_reason, pb.PBConnectionLost) and not any(
            silent.broker.table_sizes().values()
        )
        writer.close()
        # The bystander answers pings, so it is still connected after several timeouts.
        return await case.finish(f"dropped after {detected:.1f}s: {silent.close_reason}", ok)


# ------------------------------------------------------------- cases: attacks


async def attack_garbage(count: int) -> Row:
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
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


async def attack_fuzzed(count: int) -> Row:
    harness = load_fuzz_harness()
    seeds = harness.seed_streams()
    rng = random.Random(7)
    root = harness.FuzzRoot()
    async with Case(
        f"attack: {count} connections of mutated sessions", root, registry=harness.registry
    ) as case:
        case.bystander_root = _EchoAdapter(case.bystander_root)
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


class _EchoAdapter:
    """The fuzz root's echo answers [args, kwargs]: adapt it to the bystander check."""

    def __init__(self, root: pb.RemoteReference):
        self.root = root

    async def callRemote(self, name: str, value: Any) -> Any:
        args, _ = await self.root.callRemote(name, value)
        return args[0]


async def attack_idle_flood(count: int, keepalive: float) -> Row:
    async with Case(
        f"attack: {count} idle connections (no handshake)",
        keepalive=keepalive,
        dead_peer_timeout=3 * keepalive,
    ) as case:
        sockets = []
        for _ in range(count):
            sockets.append(await asyncio.open_connection("127.0.0.1", case.server.port))
        case.connections += count
        # Each was accepted once the server's preamble arrives on it. (Waiting to see all
        # of them live at once would race the keepalive, which may drop the first ones
        # before the last are open on a loaded machine.)
        for reader, _ in sockets:
            await asyncio.wait_for(reader.readexactly(len(PREAMBLE)), WAIT)
        peak = rss_mib()
        await until(lambda: len(case.server.connections) == 1, WAIT)
        for _, writer in sockets:
            writer.close()
        return await case.finish(
            f"all {count} dropped by keepalive (peak {peak:.0f} MiB while held); bystander stayed", True
        )


# ---------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> list[Row]:
    short = args.short
    rows = [await soak(args.clients, args.processes, args.calls)]
    cases: list[Callable[[], Awaitable[Row]]] = [
        limit_frame,
        limit_string,
        lambda: limit_in_call(
            "exceeds max_bin_len", b"x" * (2 << 20), "max_string_len=1 MiB", max_string_len=1 << 20
        ),
        lambda: limit_in_call("deeper than 32", nested(64), "max_depth=32", max_depth=32),
        lambda: limit_in_call(
            "exceeds max_array_len", list(range(10_001)), "max_container_len=10000", max_container_len=10_000
        ),
        limit_inbound,
        limit_references,
        limit_caches,
        limit_logins,
        lambda: fault_client_killed(3 if short else 10),
        fault_server_killed,
        fault_reset,
        lambda: fault_stalled_reader(200),
        lambda: fault_slow_peer(0.2 if short else 1.0, 200 if short else 2000),
        lambda: fault_silent_peer(0.5 if short else 1.0),
        lambda: attack_garbage(40 if short else 400),
        lambda: attack_fuzzed(50 if short else 1000),
        lambda: attack_idle_flood(100 if short else 1000, 0.5 if short else 1.0),
    ]
    for case in cases:
        try:
            rows.append(await case())
        except Exception as exc:  # a crashed case is a failed row, not a lost report
            rows.append(Row(getattr(case, "__name__", "case"), 0, 0, 0, 0, 0, f"crashed: {exc!r}", False))
        print(rows[-1].markdown(), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="the CI run: 50 clients, 100,000 calls")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--calls", type=int, default=None, help="total soak calls (default 1,000,000)")
    parser.add_argument(
        "--worker", nargs=4, type=int, metavar=("PORT", "CLIENTS", "CALLS", "SEED"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        port, clients, calls, seed = args.worker
        asyncio.run(worker(port, clients, calls, 8, seed))
        return 0
    if args.calls is None:
        args.calls = 100_000 if args.short else 1_000_000
    started = time.perf_counter()
    rows = asyncio.run(run(args))
    print("| case | connections | calls | seconds | RSS before (MiB) | RSS after (MiB) | result |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(row.markdown())
    failed = [row.case for row in rows if not row.ok]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed in {time.perf_counter() - started:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
