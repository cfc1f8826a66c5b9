"""The Redis backplane: one change to many observers over 1, 2, 4 broker processes.

    .venv/bin/python -m benchmarks.bench_backplane [--observers 2000] [--rounds 30] [--latency-rounds 300]

A redis-server (Debian's, on a free loopback port) is started for the run.
Four set-ups hold the same number of observers, spread evenly over two client
processes (as ``bench_fanout`` does):

* ``local``: one broker process without Redis, an ``ObservedCacheable`` (this
  process is the broker, as in ``bench_fanout``);
* ``redis xN``: N broker processes (``python -m pbnb``'s ``serve`` code path:
  ``pbnb.backplane.connect`` then ``pbnb.serve``) sharing a ``SharedCacheable``
  through Redis; the observers are spread evenly over them. The change is made
  in this process, a replica with no observers of its own, so it travels
  through Redis to every broker.

A round is one change; its time runs from the assignment until every client
process has reported all of its copies applied (``time.perf_counter`` is
CLOCK_MONOTONIC: one clock for the machine). The set-ups take turns, one change
each, so a busy machine slows them alike; the figure is the median over the
rounds, and updates per second is observers / time. "broker CPU ms" is the CPU
time the busiest broker process spent fanning the change out to its share of
the observers (``time.thread_time``, so other work on the machine does not
inflate it): what adding broker processes divides.

"CPU ms per change" splits where the machine's time went, per round, from
each process's user + system time (``/proc/<pid>/stat``, so it counts what
``thread_time`` misses: the kernel's share of the socket writes and reads):
the client processes, the broker processes together, redis-server, and this
process (the owner; the broker itself in ``local``). Their sum over the
machine's cores is the least time a round can take here, however the work is
spread: the "floor" column.

Latency: a write on process A (this one) until the one observer of broker
process B has applied it, one change at a time: median and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import pbnb as pb
from benchmarks.bench_fanout import TALLY, Gauge, GaugeRoot, _UntilClosed
from pbnb.backplane import SharedCacheable, connect

WARMUP = 3


class SharedGauge(SharedCacheable):
    """The shared twin of bench_fanout's Gauge: one observed field."""

    observed_fields = ("value",)

    def __init__(self) -> None:
        self.value = -1


class SharedGaugeCopy(pb.ObservedRemoteCache):
    observed_fields = ("value",)

    def changed(self, fields: dict[str, Any]) -> None:
        TALLY.applied(fields["value"])


pb.setUnjellyableForClass(SharedGauge, SharedGaugeCopy)


class TimedGauge(SharedGauge):
    """A broker's replica that reports the CPU time fanning out each change took it.

    CPU time (not wall time), so a machine busy with other work does not inflate it.
    """

    def send_packed(self, name: str, payload: bytes, skip: Any = None) -> int:
        start = time.thread_time()
        told = super().send_packed(name, payload, skip)
        value = self.value

        def report() -> None:  # the frames are written on the loop's next turn
            print(f"SENT {value} {time.thread_time() - start!r}", flush=True)

        asyncio.get_running_loop().call_soon(report)
        return told


pb.setUnjellyableForClass(TimedGauge, SharedGaugeCopy)


# ------------------------------------------------------------ subprocesses


async def run_broker(url: str, name: str) -> None:
    """A broker process: attach the shared gauge, serve it, run until stdin closes."""
    gauge = TimedGauge()
    backplane = await connect(url, objects={name: gauge})
    server = await pb.serve(GaugeRoot(gauge), host="127.0.0.1", port=0)  # type: ignore[arg-type]
    print(f"PORT {server.port}", flush=True)
    _, watcher = await asyncio.get_running_loop().connect_read_pipe(_UntilClosed, sys.stdin)
    await watcher.closed
    await server.close()
    await backplane.close()


