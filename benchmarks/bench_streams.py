"""Streams: 100,000 small items from a remote generator, and memory under a slow consumer.

Each peer serves ``rows(n)``, which yields ``n`` rows ``{"id": i, "name": "row
i", "score": i / 2}``, and ``endless()``, which yields such rows forever:

* **raw asyncio** (the floor): asyncio streams, the server writing each row as a
  length-prefixed msgpack frame (draining past 256 KiB buffered, as
  ``raw_asyncio.py`` does), the client reading each with ``readexactly``;
* **pbnb**: a generator ``remote_rows``; the client runs ``async for row in
  root.callRemote("rows", n)`` with the default window (512 items, 4 MiB);
* **Pyro5**: a method returning a generator (Pyro5's item streaming, msgpack
  serializer); the proxy fetches the next item with a round trip each;
* **RPyC**: a method returning a generator, iterated through its netref (one
  round trip an item). RPyC passes dicts by reference, so its rows are tuples of
  the same values, which travel by value.

Twisted PB has no item streaming (only ``util.Pager``), so it is not here.

    .venv/bin/python -m benchmarks.bench_streams              # all peers, 5 rounds
    .venv/bin/python -m benchmarks.bench_streams --quick      # 3 rounds; Pyro5 and RPyC stream 10,000
    .venv/bin/python -m benchmarks.bench_streams --peers pbnb --rounds 9

Every server runs in its own process pinned to CPU 0, every client in another
pinned to CPU 1 (``--no-pin``: anywhere). Rounds rotate through the peers, and
each figure is the median over the rounds of that round's ratio to the floor,
as in ``benchmarks.run``. Then, in fresh processes, a slow consumer reads
``endless()`` for ``--slow-seconds`` (one row a millisecond) and stops: the
table gives each side's peak RSS (VmHWM) and its growth over the RSS before the
stream, and for pbnb the peak of Python's own allocations (tracemalloc) on
both sides and how far the generator ran ahead of the reader. A measurement,
not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pbnb as pb

from .raw_asyncio import frame, read_frame

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "raw_asyncio"
PEERS = (FLOOR, "pbnb", "pyro5", "rpyc")
LABELS = {"raw_asyncio": "raw asyncio", "pbnb": "pbnb", "pyro5": "Pyro5", "rpyc": "RPyC"}
#: Peers that fetch one item per round trip: --quick streams fewer items through them.
PULLED = ("pyro5", "rpyc")
ITEMS = 100_000
#: pbnb's target, as a ratio to the floor's items per second.
TARGET = 0.7
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 600.0
_HIGH_WATER = 256 * 1024
_TRACE = "PBNB_BENCH_TRACEMALLOC"


def row(i: int) -> dict[str, Any]:
    """The i-th item every peer streams: a small row, as a query yields."""
    return {"id": i, "name": f"row {i}", "score": i / 2}


def rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield row(i)


def endless(produced: list[int]) -> Iterator[dict[str, Any]]:
    """Rows forever; ``produced[0]`` counts them."""
    i = 0
    while True:
        produced[0] = i + 1
        yield row(i)
        i += 1


def _check(count: int, last: Any, n: int) -> None:
    expected = row(n - 1)
    if isinstance(last, tuple):  # RPyC's rows
        expected = tuple(expected.values())  # type: ignore[assignment]
    if count != n or last != expected:
        raise AssertionError(f"expected {n} rows ending with {expected!r}, got {count} ending with {last!r}")


def _memory(pid: int | str = "self") -> dict[str, int]:
    """A process's current and peak resident set in KiB (Linux /proc); in this process,
    when tracemalloc runs, also Python's allocations now and at their peak since the last call."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    if pid == "self" and tracemalloc.is_tracing():
        fields["traced"], fields["traced_peak"] = (size // 1024 for size in tracemalloc.get_traced_memory())
        tracemalloc.reset_peak()
    return fields


# ----------------------------------------------------------------- servers


def serve(peer: str) -> None:
    """Serve ``peer``'s rows on a free loopback port; print ``PORT n``."""
    if peer == FLOOR:
        asyncio.run(_raw_serve())
    elif peer == "pbnb":
        asyncio.run(_pbnb_serve())
    elif peer == "pyro5":
        import Pyro5.api

        Pyro5.api.config.SERIALIZER = "msgpack"

        @Pyro5.api.expose
        class Rows:
            produced = [0]

            def rows(self, n: int) -> Iterator[dict[str, Any]]:
                return rows(n)

            def endless(self) -> Iterator[dict[str, Any]]:
                return endless(self.produced)

        daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
        daemon.register(Rows(), "rows")
        _announce(daemon.sock.getsockname()[1])
        daemon.requestLoop()
    else:
        import rpyc
        from rpyc.utils.server import ThreadedServer

        class RowService(rpyc.Service):
            def exposed_rows(self, n: int) -> Iterator[tuple]:
                return (tuple(item.values()) for item in rows(n))

            def exposed_endless(self) -> Iterator[tuple]:
                return (tuple(item.values()) for item in endless([0]))

        server = ThreadedServer(RowService, hostname="127.0.0.1", port=0)
        _announce(server.port)
        server.start()


def _announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


async def raw_handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The floor's server: for each request (a count, or None for endless), write that many rows."""
    try:
        while True:
            n = await read_frame(reader)
            for item in rows(n) if n is not None else endless([0]):
                writer.write(frame(item))
                if writer.transport.get_write_buffer_size() > _HIGH_WATER:
                    await writer.drain()
                elif writer.transport.is_closing():  # the reader left
                    return
            writer.write(frame(None))  # the end
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _raw_serve() -> None:
    server = await asyncio.start_server(raw_handle, "127.0.0.1", 0)
    _announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


class RowsRoot(pb.Root):
    """pbnb's server: its generators stream rows."""

    def __init__(self) -> None:
        self.produced = [0]

    def remote_rows(self, n: int) -> Iterator[dict[str, Any]]:
        yield from rows(n)

    def remote_endless(self) -> Iterator[dict[str, Any]]:
        self.produced = [0]
        yield from endless(self.produced)

    def remote_produced(self) -> int:
        return self.produced[0]

    def remote_memory(self) -> dict[str, int]:
        return _memory()


async def _pbnb_serve() -> None:
    server = await pb.serve(RowsRoot(), host="127.0.0.1", port=0)
    _announce(server.port)
    await server.serve_forever()


# ----------------------------------------------------------------- clients


class Client:
    """One peer's client: ``stream(n)`` times n rows; ``slow(seconds)`` reads endless rows slowly."""

    def __init__(self, peer: str, port: int):
        self.peer = peer
        self.port = port
        self.loop = asyncio.new_event_loop()
        if peer == FLOOR:
            self.reader, self.writer = self.loop.run_until_complete(
                asyncio.open_connection("127.0.0.1", port)
            )
        elif peer == "pbnb":
            self.client = self.loop.run_until_complete(pb.connect("127.0.0.1", port))
            self.root = self.loop.run_until_complete(self.client.getRootObject())
        elif peer == "pyro5":
            import Pyro5.api

            Pyro5.api.config.SERIALIZER = "msgpack"
            self.proxy = Pyro5.api.Proxy(f"PYRO:rows@127.0.0.1:{port}")
            self.proxy._pyroBind()  # noqa: SLF001 (Pyro5's documented way to connect now)
        else:
            import rpyc

            self.conn = rpyc.connect("127.0.0.1", port)

    def stream(self, n: int) -> float:
        start = time.perf_counter()
        count, last = self._read(n, None)
        seconds = time.perf_counter() - start
        _check(count, last, n)
        return seconds

    def slow(self, seconds: float, pause: float) -> dict[str, Any]:
        """Read endless rows, one per ``pause`` seconds, for ``seconds``; then stop the stream."""
        before = _memory()
        server_before = self._server_memory()
        count, _ = self._read(None, (time.monotonic() + seconds, pause))
        result: dict[str, Any] = {"read": count, "client_before": before, "client": _memory()}
        if self.peer == "pbnb":
            result["produced"] = self.loop.run_until_complete(self.root.callRemote("produced"))
            result["server_traced"] = server_before, self._server_memory()
        return result

    def _server_memory(self) -> dict[str, int]:
        """The server's own view of its memory (pbnb only: the others serve nothing but rows)."""
        if self.peer != "pbnb":
            return {}
        return self.loop.run_until_complete(self.root.callRemote("memory"))

    def _read(self, n: int | None, slow: tuple[float, float] | None) -> tuple[int, Any]:
        """Read ``n`` rows (None: endless, until ``slow``'s deadline); return the count and the last."""
        if self.peer == FLOOR:
            return self.loop.run_until_complete(self._raw_read(n, slow))
        if self.peer == "pbnb":
            return self.loop.run_until_complete(self._pbnb_read(n, slow))
        if self.peer == "pyro5":
            items = self.proxy.rows(n) if n is not None else self.proxy.endless()
        else:
            items = self.conn.root.rows(n) if n is not None else self.conn.root.endless()
        count, last = 0, None
        for item in items:
            count += 1
            last = item
            if slow is not None:
                if time.monotonic() > slow[0]:
                    break
                time.sleep(slow[1])
        if slow is not None and self.peer == "pyro5":
            items.close()  # type: ignore[union-attr]
        return count, last

    async def _raw_read(self, n: int | None, slow: tuple[float, float] | None) -> tuple[int, Any]:
        if slow is not None:  # a fresh connection: endless rows cannot be stopped but by closing
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        else:
            reader, writer = self.reader, self.writer
        writer.write(frame(n))
        count, last = 0, None
        while True:
            item = await read_frame(reader)
            if item is None:
                return count, last
            count += 1
            last = item
            if slow is not None:
                if time.monotonic() > slow[0]:
                    writer.close()
                    return count, last
                await asyncio.sleep(slow[1])

    async def _pbnb_read(self, n: int | None, slow: tuple[float, float] | None) -> tuple[int, Any]:
        call = self.root.callRemote("rows", n) if n is not None else self.root.callRemote("endless")
        count, last = 0, None
        async for item in call:
            count += 1
            last = item
            if slow is not None:
                if time.monotonic() > slow[0]:
                    break
                await asyncio.sleep(slow[1])
        return count, last


async def stream_here(peer: str, n: int) -> None:
    """Serve and read ``n`` rows in this process, on this loop (for ``benchmarks.instructions``)."""
    if peer == FLOOR:
        listener = await asyncio.start_server(raw_handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.sockets[0].getsockname()[1])
        writer.write(frame(n))
        count, last = 0, None
        while (item := await read_frame(reader)) is not None:
            count, last = count + 1, item
        writer.close()
        await writer.wait_closed()
        listener.close()
        await asyncio.sleep(0.01)  # the handler sees the close and ends (not cancelled by asyncio.run)
    else:
        server = await pb.serve(RowsRoot(), host="127.0.0.1", port=0)
        async with await pb.connect("127.0.0.1", server.port) as client:
            root = await client.getRootObject()
            count, last = 0, None
            async for item in root.callRemote("rows", n):
                count, last = count + 1, item
        await server.close()
    if n:
        _check(count, last, n)


def run_client(peer: str, port: int) -> None:
    client = Client(peer, port)
    print("READY", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if "stream" in command:
                answer: dict[str, Any] = {"seconds": client.stream(command["stream"])}
            else:
                answer = client.slow(command["slow"], command["pause"])
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
        print(json.dumps(answer), flush=True)


# ------------------------------------------------------------------- parent


class PeerProcesses:
    """One peer's server process and the client process that measures it."""

    def __init__(self, peer: str, *, pin: bool, trace: bool = False):
        self.peer = peer
        self._pin = pin and (os.cpu_count() or 1) >= 2
        self._trace = trace
        self.client: subprocess.Popen[str] | None = None
        self.server = self._spawn(0, "serve", peer)
        self.port = int(self._expect(self.server, "PORT ").split()[1])
        self.client = self._spawn(1, "client", peer, str(self.port))
        self._expect(self.client, "READY")

    def _spawn(self, cpu: int, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self._pin:
            env["PBNB_BENCH_CPU"] = str(cpu)
        if self._trace:
            env[_TRACE] = "1"
        return subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_streams", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def _expect(self, process: subprocess.Popen[str], prefix: str, timeout: float = START_TIMEOUT) -> str:
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if not line.startswith(prefix):
            self.close()
            raise RuntimeError(f"{self.peer}: expected {prefix!r}, got {line!r}")
        return line

    def command(self, **command: Any) -> dict[str, Any]:
        self.client.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
        self.client.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self._expect(self.client, "{", COMMAND_TIMEOUT))  # type: ignore[arg-type]

    def close(self) -> None:
        for process in (self.client, self.server):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)


def measure_rates(
    peers: list[str], rounds: int, items: dict[str, int], *, pin: bool = True
) -> dict[str, list[float | str]]:
    """peer -> items per second in each round (or the error it gave); rounds rotate the order."""
    running: list[PeerProcesses] = []
    try:
        for peer in peers:
            try:
                running.append(PeerProcesses(peer, pin=pin))
            except Exception as exc:
                print(f"skipping {LABELS[peer]}: {exc}", file=sys.stderr)
        rates: dict[str, list[float | str]] = {p.peer: [] for p in running}
        print("warming up", file=sys.stderr, flush=True)
        for process in running:
            process.command(stream=min(items[process.peer], 10_000))
        for number in range(rounds):
            print(f"round {number + 1}/{rounds}", file=sys.stderr, flush=True)
            shift = number % len(running)
            for process in running[shift:] + running[:shift]:
                answer = process.command(stream=items[process.peer])
                seconds = answer.get("seconds")
                rates[process.peer].append(items[process.peer] / seconds if seconds else answer["error"])
        return rates
    finally:
        for process in running:
            process.close()


def measure_memory(peer: str, seconds: float, pause: float, *, pin: bool = True) -> dict[str, Any]:
    """Both sides' memory while a slow consumer reads ``peer``'s endless rows (fresh processes)."""
    process = PeerProcesses(peer, pin=pin, trace=peer == "pbnb")
    try:
        server_before = _memory(process.server.pid)
        answer = process.command(slow=seconds, pause=pause)
        answer["server"] = _memory(process.server.pid)
        answer["server_before"] = server_before
        return answer
    finally:
        process.close()


def print_rate_table(rates: dict[str, list[float | str]], items: dict[str, int]) -> None:
    rows_ = [["peer", "items", "items/s (median)", "ratio to raw asyncio (min-max)", "pbnb target"]]
    floor = rates.get(FLOOR)
    for peer, values in rates.items():
        errors = [value for value in values if isinstance(value, str)]
        if errors:
            rows_.append([LABELS[peer], f"{items[peer]:,}", "failed", errors[0], ""])
            continue
        numbers = [float(value) for value in values]
        ratio = ""
        if floor and peer != FLOOR and not any(isinstance(value, str) for value in floor):
            ratios = [a / float(b) for a, b in zip(numbers, floor, strict=True)]
            ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        target = f">= {TARGET}x" if peer == "pbnb" else ""
        rows_.append([LABELS[peer], f"{items[peer]:,}", f"{statistics.median(numbers):,.0f}", ratio, target])
    _print_rows(rows_)


def print_memory_table(memory: dict[str, dict[str, Any]]) -> None:
    mib = lambda kib: f"{kib / 1024:.1f}"  # noqa: E731
    rows_ = [
        [
            "peer",
            "rows read",
            "server peak RSS MiB (growth)",
            "client peak RSS MiB (growth)",
            "Python allocations' peak growth KiB server/client",
            "generator ahead",
        ]
    ]
    for peer, found in memory.items():
        if "error" in found:
            rows_.append([LABELS[peer], "failed", found["error"], "", "", ""])
            continue
        server, server_before = found["server"], found["server_before"]
        client, client_before = found["client"], found["client_before"]
        traced = ""
        if "server_traced" in found:  # tracemalloc: the peak over what was allocated before the stream
            server_traced_before, server_traced = found["server_traced"]
            server_growth = server_traced["traced_peak"] - server_traced_before["traced"]
            client_growth = client["traced_peak"] - client_before["traced"]
            traced = f"{server_growth:,} / {client_growth:,}"
        ahead = f"{found['produced'] - found['read']:,} rows" if "produced" in found else ""
        rows_.append(
            [
                LABELS[peer],
                f"{found['read']:,}",
                f"{mib(server['VmHWM'])} (+{mib(server['VmHWM'] - server_before['VmRSS'])})",
                f"{mib(client['VmHWM'])} (+{mib(client['VmHWM'] - client_before['VmRSS'])})",
                traced,
                ahead,
            ]
        )
    _print_rows(rows_)


def _print_rows(rows_: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows_) for i in range(len(rows_[0]))]
    for index, cells in enumerate(rows_):
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def run(
    peers: list[str],
    rounds: int,
    *,
    quick: bool = False,
    slow_seconds: float = 3.0,
    pin: bool = True,
) -> None:
    """Measure and print both tables (what ``benchmarks.run`` calls for its streams section)."""
    peers = [FLOOR, *(peer for peer in peers if peer != FLOOR)]
    items = {peer: ITEMS // 10 if quick and peer in PULLED else ITEMS for peer in peers}
    rates = measure_rates(peers, rounds, items, pin=pin)
    memory = {}
    for peer in peers:
        try:
            memory[peer] = measure_memory(peer, slow_seconds, 0.001, pin=pin)
        except Exception as exc:
            memory[peer] = {"error": str(exc)[:120]}
    print(f"\nA stream of small rows; median over {rounds} rounds, {os.cpu_count()} CPUs.\n")
    print_rate_table(rates, items)
    print(f"\nA slow consumer (one row a millisecond) reading endless rows for {slow_seconds:g} s:\n")
    print_memory_table(memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, help="rounds (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="3 rounds; Pyro5 and RPyC stream 10,000 items")
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--slow-seconds", type=float, default=3.0, help="the slow consumer's read time")
    parser.add_argument("--no-pin", action="store_true", help="let the scheduler place the processes")
    parser.add_argument("role", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.role:
        cpu = os.environ.get("PBNB_BENCH_CPU")
        if cpu is not None:
            os.sched_setaffinity(0, {int(cpu)})
        if os.environ.get(_TRACE):
            tracemalloc.start()
        role, peer, *rest = options.role
        if role == "serve":
            serve(peer)
        else:
            run_client(peer, int(rest[0]))
        return
    rounds = options.rounds or (3 if options.quick else 5)
    run(options.peers, rounds, quick=options.quick, slow_seconds=options.slow_seconds, pin=not options.no_pin)


if __name__ == "__main__":
    main()
