"""CPU instructions per call, counted by valgrind's callgrind: repeatable under any load.

    .venv/bin/python -m benchmarks.instructions [--calls 5000] [--codec-calls 200] [WORKLOAD...]

Server and client share one process and one event loop here, so a figure is
both sides' user-space work for one call (the kernel's share of the socket
calls is not counted). Each figure is the difference between a run of
``--calls`` calls and a run of none, divided by ``--calls``, so start-up costs
cancel out. The serialization workloads are the round trips of
``benchmarks.serialization`` (one per case, ``--codec-calls`` of each but the
small call). For ``stream`` a call is one item of a stream of ``--calls``
rows (``benchmarks.bench_streams``: a pbnb generator against the floor's
length-prefixed msgpack frames). The ``ws:// vs TCP`` workloads count pbnb
over WebSocket against pbnb over TCP (the floor), the 1 MiB echo with
``--codec-calls`` calls. Needs ``valgrind`` on the PATH; all of it takes a few
minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile

import msgpack

import pbnb

from . import bench_streams, pbnb_peer, pbnb_ws_peer, raw_asyncio, serialization
from .workloads import MIB, WINDOW

_CODEC = "serialization: "
_WS = "ws:// vs TCP: "
#: workload -> (floor, pbnb)
CASES = {
    "sequential": ("raw_asyncio", "pbnb_peer"),
    "pipelined": ("raw_asyncio", "pbnb_peer"),
    "stream": ("raw_asyncio", "pbnb"),  # per item of a stream (benchmarks.bench_streams)
    # pbnb over WebSocket against pbnb over TCP: the floor is pbnb itself.
    **{_WS + workload: ("pbnb_peer", "pbnb_ws_peer") for workload in ("sequential", "pipelined", "mib")},
    **{_CODEC + case: ("msgpack", "pbnb") for case in serialization.CASES},
}


async def _served(peer: str, workload: str, calls: int) -> None:
    if workload == "stream":
        return await bench_streams.stream_here(peer, calls)
    if peer in ("pbnb_peer", "pbnb_ws_peer"):
        server = await pbnb.serve(pbnb_peer.EchoRoot(), port=0)
        port = server.port
        client = pbnb_peer.Client() if peer == "pbnb_peer" else pbnb_ws_peer.Client()
    else:
        server = await asyncio.start_server(raw_asyncio.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = raw_asyncio.Client()
    await client.connect(port)
    workload = workload.removeprefix(_WS)
    if not calls:
        pass  # the empty run: start-up and shutdown only
    elif workload == "sequential":
        await client.sequential(calls)
    elif workload == "mib":
        await client.echoes(MIB, calls)
    else:
        await client.pipelined(calls // WINDOW)
    if isinstance(server, pbnb.Server):
        await server.close()
    else:
        await client.close()
        server.close()
        # Its handlers end on their clients' hang-up: wait for them, so that asyncio.run
        # has none to cancel (Python 3.11's streams print a traceback for a cancelled one).
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))


def _inner(peer: str, workload: str, calls: int) -> None:
    if workload.startswith(_CODEC):
        case = serialization.CASES[workload[len(_CODEC) :]]
        pbnb_round_trip, msgpack_round_trip = serialization.round_trips(case)
        round_trip = pbnb_round_trip if peer == "pbnb" else msgpack_round_trip
        round_trip()  # first-call costs (imports, caches) are not per call
        for _ in range(calls):
            round_trip()
    else:
        asyncio.run(_served(peer, workload, calls))


def _count(peer: str, workload: str, calls: int) -> int:
    with tempfile.NamedTemporaryFile() as out:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}"]
        command += [sys.executable, "-m", "benchmarks.instructions", "--inner", peer, workload, str(calls)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000, help="calls per counted run (a multiple of 1,000)")
    parser.add_argument("--codec-calls", type=int, default=200, help="round trips per counted codec run")
    parser.add_argument("--inner", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD", help="default: all; " + ", ".join(CASES))
    args = parser.parse_args()
    if args.inner:
        peer, workload, calls = args.inner
        return _inner(peer, workload, int(calls))
    print(f"instructions per call (callgrind; msgpack {msgpack.version})")
    print(f"{'workload':38s} {'floor':>10s} {'pbnb':>10s}  floor/pbnb")
    for workload in args.workloads or CASES:
        small = not workload.startswith(_CODEC) and not workload.endswith("mib")
        small = small or workload == _CODEC + "small call"
        calls = args.calls if small else args.codec_calls
        floor, ours = ((_count(p, workload, calls) - _count(p, workload, 0)) / calls for p in CASES[workload])
        print(f"{workload:38s} {floor:10,.0f} {ours:10,.0f}  {floor / ours:.2f}x", flush=True)


if __name__ == "__main__":
    main()
