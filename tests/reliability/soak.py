"""The soak: client processes calling a server in this process, checking every answer.

Run as ``python -m reliability.soak PORT CLIENTS CALLS SEED`` (with ``tests/`` on the
path) it is one worker process: it opens CLIENTS connections that make CALLS calls
each and prints a JSON summary.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time

import pbnb as pb

from .harness import ROOT, Solo, until
from .objects import BoardCopy, Doubler, Item, Recorder, SoakRoot


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


async def worker(port: int, clients: int, calls: int, seed: int, window: int = 8) -> None:
    rng = random.Random(seed)
    results = await asyncio.gather(
        *(soak_client(port, calls, window, random.Random(rng.random())) for _ in range(clients)),
        return_exceptions=True,
    )
    summary: dict = {"calls": 0, "wrong": 0, "leftovers": 0, "errors": []}
    for result in results:
        if isinstance(result, BaseException):
            summary["errors"].append(repr(result))
        else:
            for key in ("calls", "wrong", "leftovers"):
                summary[key] += result[key]
    print(json.dumps(summary), flush=True)


async def spawn(*args: str) -> asyncio.subprocess.Process:
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reliability.soak",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
        cwd=str(ROOT),
    )


async def soak(calls: int, clients: int = 50, processes: int = 5):  # -> Row
    """``clients`` connections in ``processes`` processes make ``calls`` calls in all."""
    measure = Solo()
    recorder = Recorder(SoakRoot())
    server = await pb.serve(recorder, keepalive=5.0)
    per_process = clients // processes
    per_client = calls // (per_process * processes)
    started = time.perf_counter()
    workers = [
        await spawn(str(server.port), str(per_process), str(per_client), str(seed))
        for seed in range(processes)
    ]
    samples: list[tuple[int, float]] = []

    async def sample() -> None:
        while True:
            samples.append((recorder.root.answered, measure.memory.peak))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    try:
        outputs = await asyncio.gather(*(process.stdout.read() for process in workers))
        for process in workers:
            await process.wait()
        duration = time.perf_counter() - started
        await until(lambda: not server.connections)
    finally:
        sampler.cancel()
        for process in workers:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await server.close()
    summaries = [json.loads(output) for output in outputs]
    answered = sum(summary["calls"] for summary in summaries)
    errors = [error for summary in summaries for error in summary["errors"]]
    wrong = sum(summary["wrong"] for summary in summaries)
    client_leftovers = sum(summary["leftovers"] for summary in summaries)
    tables = recorder.tables()
    live_items = len(Item.live)
    observers = len(recorder.root.board.observers)
    sent = recorder.root.sent
    warm = [rss for done, rss in samples if done >= answered * 0.1]
    warm_rss = warm[0] if warm else measure.memory.before
    peak_after_warmup = max(warm, default=warm_rss)
    ok = (
        not errors
        and not wrong
        and answered >= calls * 0.99
        and not any(tables.values())
        and not live_items
        and not observers
        and not client_leftovers
        and len(recorder.connections) == per_process * processes
    )
    result = (
        f"{answered:,} calls answered ({answered / duration:,.0f}/s), {wrong} wrong, "
        f"{len(errors)} client errors; {sent['item']:,} references handed out, used, sent home and "
        f"dropped, {sent['callback']:,} calls back through client references, {sent['board']:,} cache "
        f"fetches; server RSS {warm_rss:.0f} MiB after warm-up (10% of calls), peak "
        f"{peak_after_warmup:.0f} MiB (growth {peak_after_warmup - warm_rss:+.1f} MiB); server tables "
        f"after: {sum(tables.values())} entries, {live_items} Items alive, {observers} cache observers"
    )
    if errors:
        result += f"; first error: {errors[0]}"
    name = f"soak: {per_process * processes} clients in {processes} processes"
    return measure.row(name, len(recorder.connections), answered, result, ok)


if __name__ == "__main__":
    port, clients, calls, seed = map(int, sys.argv[1:5])
    asyncio.run(worker(port, clients, calls, seed))
