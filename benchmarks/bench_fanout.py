"""Fan-out: one Cacheable, many observers, one change; pbnb against raw asyncio + msgpack.

    .venv/bin/python -m benchmarks.bench_fanout [--observers 1 100 1000] [--procs 2] [--rounds 30]

The owner runs here; the observers are client connections spread over a few
client processes on loopback. A round is one change: the owner records the
time, broadcasts the change, and every client process prints the time at
which all of its copies had applied it (``time.perf_counter`` is
CLOCK_MONOTONIC on Linux: one clock for the whole machine). The latency of a
round is the last of those times minus the start; updates delivered per
second is observers / latency. The figure is the median over the rounds; the
"(sent)" columns say when the owner had written its last frame. Both owners run
at once and take turns, so a busy machine slows both alike. Target: pbnb
within 2x of raw at 1000 observers.

* pbnb: an ``ObservedCacheable`` assigns an observed field; each client holds
  an ``ObservedRemoteCache`` that applies ``observe_set``.
* raw: the same change as a length-prefixed msgpack frame written to every
  connection, and read and applied by a bare ``asyncio.BufferedProtocol``.

``--profile`` runs the pbnb owner under cProfile and prints where its time went.
``--cpu`` also prints the CPU time each side spent per update over the timed
rounds: the client processes' user and system time (from ``/proc``, Linux
only, counted in clock ticks: time enough rounds) and the owner's thread time
around each change until written. On a machine with few cores the latency
follows the clients' CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import struct
import sys
import time
from typing import Any

import msgpack

import pbnb as pb

_PREFIX = struct.Struct(">I")
WARMUP = 3


# ---------------------------------------------------------------- pbnb side


class Gauge(pb.ObservedCacheable):
    """The owner's object: one observed field."""

    observed_fields = ("value",)

    def __init__(self) -> None:
        self.value = -1


class GaugeCopy(pb.ObservedRemoteCache):
    """An observer's copy; reports each change to the process-wide tally."""

    observed_fields = ("value",)

    def changed(self, fields: dict[str, Any]) -> None:
        TALLY.applied(fields["value"])


pb.setUnjellyableForClass(Gauge, GaugeCopy)


class GaugeRoot(pb.Root):
    def __init__(self, gauge: Gauge):
        self.gauge = gauge

    def remote_get(self) -> Gauge:
        return self.gauge


# ----------------------------------------------------------------- raw side


def _frame(value: Any) -> bytes:
    body = msgpack.packb(value)
    return _PREFIX.pack(len(body)) + body


class _RawEnd(asyncio.Protocol):
    """Server end of one raw connection: sends the state, then whatever it is told."""

    def __init__(self, transports: list[asyncio.Transport], state: dict[str, Any]):
        self._transports = transports
        self._state = state

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(_frame(["state", self._state]))  # type: ignore[attr-defined]
        self._transports.append(transport)  # type: ignore[arg-type]


class RawCopy(asyncio.BufferedProtocol):
    """Client end: reads frames, applies ``["set", name, value]`` to a dict.

    It reads into one buffer it keeps, as pbnb does. A bare ``data_received``
    would make the transport allocate a fresh 256 KiB bytes object per read,
    which glibc, depending on the process's history, may serve with an mmap,
    page faults and an munmap each time: a floor slowed by that would flatter pbnb.
    """

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self._buffer = bytearray(256 * 1024)  # the benchmark's frames are all far smaller
        self._view = memoryview(self._buffer)
        self._filled = 0
        self.ready = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        end = self._filled + nbytes
        pos = 0
        while end - pos >= 4:
            (size,) = _PREFIX.unpack_from(self._buffer, pos)
            if end - pos - 4 < size:
                break
            message = msgpack.unpackb(self._view[pos + 4 : pos + 4 + size])
            pos += 4 + size
            if message[0] == "state":
                self.state = message[1]
                self.ready.set_result(None)
            else:
                self.state[message[1]] = message[2]
                TALLY.applied(message[2])
        self._buffer[: end - pos] = self._buffer[pos:end]
        self._filled = end - pos


# ------------------------------------------------------------ client process


