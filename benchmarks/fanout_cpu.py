"""Fan-out work per delivered update: the owner and its observers in one process.

    .venv/bin/python -m benchmarks.fanout_cpu pbnb|raw OBSERVERS CHANGES

The owner and ``OBSERVERS`` observer connections (``benchmarks.bench_fanout``'s
classes) share one event loop on loopback; each of ``CHANGES`` changes is
awaited until every copy has applied it. It prints the CPU time per delivered
update; under ``valgrind --tool=callgrind`` the difference between two runs
(say 40 and 10 changes) divided by the extra updates is the instruction count
per update, both sides' user-space work, repeatable under any load.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pbnb as pb

from . import bench_fanout


class _AllApplied:
    """Stands in for bench_fanout's tally: resolves ``done`` when ``want`` copies applied the change."""

    def __init__(self) -> None:
        self.count = self.want = 0
        self.done: asyncio.Future[None] | None = None

    def applied(self, value: int) -> None:
        self.count += 1
        if self.count == self.want and self.done is not None:
            self.done.set_result(None)


async def run(mode: str, observers: int, changes: int) -> float:
    """CPU seconds per delivered update."""
    tally = _AllApplied()
    bench_fanout.TALLY = tally  # type: ignore[assignment]
    owner: Any = bench_fanout.PbnbOwner() if mode == "pbnb" else bench_fanout.RawOwner()
    port = await owner.start()
    loop = asyncio.get_running_loop()
    keep: list[Any] = []
    for _ in range(observers):
        if mode == "pbnb":
            client = await pb.connect("127.0.0.1", port)
            keep.append((client, await (await client.getRootObject()).callRemote("get")))
        else:
            _, protocol = await loop.create_connection(bench_fanout.RawCopy, "127.0.0.1", port)
            await protocol.ready
            keep.append(protocol)
    while owner.watching() < observers:
        await asyncio.sleep(0.01)
    start = time.process_time()
    for value in range(changes):
        tally.count, tally.want, tally.done = 0, observers, loop.create_future()
        owner.change(value)
        await tally.done
    spent = time.process_time() - start
    await owner.close()
    return spent / max(1, changes * observers)


if __name__ == "__main__":
    mode, observers, changes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(f"{mode}: {asyncio.run(run(mode, observers, changes)) * 1e6:.2f} us of CPU per update")
