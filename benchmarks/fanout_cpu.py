"""Fan-out work per delivered update, for callgrind: both sides, or one side alone.

    .venv/bin/python -m benchmarks.fanout_cpu pbnb|raw OBSERVERS CHANGES [--side both|owner|observers]

``--side both`` (the default): the owner and ``OBSERVERS`` observer
connections (``benchmarks.bench_fanout``'s classes) share one event loop on
loopback. ``--side owner``: only the owner runs here, its observers in a child
process (``bench_fanout``'s client). ``--side observers``: only the
observers run here, the owner in a child process that changes its value when
told to on its stdin. Each of ``CHANGES`` changes is awaited until every copy
has applied it. It prints this process's CPU time per delivered update; under
``valgrind --tool=callgrind`` (which runs the child natively, uncounted) the
difference between two runs (say 40 and 10 changes) divided by the extra
updates is the instruction count per update of the side(s) run here, user-space
work only, repeatable under any load.

``--broadcast-only`` makes each change inside ``functools.reduce``, so that
``valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce``
counts the owner's broadcasts alone (the loop over observers and the writes),
the same to within a few instructions from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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


def _owner(mode: str) -> Any:
    return bench_fanout.PbnbOwner() if mode == "pbnb" else bench_fanout.RawOwner()


async def _observers(mode: str, port: int, observers: int) -> list[Any]:
    """``observers`` copies of the owner's object on ``port``, held by this process."""
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
    return keep


async def _child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )


async def _line(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 120)).strip()


async def run(
    mode: str, observers: int, changes: int, side: str = "both", broadcast_only: bool = False
) -> float:
    """CPU seconds per delivered update of the side(s) run in this process."""
    loop = asyncio.get_running_loop()
    owner: Any = None
    proc: asyncio.subprocess.Process | None = None
    if side == "observers":
        proc = await _child("benchmarks.fanout_cpu", "--owner-for", mode)
        port = int(await _line(proc))
    else:
        owner = _owner(mode)
        port = await owner.start()
    tally = _AllApplied()
    bench_fanout.TALLY = tally  # type: ignore[assignment]
    keep: list[Any] = []
    if side == "owner":
        proc = await _child("benchmarks.bench_fanout", "--client", mode, str(port), str(observers))
        if await _line(proc) != b"READY":
            raise RuntimeError("the observers' process did not start")
    else:
        keep = await _observers(mode, port, observers)
    if owner is not None:
        while owner.watching() < observers:
            await asyncio.sleep(0.01)
    start = time.process_time()
    for value in range(changes):
        tally.count, tally.want, tally.done = 0, observers, loop.create_future()
        if broadcast_only:
            functools.reduce(lambda _, value: owner.change(value), [value], None)
        elif owner is not None:
            owner.change(value)
        else:
            assert proc is not None and proc.stdin is not None
            proc.stdin.write(f"{value}\n".encode())
        if side == "owner":
            assert proc is not None
            if not (await _line(proc)).startswith(b"DONE"):
                raise RuntimeError("the observers' process failed")
        else:
            await tally.done
    spent = time.process_time() - start
    if proc is not None:
        assert proc.stdin is not None
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 60)
    if owner is not None:
        await owner.close()
    del keep
    return spent / max(1, changes * observers)


async def _serve_changes(mode: str) -> None:
    """The owner of ``--side observers``: prints its port, then changes its value per stdin line."""
    owner = _owner(mode)
    print(await owner.start(), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        owner.change(int(line))
    await owner.close()


def main() -> None:
    if sys.argv[1:2] == ["--owner-for"]:
        asyncio.run(_serve_changes(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("mode", choices=("pbnb", "raw"))
    parser.add_argument("observers", type=int)
    parser.add_argument("changes", type=int)
    parser.add_argument("--side", choices=("both", "owner", "observers"), default="both")
    parser.add_argument("--broadcast-only", action="store_true", help="each change inside functools.reduce")
    args = parser.parse_args()
    if args.broadcast_only and args.side == "observers":
        parser.error("--broadcast-only needs the owner in this process (--side owner or both)")
    spent = asyncio.run(run(args.mode, args.observers, args.changes, args.side, args.broadcast_only))
    print(f"{args.mode} ({args.side}): {spent * 1e6:.2f} us of CPU per update")


if __name__ == "__main__":
    main()