async def run_clients(count: int, ports: list[int]) -> None:
    """A client process: ``count`` copies, spread round-robin over ``ports``."""
    TALLY.copies = count
    keep = []
    for index in range(count):
        client = await pb.connect("127.0.0.1", ports[index % len(ports)])
        keep.append((client, await (await client.getRootObject()).callRemote("get")))
    print("READY", flush=True)
    _, watcher = await asyncio.get_running_loop().connect_read_pipe(_UntilClosed, sys.stdin)
    await watcher.closed


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.bench_backplane",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _line(process: asyncio.subprocess.Process, timeout: float = 300) -> bytes:
    return await asyncio.wait_for(process.stdout.readline(), timeout)  # type: ignore[union-attr]


# ------------------------------------------------------------------ driver


class Setup:
    """Broker processes (or this process) holding ``observers`` copies in two client processes."""

    def __init__(self, label: str, observers: int, procs: int):
        self.label = label
        self.observers = observers
        self.procs = procs
        self.brokers: list[asyncio.subprocess.Process] = []
        self.clients: list[asyncio.subprocess.Process] = []
        self.owner: Any = None
        self._cleanup: list[Any] = []
        #: CPU seconds spent in the rounds so far, per kind of process.
        self.cpu = dict.fromkeys(CPU_ROLES, 0.0)
        #: (seconds until every copy applied it, slowest broker's fan-out CPU) per measured round.
        self.times: list[tuple[float, float]] = []

    async def start_local(self) -> None:
        self.owner = Gauge()
        server = await pb.serve(GaugeRoot(self.owner), host="127.0.0.1", port=0)
        self._cleanup.append(server.close)
        await self._start_clients([server.port])

    async def start_shared(self, url: str, name: str, brokers: int) -> None:
        ports = []
        for _ in range(brokers):
            process = await _spawn("--broker", url, name)
            self.brokers.append(process)
            ports.append(int((await _line(process)).split()[1]))
        self.owner = SharedGauge()
        backplane = await connect(url, objects={name: self.owner})
        self._cleanup.append(backplane.close)
        await self._start_clients(ports)

    async def _start_clients(self, ports: list[int]) -> None:
        shares = [self.observers // self.procs + (i < self.observers % self.procs) for i in range(self.procs)]
        for share in filter(None, shares):
            self.clients.append(await _spawn("--client", str(share), ",".join(map(str, ports))))
        for process in self.clients:
            if (await _line(process)).strip() != b"READY":
                raise RuntimeError(f"{self.label}: a client process failed to start")

    async def round(self, value: int, redis_pid: int | None = None) -> tuple[float, float]:
        """Make one change; seconds until every copy applied it, and the slowest broker's fan-out.

        Adds the CPU time each kind of process spent on the round to ``self.cpu``.
        """
        roles = {
            "clients": [process.pid for process in self.clients],
            "brokers": [process.pid for process in self.brokers],
            "redis": [redis_pid] if redis_pid is not None and self.brokers else [],
        }
        before = {role: sum(map(cpu_seconds, pids)) for role, pids in roles.items()}
        own = time.process_time()
        try:
            return await self._round(value)
        finally:
            for role, pids in roles.items():
                self.cpu[role] += sum(map(cpu_seconds, pids)) - before[role]
            self.cpu["owner"] += time.process_time() - own

    async def _round(self, value: int) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.thread_time()
        self.owner.value = value
        if not self.brokers:
            await asyncio.sleep(0)  # this process is the broker: its frames go out on this turn
            fanned = time.thread_time() - cpu
        ends = [await self._report(process, b"DONE", value) for process in self.clients]
        if self.brokers:
            fanned = max([await self._report(process, b"SENT", value) for process in self.brokers])
            return max(ends) - start, fanned
        return max(ends) - start, fanned

    async def _report(self, process: asyncio.subprocess.Process, kind: bytes, value: int) -> float:
        word, got, number = (await _line(process, 60)).split()
        if word != kind or int(got) != value:
            raise RuntimeError(f"{self.label}: unexpected report {word!r} {got!r} for {value}")
        return float(number)

    async def stop(self) -> None:
        for process in [*self.clients, *self.brokers]:
            process.stdin.close()  # type: ignore[union-attr]
        for process in [*self.clients, *self.brokers]:
            await asyncio.wait_for(process.wait(), 60)
        for close in reversed(self._cleanup):
            await close()


CPU_ROLES = ("clients", "brokers", "redis", "owner")
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A throwaway redis-server on a free loopback port."""

    def __enter__(self) -> str:
        executable = shutil.which("redis-server")
        if executable is None:
            raise SystemExit("redis-server is not installed (scripts/setup.sh installs it)")
        self.folder = tempfile.mkdtemp(prefix="pbnb-bench-redis-")
        port = _free_port()
        self.process = subprocess.Popen(
            [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", self.folder],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(500):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return f"redis://127.0.0.1:{port}/0"
            time.sleep(0.01)
        raise SystemExit("redis-server did not start")

    def __exit__(self, *exc_info: Any) -> None:
        self.process.terminate()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


async def fan_out(url: str, redis_pid: int, observers: int, rounds: int) -> list[Setup]:
    """Run the set-ups in turn; each ends with ``times`` (seconds, broker CPU per round) and ``cpu``."""
    setups = [Setup("local", observers, 2)]
    await setups[0].start_local()
    for brokers in (1, 2, 4):
        setup = Setup(f"redis x{brokers}", observers, 2)
        await setup.start_shared(url, f"gauge-{brokers}", brokers)
        setups.append(setup)
    try:
        for value in range(rounds + WARMUP):
            for setup in setups:
                if value == WARMUP:
                    setup.cpu = dict.fromkeys(CPU_ROLES, 0.0)
                took = await setup.round(value, redis_pid)
                if value >= WARMUP:
                    setup.times.append(took)
    finally:
        for setup in setups:
            await setup.stop()
    return setups


async def latency(url: str, rounds: int) -> list[float]:
    """Seconds from a write here (process A) to the observer of broker process B, per change."""
    setup = Setup("latency", 1, 1)
    await setup.start_shared(url, "latency", 1)
    try:
        return [(await setup.round(value))[0] for value in range(rounds + WARMUP)][WARMUP:]
    finally:
        await setup.stop()


async def main(args: argparse.Namespace) -> None:
    redis = RedisServer()
    with redis as url:
        setups = await fan_out(url, redis.process.pid, args.observers, args.rounds)
        medians = {
            setup.label: (
                statistics.median(t for t, _ in setup.times),
                statistics.median(f for _, f in setup.times),
            )
            for setup in setups
        }
        local, one = medians["local"][0], medians["redis x1"]
        cores = os.cpu_count() or 1
        print(f"one change to {args.observers} observers (two client processes), median of {args.rounds}:")
        print(
            f"{'set-up':>10} {'ms':>8} {'upd/s':>8} {'vs local':>8} {'vs x1':>6} {'broker CPU ms':>13} "
            f"{'vs x1':>6} | CPU ms per change: {'clients':>7} {'brokers':>7} {'redis':>5} {'owner':>5} "
            f"{'floor':>5}"
        )
        for setup in setups:
            seconds, fanned = medians[setup.label]
            cpu = {role: used / args.rounds * 1e3 for role, used in setup.cpu.items()}
            print(
                f"{setup.label:>10} {seconds * 1e3:8.2f} {args.observers / seconds:8,.0f} "
                f"{local / seconds:7.2f}x "
                f"{one[0] / seconds:5.2f}x {fanned * 1e3:13.2f} {one[1] / fanned:5.2f}x | {'':18} "
                f"{cpu['clients']:7.1f} {cpu['brokers']:7.1f} {cpu['redis']:5.1f} {cpu['owner']:5.1f} "
                f"{sum(cpu.values()) / cores:5.1f}"
            )
        print(f"floor: a change's CPU ms over this machine's {cores} cores, the least a round can take here")
        samples = sorted(await latency(url, args.latency_rounds))
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        print(
            f"write on A -> observer on B, {len(samples)} changes: "
            f"median {statistics.median(samples) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"
        )


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--observers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--latency-rounds", type=int, default=300)
    parser.add_argument("--broker", nargs=2, metavar=("URL", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=2, metavar=("COUNT", "PORTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.broker:
        asyncio.run(run_broker(*args.broker))
    elif args.client:
        count, ports = args.client
        asyncio.run(run_clients(int(count), [int(port) for port in ports.split(",")]))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    _cli()
