"""What every reliability case shares: a fresh server, a bystander that calls throughout, a row."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

import pbnb as pb
from pbnb.core.wire import PREAMBLE, Kind, encode_frame

from .objects import USERS, SoakRoot

# A hang detector, not a timing claim: generous, so a loaded 2-core machine never trips it.
WAIT = 60.0
ROOT = Path(__file__).resolve().parents[2]


async def run_module(module: str, *args: str) -> asyncio.subprocess.Process:
    """``python -m module args`` with ``tests/`` and the repository on the path."""
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
        cwd=str(ROOT),
    )


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
    """One line of the table in docs/reliability.md."""

    case: str
    connections: int
    calls: int
    seconds: float
    worst_ms: float | None  # the bystander's slowest round trip during the row
    mem_before: float
    mem_peak: float
    mem_after: float
    result: str
    ok: bool

    HEADER = (
        "| case | connections | calls | seconds | bystander worst (ms) | "
        "RSS before / peak / after (MiB) | result |\n|---|---:|---:|---:|---:|---:|---|"
    )

    def markdown(self) -> str:
        status = "pass" if self.ok else "**FAIL**"
        worst = "-" if self.worst_ms is None else f"{self.worst_ms:,.0f}"
        return (
            f"| {self.case} | {self.connections:,} | {self.calls:,} | {self.seconds:.1f} | {worst} | "
            f"{self.mem_before:.0f} / {self.mem_peak:.0f} / {self.mem_after:.0f} | {status}: {self.result} |"
        )


class PeakMemory:
    """Samples this process's RSS from a thread, so a frozen event loop does not hide a peak."""

    def __init__(self) -> None:
        gc.collect()
        self.before = self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mib())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())
        return self.peak


