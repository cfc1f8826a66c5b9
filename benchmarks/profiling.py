"""Profile one asyncio peer (pbnb by default) on one workload, client and server side.

    .venv/bin/python -m benchmarks.profiling sequential [--peer pbnb_peer] [--count 20000]

The server runs in its own process under cProfile; the client runs here
under cProfile. Prints the functions with the most own time on each side.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import os
import pstats
import tempfile
from pathlib import Path

from .harness import timed
from .run import PeerProcesses
from .workloads import WORKLOADS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--peer", default="pbnb_peer", choices=("pbnb_peer", "raw_asyncio"))
    parser.add_argument("--count", type=int, default=2000, help="units of work to profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    server_stats = Path(tempfile.mkdtemp()) / "server.prof"
    os.environ["PBNB_BENCH_PROFILE"] = str(server_stats)
    server = PeerProcesses(args.peer, with_client=False)
    del os.environ["PBNB_BENCH_PROFILE"]
    try:
        client_stats = _profile_client(args.peer, server.port, args.workload, args.count)
    finally:
        server.close()
    for side, stats in (("client", client_stats), ("server", pstats.Stats(str(server_stats)))):
        print(f"\n===== {side} ({args.peer}, {args.workload} x {args.count}) =====")
        stats.sort_stats("tottime").print_stats(args.top)


def _profile_client(peer_name: str, port: int, workload: str, count: int) -> pstats.Stats:
    peer = importlib.import_module(f"benchmarks.{peer_name}")
    client = peer.Client()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(client.connect(port))
    run = lambda work, *args: loop.run_until_complete(work(*args))  # noqa: E731
    carries_tuples = getattr(peer, "CARRIES_TUPLES", True)
    timed(run, client, workload, max(1, count // 10), carries_tuples=carries_tuples)  # warm up
    profiler = cProfile.Profile()
    seconds, _ = profiler.runcall(timed, run, client, workload, count, carries_tuples=carries_tuples)
    print(f"{count * WORKLOADS[workload][0] / seconds:,.0f} calls/s under the profiler")
    # Hang up before the loop goes, or its connection's tasks are destroyed still pending.
    loop.run_until_complete(client.close())
    loop.close()
    return pstats.Stats(profiler)


if __name__ == "__main__":
    main()
