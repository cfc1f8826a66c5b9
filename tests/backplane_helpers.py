"""Pieces of the backplane tests: a shared scoreboard, its copy, and one "broker" per replica.

In-process tests run several replicas of one shared name, each with its own
backplane connection, its own server and its own clients: to Redis and to
the observers they are separate processes in all but the pid.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pbnb as pb
from pbnb.backplane import Backplane, SharedCacheable, connect

# A hang detector, not an assertion: generous for a loaded 2-core CI machine.
TIMEOUT = 60.0


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


class ScoreboardCopy(pb.ObservedRemoteCache):
    """Records every change, in order, and lets a test wait for a condition."""

    def setCopyableState(self, state: Any) -> None:
        super().setCopyableState(state)
        self.history: list[Any] = []
        self.changes = asyncio.Event()

    def changed(self, fields: dict[str, Any]) -> None:
        self.history.append(fields)
        self.changes.set()

    def observe_whistle(self, minute: int) -> None:
        self.history.append(("whistle", minute))
        self.changes.set()

    async def wait_until(self, condition: Any, timeout: float = TIMEOUT) -> None:
        async def poll() -> None:
            while not condition():
                self.changes.clear()
                await self.changes.wait()

        await asyncio.wait_for(poll(), timeout)


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
