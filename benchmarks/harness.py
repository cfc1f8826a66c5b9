"""Run one peer's server or measuring client in its own process.

``python -m benchmarks.harness server PEER`` serves and prints ``PORT n``.
``python -m benchmarks.harness client PEER PORT`` connects, prints ``READY``,
then answers one JSON command per stdin line::

    {"workload": "sequential", "budget": 0.3}  ->  {"rate": calls_per_second}
                                                or  {"error": "why it cannot run"}

    {"workload": "tuples", ...}  ->  {"rate": ..., "note": "tuples arrived as lists"}

A peer module defines ``DRIVER`` ("asyncio", "uvloop", "twisted" or "sync"), ``serve()``
and ``Client`` whose methods are coroutines, Deferreds or plain functions as the
driver says: ``connect(port)``; ``sequential(count)`` and ``pipelined(batches)``,
each returning the seconds it took; and ``echoes(value, count)``, which echoes
``value`` ``count`` times and returns the seconds and the last echo, for every
workload of ``workloads.ECHOES`` (the harness checks that echo, types included).
A peer whose wire has one array type sets ``CARRIES_TUPLES = False``: its tuples
must come back as lists, and its answers for a workload with tuples say so.
The first command for a workload calibrates a count that fills the
budget; later ones time that same count, so rounds are comparable.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from .workloads import ECHOES, WORKLOADS, check_echo

PEERS = (
    "raw_asyncio",
    "pbnb_peer",
    "pbnb_uvloop_peer",
    "pbnb_ws_peer",
    "twisted_peer",
    "pyro_peer",
    "rpyc_peer",
)


def announce(port: int) -> None:
    """Tell the parent process that a server is listening on ``port``."""
    print(f"PORT {port}", flush=True)


def timed(
    run: Callable[..., Any], client: Any, workload: str, count: int, *, carries_tuples: bool = True
) -> tuple[float, str | None]:
    """Seconds ``count`` units of ``workload`` took, and the note on what its echo lost.

    ``run(method, *args)`` drives one of the client's methods to its result.
    """
    if workload not in ECHOES:
        return run(getattr(client, workload), count), None
    seconds, echoed = run(client.echoes, ECHOES[workload], count)
    return seconds, check_echo(workload, echoed, carries_tuples=carries_tuples)


class _Measurer:
    def __init__(self, client: Any, run: Callable[..., Any], *, carries_tuples: bool):
        self._client = client
        self._run = run
        self._carries_tuples = carries_tuples
        self._counts: dict[str, int] = {}
        self._refused: dict[str, str] = {}

    def handle(self, command: dict) -> dict:
        name, budget = command["workload"], float(command["budget"])
        if name in self._refused:
            return {"error": self._refused[name]}
        try:
            count = self._counts.get(name) or self._calibrate(name, budget)
            seconds, note = self._time(name, count)
        except Exception as exc:
            self._refused[name] = f"{type(exc).__name__}: {str(exc)[:120]}"
            return {"error": self._refused[name]}
        answer: dict[str, Any] = {"rate": count * WORKLOADS[name][0] / seconds}
        if note:
            answer["note"] = note
        return answer

    def _time(self, name: str, count: int) -> tuple[float, str | None]:
        return timed(self._run, self._client, name, count, carries_tuples=self._carries_tuples)

    def _calibrate(self, name: str, budget: float) -> int:
        count = 1
        while True:
            seconds, _ = self._time(name, count)
            if seconds >= budget / 5 or count >= 1 << 20:
                break
            count *= 4
        self._counts[name] = max(1, round(count * budget / seconds))
        return self._counts[name]


def _serve_commands(measurer: _Measurer) -> None:
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(measurer.handle(json.loads(line))), flush=True)


def run_client(peer: Any, port: int) -> None:
    client = peer.Client()
    carries_tuples = getattr(peer, "CARRIES_TUPLES", True)
    if peer.DRIVER in ("asyncio", "uvloop"):
        import asyncio

        loop = (
            asyncio.new_event_loop()
            if peer.DRIVER == "asyncio"
            else importlib.import_module("uvloop").new_event_loop()
        )
        run = lambda work, *args: loop.run_until_complete(work(*args))  # noqa: E731
        run(client.connect, port)
        _serve_commands(_Measurer(client, run, carries_tuples=carries_tuples))
    elif peer.DRIVER == "twisted":
        from twisted.internet import reactor, threads

        def drive() -> None:
            run = lambda work, *args: threads.blockingCallFromThread(reactor, work, *args)  # noqa: E731
            try:
                run(client.connect, port)
                _serve_commands(_Measurer(client, run, carries_tuples=carries_tuples))
            finally:
                reactor.callFromThread(reactor.stop)

        threading.Thread(target=drive, daemon=True).start()
        reactor.run(installSignalHandlers=False)
    else:
        client.connect(port)
        _serve_commands(_Measurer(client, lambda work, *args: work(*args), carries_tuples=carries_tuples))


def _serve_maybe_profiled(peer: Any) -> None:
    """Serve; with PBNB_BENCH_PROFILE=path, under cProfile, dumping stats there on SIGTERM."""
    path = os.environ.get("PBNB_BENCH_PROFILE")
    if not path:
        peer.serve()
        return
    import cProfile

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    profiler = cProfile.Profile()
    try:
        profiler.runcall(peer.serve)
    finally:
        profiler.dump_stats(path)


def main(argv: list[str]) -> None:
    cpu = os.environ.get("PBNB_BENCH_CPU")
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})
    role, name = argv[0], argv[1]
    if name not in PEERS:
        raise SystemExit(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
    peer = importlib.import_module(f"benchmarks.{name}")
    if role == "server":
        _serve_maybe_profiled(peer)
    elif role == "client":
        run_client(peer, int(argv[2]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
