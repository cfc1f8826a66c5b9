"""Pieces of the backplane tests: a shared scoreboard, its copy, and one "broker" per replica.

In-process tests run several replicas of one shared name, each with its own
backplane connection, its own server and its own clients: to Redis and to
the observers they are separate processes in all but the pid.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from showcase_helpers import REPO

import pbnb as pb
from pbnb.backplane import Backplane, SharedCacheable, connect

# A hang detector, not an assertion: generous for a loaded 2-core CI machine.
TIMEOUT = 60.0
#: What the broker subprocesses serve: one shared counter (tests/procs/shared_counter.py).
TARGET = "tests.procs.shared_counter:root"
_ADDRESS = re.compile(rb"on (\S+):(\d+)")


class Scoreboard(SharedCacheable):
    observed_fields = ("home", "away", "note")
    writable_fields = ("home", "note")

    def __init__(self) -> None:
        self.home = 0
        self.away = 0
        self.note = ""

    def accept_write(self, name: str, value: Any) -> Any:
        if name == "note" and isinstance(value, str):
            return value.strip()  # changed here: the writer must get the accepted value back
        return value


class RecordingCopy(pb.ObservedRemoteCache):
    """Records every change, in order, and lets a test wait for a condition."""

    def setCopyableState(self, state: Any) -> None:
        super().setCopyableState(state)
        self.history: list[Any] = []
        self.changes = asyncio.Event()

    def changed(self, fields: dict[str, Any]) -> None:
        self.history.append(fields)
        self.changes.set()

    async def wait_until(self, condition: Any, timeout: float = TIMEOUT) -> None:
        async def poll() -> None:
            while not condition():
                self.changes.clear()
                await self.changes.wait()

        await asyncio.wait_for(poll(), timeout)


class ScoreboardCopy(RecordingCopy):
    def observe_whistle(self, minute: int) -> None:
        self.history.append(("whistle", minute))
        self.changes.set()


pb.setUnjellyableForClass(Scoreboard, ScoreboardCopy)


class Stadium(pb.Root):
    def __init__(self, board: Scoreboard):
        self.board = board

    def remote_board(self) -> Scoreboard:
        return self.board


class Replica:
    """One replica of the shared board: its backplane, its server, its clients' copies."""

    def __init__(self, board: Scoreboard, backplane: Backplane, server: pb.Server):
        self.board = board
        self.backplane = backplane
        self.server = server
        self.clients: list[pb.Client] = []
        self.copies: list[ScoreboardCopy] = []

    @classmethod
    async def start(cls, url: str, name: str = "board", **options: Any) -> Replica:
        board = Scoreboard()
        backplane = await connect(url, objects={name: board}, **options)
        server = await pb.serve(Stadium(board), port=0)
        return cls(board, backplane, server)

    async def observe(self, count: int = 1) -> list[ScoreboardCopy]:
        """Connect ``count`` clients and return their copies of the board."""
        copies = []
        for _ in range(count):
            client = await pb.connect("127.0.0.1", self.server.port)
            self.clients.append(client)
            root = await client.getRootObject()
            copies.append(await root.callRemote("board"))
        self.copies += copies
        return copies

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await self.server.close()
        await self.backplane.close()


def values(copy: ScoreboardCopy) -> tuple[Any, Any, Any]:
    return copy.home, copy.away, copy.note


class CounterCopy(RecordingCopy):
    """A copy of the counter that ``python -m pbnb serve {TARGET}`` shares."""


pb.setUnjellyableForClass("tests.procs.shared_counter.Counter", CounterCopy)


class Broker:
    """``python -m pbnb serve ...`` in a subprocess; stderr goes to a file (never a full pipe)."""

    def __init__(self, process: asyncio.subprocess.Process, first_line: bytes, stderr: Path):
        self.process = process
        self.first_line = first_line
        self.stderr_path = stderr
        self._stderr = ""
        match = _ADDRESS.search(first_line)
        self.port = int(match[2]) if match else None

    @classmethod
    async def start(cls, *args: str) -> Broker:
        stderr = Path(tempfile.mkstemp(prefix="pbnb-broker-", suffix=".log")[1])
        with stderr.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pbnb",
                "serve",
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=sink,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
        return cls(process, line, stderr)

    @property
    def stderr(self) -> str:
        """What it wrote on stderr so far (all of it, once stopped)."""
        if self.stderr_path.exists():
            self._stderr = self.stderr_path.read_text(errors="replace")
        return self._stderr

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), TIMEOUT)
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
            _ = self.stderr
            self.stderr_path.unlink(missing_ok=True)
        return self.process.returncode
