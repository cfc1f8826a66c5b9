"""``python -m pbnb serve ... --workers N``: N broker processes sharing one port.

The supervisor imports nothing it serves. It reserves the port (so ``--port
0`` can be resolved once for all), starts N ``python -m pbnb serve ...
--reuse-port`` children on it and lets the kernel (SO_REUSEPORT) spread new
connections over them; each child has its own connections, and with
``--backplane`` its own replica of every shared cache. A child that dies is
replaced, so its clients, once reconnected, land on a live worker. SIGINT or
SIGTERM stops every child, then the supervisor.

Its stdout carries only its own lines (``pbnb: serving ... on HOST:PORT with
N workers`` once all listen, ``pbnb: stopped``); the children's lines go to
stderr, prefixed with their worker number.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence

#: How long a worker may take to listen; a worker that dies sooner than
#: STEADY after starting, RESTARTS times in a row, makes the supervisor give up.
START_TIMEOUT = 60.0
STEADY = 5.0
RESTARTS = 5


class WorkerFailed(Exception):
    """A worker could not start (its exit status is ``status``)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket on ``host:port``, holding the port for the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reservation = socket.socket(family, socket.SOCK_STREAM)
    try:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind((host, port))
    except BaseException:
        reservation.close()
        raise
    return reservation


class Supervisor:
    """Runs ``workers`` children of ``python -m pbnb serve CHILD_ARGS --port PORT --reuse-port``."""

    def __init__(self, label: str, child_args: Sequence[str], host: str, port: int, workers: int):
        self.label = label
        self.child_args = list(child_args)
        self.host = host
        self.port = port
        self.workers = workers
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False

    async def _spawn(self, number: int) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pbnb",
            "serve",
            *self.child_args,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--reuse-port",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None  # stdout=PIPE
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        if not line.startswith(b"pbnb: serving"):
            status = await process.wait()
            raise WorkerFailed(f"worker {number} exited with status {status} before listening", status or 1)
        print(f"pbnb: worker {number} (pid {process.pid}) listening", file=sys.stderr, flush=True)
        self.processes[number] = process
        return process

    async def _relay(self, number: int, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None  # stdout=PIPE
        async for line in process.stdout:
            print(f"[worker {number}] {line.decode(errors='replace').rstrip()}", file=sys.stderr, flush=True)

    async def _keep(self, number: int, process: asyncio.subprocess.Process) -> None:
        """Watch one worker; replace it whenever it dies, unless we are stopping."""
        quick_deaths = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._relay(number, process)
            status = await process.wait()
            if self._stopping:
                return
            quick_deaths = quick_deaths + 1 if loop.time() - started < STEADY else 0
            if quick_deaths >= RESTARTS:
                raise WorkerFailed(f"worker {number} keeps dying (last status {status})", 1)
            print(
                f"pbnb: worker {number} (pid {process.pid}) exited with status {status}; starting another",
                file=sys.stderr,
                flush=True,
            )
            process = await self._spawn(number)

    async def run(self) -> int:
        """Serve until SIGINT/SIGTERM (exit status 0) or until workers cannot be kept up (non-zero)."""
        reservation = reserve_port(self.host, self.port)
        self.port = reservation.getsockname()[1]
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        keepers: list[asyncio.Task] = []
        try:
            try:
                for number in range(1, self.workers + 1):
                    process = await self._spawn(number)
                    keepers.append(asyncio.ensure_future(self._keep(number, process)))
            finally:
                reservation.close()  # the workers hold the port now
            print(
                f"pbnb: serving {self.label} on {self.host}:{self.port} with {self.workers} workers",
                flush=True,
            )
            stopped = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([stopped, *keepers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped:
                    task.result()  # a keeper only ends by raising
            return 0
        except WorkerFailed as exc:
            print(f"pbnb: {exc}", file=sys.stderr, flush=True)
            return exc.status
        finally:
            self._stopping = True
            await self._stop_all()
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            print("pbnb: stopped", flush=True)

    async def _stop_all(self, grace: float = 30.0) -> None:
        live = [process for process in self.processes.values() if process.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        try:
            await asyncio.wait_for(asyncio.gather(*(process.wait() for process in live)), grace)
        except TimeoutError:
            for process in live:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await asyncio.gather(*(process.wait() for process in live))
