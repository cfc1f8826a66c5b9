"""PB over WebSocket beside PB over TCP, in one process: CPU time per call, same-run ratios.

    .venv/bin/python -m benchmarks.websocket            # about a minute
    .venv/bin/python -m benchmarks.websocket --quick

Server and client share one event loop, so each figure is the whole cost of a
call, both ends included, in CPU seconds of this process (``time.process_time``):
other load on the machine slows the wall clock but hardly the CPU time we use.
Rounds alternate TCP and WebSocket; the ratio is TCP's time over WebSocket's (1.0:
as fast; higher is better), the median over rounds with min-max in brackets.
The separate-process figures (``benchmarks.run --peers pbnb_peer pbnb_ws_peer``)
measure the same workloads in wall-clock time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import pbnb

from .pbnb_peer import EchoRoot
from .workloads import DICTS, MIB, SMALL, WINDOW

WORKLOADS: dict[str, tuple[int, Callable[[pbnb.RemoteReference, int], Awaitable[None]]]] = {}


def workload(name: str, count: int):
    def register(run: Callable[[pbnb.RemoteReference, int], Awaitable[None]]):
        WORKLOADS[name] = (count, run)
        return run

    return register


@workload("sequential", 2000)
async def _sequential(root: pbnb.RemoteReference, count: int) -> None:
    for _ in range(count):
        await root.callRemote("echo", SMALL)


@workload("pipelined", 5)
async def _pipelined(root: pbnb.RemoteReference, count: int) -> None:
    for _ in range(count):
        await asyncio.gather(*[root.callRemote("echo", SMALL) for _ in range(WINDOW)])


@workload("dicts", 200)
async def _dicts(root: pbnb.RemoteReference, count: int) -> None:
    for _ in range(count):
        await root.callRemote("echo", DICTS)


@workload("mib", 40)
async def _mib(root: pbnb.RemoteReference, count: int) -> None:
    for _ in range(count):
        await root.callRemote("echo", MIB)


async def measure(rounds: int, scale: float) -> dict[str, list[float]]:
    """Per workload, each round's ratio of TCP's CPU time to WebSocket's."""
    ratios: dict[str, list[float]] = {name: [] for name in WORKLOADS}
    async with await pbnb.serve(EchoRoot(), port=0) as server:
        tcp = await pbnb.connect("127.0.0.1", server.port)
        ws = await pbnb.connect(f"ws://127.0.0.1:{server.port}/")
        roots = {"tcp": await tcp.getRootObject(), "ws": await ws.getRootObject()}
        for name, (count, run) in WORKLOADS.items():
            count = max(1, int(count * scale))
            for root in roots.values():
                await run(root, max(1, count // 10))  # warm up
            for round_number in range(rounds):
                spent = {}
                order = ["tcp", "ws"] if round_number % 2 == 0 else ["ws", "tcp"]
                for kind in order:
                    start = time.process_time()
                    await run(roots[kind], count)
                    spent[kind] = time.process_time() - start
                ratios[name].append(spent["tcp"] / spent["ws"])
        await tcp.close()
        await ws.close()
    return ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args(argv)
    rounds, scale = (5, 0.3) if args.quick else (9, 1.0)
    ratios = asyncio.run(measure(rounds, scale))
    print(f"\nCPU time of pbnb over TCP / over ws:// (higher is better; 1.0: as fast), {rounds} rounds\n")
    print("| workload | ws:// vs TCP |")
    print("|---|---|")
    for name, values in ratios.items():
        print(f"| {name} | {statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f}) |")


if __name__ == "__main__":
    main()