class Tally:
    """Counts, per change, how many copies in this process have applied it."""

    def __init__(self) -> None:
        self.copies = 0
        self._counts: dict[int, int] = {}

    def applied(self, value: int) -> None:
        count = self._counts.get(value, 0) + 1
        if count == self.copies:
            now = time.perf_counter()
            self._counts.pop(value, None)
            sys.stdout.write(f"DONE {value} {now!r}\n")
            sys.stdout.flush()
        else:
            self._counts[value] = count


TALLY = Tally()


async def run_clients(mode: str, port: int, count: int) -> None:
    TALLY.copies = count
    loop = asyncio.get_running_loop()
    keep: list[Any] = []
    for _ in range(count):
        if mode == "pbnb":
            client = await pb.connect("127.0.0.1", port)
            keep.append((client, await (await client.getRootObject()).callRemote("get")))
        else:
            _, protocol = await loop.create_connection(RawCopy, "127.0.0.1", port)
            await protocol.ready
            keep.append(protocol)
    print("READY", flush=True)
    # Run until the owner closes our stdin (or dies), so no client outlives it.
    _, watcher = await loop.connect_read_pipe(_UntilClosed, sys.stdin)
    await watcher.closed


class _UntilClosed(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


# ------------------------------------------------------------------- owner


class ClientProcesses:
    """A few client processes sharing ``observers`` connections; collects their DONE lines."""

    def __init__(self, mode: str, port: int, observers: int, procs: int):
        self.mode, self.port = mode, port
        share = [observers // procs + (1 if i < observers % procs else 0) for i in range(procs)]
        self.shares = [n for n in share if n]
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        for share in self.shares:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.bench_fanout",
                "--client",
                self.mode,
                str(self.port),
                str(share),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.procs.append(proc)
        for proc in self.procs:
            line = await asyncio.wait_for(proc.stdout.readline(), 120)  # type: ignore[union-attr]
            if line.strip() != b"READY":
                raise RuntimeError(f"client process failed to start: {line!r}")

    async def finished(self, value: int) -> float:
        """The time at which every process reported ``value`` applied."""
        times = []
        for proc in self.procs:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
            word, got, when = line.split()
            if word != b"DONE" or int(got) != value:
                raise RuntimeError(f"unexpected report {line!r} for change {value}")
            times.append(float(when))
        return max(times)

    async def stop(self) -> None:
        for proc in self.procs:
            proc.stdin.close()  # type: ignore[union-attr]
        for proc in self.procs:
            await asyncio.wait_for(proc.wait(), 30)


class PbnbOwner:
    """The pbnb side: a Gauge served over pbnb."""

    async def start(self) -> int:
        self.gauge = Gauge()
        self.server = await pb.serve(GaugeRoot(self.gauge), host="127.0.0.1", port=0)
        return self.server.port

    def change(self, value: int) -> None:
        self.gauge.value = value

    def watching(self) -> int:
        return len(self.gauge.observers)

    async def close(self) -> None:
        await self.server.close()


class RawOwner:
    """The floor: the same state and change as msgpack frames over bare asyncio."""

    async def start(self) -> int:
        self.transports: list[asyncio.Transport] = []
        self.state: dict[str, Any] = {"value": -1}
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _RawEnd(self.transports, self.state), "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def change(self, value: int) -> None:
        self.state["value"] = value
        frame = _frame(["set", "value", value])
        for transport in self.transports:
            transport.write(frame)

    def watching(self) -> int:
        return len(self.transports)

    async def close(self) -> None:
        self.server.close()
        for transport in self.transports:
            transport.abort()


async def sent() -> float:
    """When the owner's loop has run what the change queued (pbnb writes on the next turn)."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(lambda: done.set_result(time.perf_counter()))
    return await done


def process_cpu(pid: int) -> tuple[float, float]:
    """A process's user and system CPU seconds so far (Linux's /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def measure(
    observers: int, procs: int, rounds: int, profile: bool, cpu: dict[str, list[float]] | None = None
) -> dict[str, tuple[float, float]]:
    """Median (seconds until written, seconds until applied everywhere) per mode.

    Both owners run at once and take turns, one change each, so a busy
    machine slows both alike. ``cpu``, if given, gets per mode the CPU seconds
    per update over the timed rounds: [clients' user, clients' system, owner].
    """
    owners = {"pbnb": PbnbOwner(), "raw": RawOwner()}
    fleets = {}
    for mode, owner in owners.items():
        fleets[mode] = ClientProcesses(mode, await owner.start(), observers, procs)
        await fleets[mode].start()
        assert owner.watching() == observers, (mode, owner.watching(), observers)
    profiler = cProfile.Profile() if profile else None
    timings: dict[str, list[tuple[float, float]]] = {mode: [] for mode in owners}
    owner_cpu = dict.fromkeys(owners, 0.0)
    clients_cpu: dict[str, list[tuple[float, float]]] = {}
    try:
        for value in range(rounds + WARMUP):
            if value == WARMUP and cpu is not None:
                clients_cpu = {
                    mode: [process_cpu(p.pid) for p in fleet.procs] for mode, fleet in fleets.items()
                }
            for mode, owner in owners.items():
                if profiler is not None and mode == "pbnb":
                    profiler.enable()
                start, started_cpu = time.perf_counter(), time.thread_time()
                owner.change(value)
                written = await sent()
                owner_cpu[mode] += time.thread_time() - started_cpu if value >= WARMUP else 0.0
                end = await fleets[mode].finished(value)
                if profiler is not None:
                    profiler.disable()
                if value >= WARMUP:
                    timings[mode].append((written - start, end - start))
        if cpu is not None:
            updates = rounds * observers
            for mode, fleet in fleets.items():
                spent = [process_cpu(p.pid) for p in fleet.procs]
                user = sum(
                    after[0] - before[0] for after, before in zip(spent, clients_cpu[mode], strict=True)
                )
                system = sum(
                    after[1] - before[1] for after, before in zip(spent, clients_cpu[mode], strict=True)
                )
                cpu[mode] = [user / updates, system / updates, owner_cpu[mode] / updates]
    finally:
        for mode, owner in owners.items():
            await fleets[mode].stop()
            await owner.close()
    if profiler is not None:
        print(f"\n--- pbnb owner, {observers} observers ---")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    return {
        mode: (statistics.median(w for w, _ in times), statistics.median(e for _, e in times))
        for mode, times in timings.items()
    }


async def main(args: argparse.Namespace) -> None:
    print(
        f"{'observers':>9} {'pbnb ms':>8} {'(sent)':>7} {'raw ms':>7} {'(sent)':>7} "
        f"{'pbnb upd/s':>11} {'raw upd/s':>10} {'pbnb/raw':>9}"
    )
    spent: dict[int, dict[str, list[float]]] = {}
    for observers in args.observers:
        spent[observers] = {}
        figures = await measure(
            observers, args.procs, args.rounds, args.profile, spent[observers] if args.cpu else None
        )
        (pbnb_sent, pbnb_s), (raw_sent, raw_s) = figures["pbnb"], figures["raw"]
        print(
            f"{observers:>9} {pbnb_s * 1000:>8.2f} {pbnb_sent * 1000:>7.2f} {raw_s * 1000:>7.2f} "
            f"{raw_sent * 1000:>7.2f} {observers / pbnb_s:>11,.0f} {observers / raw_s:>10,.0f} "
            f"{pbnb_s / raw_s:>8.2f}x",
            flush=True,
        )
    if args.cpu:
        print("\nCPU us per update: clients' user + system; owner (until written); all, pbnb/raw")
        for observers, modes in spent.items():
            (pu, ps, po), (ru, rs, ro) = ([value * 1e6 for value in modes[mode]] for mode in ("pbnb", "raw"))
            ratio = (pu + ps + po) / (ru + rs + ro)
            pbnb, raw = f"{pu:5.2f} + {ps:5.2f}; {po:5.2f}", f"{ru:5.2f} + {rs:5.2f}; {ro:5.2f}"
            print(f"{observers:>9}  pbnb {pbnb}  raw {raw}  {ratio:.2f}x")


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        mode, port, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        asyncio.run(run_clients(mode, port, count))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--observers", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--rounds", type=int, default=30, help="changes timed per figure")
    parser.add_argument("--profile", action="store_true", help="cProfile the pbnb owner")
    parser.add_argument("--cpu", action="store_true", help="also each side's CPU per update (Linux)")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    # Run the importable module's copy, so every process names the classes alike.
    from benchmarks.bench_fanout import cli as _cli

    _cli()