class Bystander:
    """A client that keeps calling ``echo`` through the whole row and remembers its worst round trip.

    It runs in the server's process, so while the event loop is frozen it cannot even
    send: a round trip is timed from when the call was due (every 10 ms), as a
    bystander in another process would have sent it, not from when it went out.
    """

    PERIOD = 0.01

    def __init__(self, root: Any, echo: Callable[[Any, Any], Awaitable[Any]] | None = None):
        self.root = root
        self.echo = echo or (lambda root, value: root.callRemote("echo", value))
        self.calls = 0
        self.worst = 0.0
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._run())

    async def call(self, value: Any, due: float | None = None) -> bool:
        """One echo of ``value``; its round trip counts from ``due`` (default: now)."""
        started = time.perf_counter() if due is None else due
        answer = await self.echo(self.root, value)
        self.worst = max(self.worst, time.perf_counter() - started)
        self.calls += 1
        return answer == value

    async def _run(self) -> None:
        try:
            while True:
                due = time.perf_counter() + self.PERIOD
                await asyncio.sleep(self.PERIOD)
                if not await self.call(self.calls, due):
                    raise AssertionError("the bystander got a wrong answer")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.error = exc

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class Case:
    """A fresh server plus a bystander calling throughout; measures the case and makes its row."""

    def __init__(
        self,
        name: str,
        root: Any = None,
        *,
        echo: Callable[[Any, Any], Awaitable[Any]] | None = None,
        login: bool = False,
        client: dict[str, Any] | None = None,
        **options: Any,
    ):
        """``login=True``: the root is a Portal (``objects.login_portal``); the bystander logs in."""
        self.name = name
        self.echo = echo
        self.login = login
        self.client_options = client or {}  # how the bystander connects (ssl=..., for example)
        self.root = root if root is not None else SoakRoot()
        self.options = options
        self.connections = 1
        self.calls = 0
        self.bytes_sent = 0  # what the attacker sent, for rows that compare memory with it

    async def __aenter__(self) -> Case:
        self.memory = PeakMemory()
        self.started = time.perf_counter()
        self.server = await pb.serve(self.root, **self.options)
        self.bystander = await pb.connect("127.0.0.1", self.server.port, **self.client_options)
        if self.login:
            from pbnb.cred import UsernamePassword

            credentials = UsernamePassword("bystander", USERS["bystander"])
            self.bystander_root = await self.bystander.login(credentials)
            self.echo = self.echo or _perspective_echo
        else:
            self.bystander_root = await self.bystander.getRootObject()
        self.watch = Bystander(self.bystander_root, self.echo)
        return self

    async def bystander_ok(self, count: int = 20) -> bool:
        for i in range(count):
            if not await self.watch.call(i):
                return False
        return True

    async def finish(self, result: str, ok: bool) -> Row:
        await self.watch.stop()
        if self.watch.error is not None:
            ok, result = False, f"{result}; the bystander failed: {self.watch.error!r}"
        ok = ok and await self.bystander_ok()
        await self.bystander.close()
        try:
            await until(lambda: not self.server.connections, 10)
        except TimeoutError:
            ok, result = False, f"{result}; {len(self.server.connections)} connections never closed"
        await self.server.close()
        gc.collect()
        seconds = time.perf_counter() - self.started
        peak = self.memory.stop()
        return Row(
            self.name,
            self.connections,
            self.calls + self.watch.calls,
            seconds,
            self.watch.worst * 1000,
            self.memory.before,
            peak,
            rss_mib(),
            result,
            ok,
        )

    async def __aexit__(self, *exc_info: Any) -> None:
        # All idempotent: finish() already did them unless the case crashed.
        await self.watch.stop()
        self.memory.stop()
        await self.bystander.close()
        await self.server.close()

    async def attack_from_process(self, case: str, *args: Any) -> dict[str, Any]:
        """Run ``reliability.attacker CASE PORT ARGS`` against this server; its JSON result."""
        self.connections += 1
        process = await run_module("reliability.attacker", case, str(self.server.port), *map(str, args))
        try:
            line = await asyncio.wait_for(process.stdout.readline(), WAIT)  # type: ignore[union-attr]
        finally:
            await asyncio.wait_for(process.wait(), WAIT)
        result: dict[str, Any] = json.loads(line)
        return result

    async def client(self, **options: Any) -> tuple[pb.Client, pb.RemoteReference]:
        self.connections += 1
        client = await pb.connect("127.0.0.1", self.server.port, **options)
        return client, await client.getRootObject()

    async def raw(self, opening: bytes | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A socket that speaks the protocol by hand; by default it sends the preamble and a HELLO."""
        self.connections += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        self.send(writer, HELLO if opening is None else opening)
        return reader, writer

    def send(self, writer: asyncio.StreamWriter, data: bytes | memoryview) -> None:
        self.bytes_sent += len(data)
        writer.write(data)

    def attacker(self) -> Any:
        """The server's connection that is not the bystander's (the case has exactly one more)."""
        port = self.bystander.connection.transport.get_extra_info("sockname")[1]
        (other,) = [c for c in self.server.connections if not c.peer.endswith(f":{port}")]
        return other


HELLO = PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": 1 << 20}])


async def _perspective_echo(avatar: Any, value: Any) -> Any:
    return await avatar.callRemote("echo", value)


class RawPeer:
    """A hand-made client: sends frames as given and reads the server's frames one by one."""

    def __init__(self, case: Case, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.case = case
        self.reader = reader
        self.writer = writer
        self._preamble_read = False
        self.seen: list[list] = []  # the headers of the frames answer() skipped

    @classmethod
    async def open(cls, case: Case) -> RawPeer:
        """Connect, send the preamble and a HELLO, and ask for the root (request id 1, export id 1)."""
        reader, writer = await case.raw()
        peer = cls(case, reader, writer)
        peer.send(encode_frame([Kind.ROOT, 1]))
        await peer.answer(1)
        return peer

    def send(self, data: bytes) -> None:
        self.case.send(self.writer, data)

    async def send_big(self, data: bytes) -> None:
        """Send in 1 MiB pieces, each once the socket took the last: no second copy in a buffer."""
        view = memoryview(data)
        for start in range(0, len(data), 1 << 20):
            self.send(view[start : start + (1 << 20)])
            await self.writer.drain()

    async def frame(self) -> tuple[list, bytes]:
        """The next frame's header and payload."""
        if not self._preamble_read:
            await asyncio.wait_for(self.reader.readexactly(len(PREAMBLE)), WAIT)
            self._preamble_read = True
        size = int.from_bytes(await asyncio.wait_for(self.reader.readexactly(4), WAIT), "big")
        frame = await asyncio.wait_for(self.reader.readexactly(size), WAIT)
        head_len = int.from_bytes(frame[:2], "big")
        return msgpack.unpackb(frame[2 : 2 + head_len]), frame[2 + head_len :]

    async def answer(self, request_id: int) -> list:
        """The header of the ANSWER or ERROR to ``request_id`` (other frames are skipped)."""
        while True:
            header, _ = await self.frame()
            if header[0] == Kind.GOODBYE:
                raise ConnectionError(f"the server said goodbye: {header}")
            if header[0] in (Kind.ANSWER, Kind.ERROR) and header[1] == request_id:
                return header
            self.seen.append(header)

    def close(self) -> None:
        self.writer.close()


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


async def expect_limit(call: Callable[[], Awaitable[Any]], name: str) -> tuple[bool, str]:
    """Make a call that must fail (at once, or when awaited) with LimitExceeded mentioning ``name``."""
    try:
        await call()
    except pb.LimitExceeded as exc:
        return name in str(exc), f"{type(exc).__name__}: {str(exc)[:90]}"
    return False, "the call went through"


class Solo:
    """Measures a row that has no bystander (the server itself is the subject)."""

    def __init__(self) -> None:
        self.memory = PeakMemory()
        self.started = time.perf_counter()

    def row(self, name: str, connections: int, calls: int, result: str, ok: bool) -> Row:
        seconds = time.perf_counter() - self.started
        peak = self.memory.stop()
        return Row(name, connections, calls, seconds, None, self.memory.before, peak, rss_mib(), result, ok)
