"""The objects the reliability server hands out: echo, fresh references, callbacks, a Cacheable."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import pbnb as pb


class Item(pb.Referenceable):
    live: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, n: int):
        self.n = n
        Item.live.add(self)

    def remote_value(self) -> int:
        return self.n


class Board(pb.Cacheable):
    def __init__(self) -> None:
        self.observers: list = []
        self.version = 0

    def getTypeToCopyFor(self, perspective: Any) -> str:
        return "reliability.Board"

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        self.observers.append(observer)
        return {"version": self.version}

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        self.observers.remove(observer)


class BoardCopy(pb.RemoteCache):
    def setCopyableState(self, state: Any) -> None:
        self.version = state["version"]


pb.setUnjellyableForClass("reliability.Board", BoardCopy)


class SoakRoot(pb.Root):
    def __init__(self) -> None:
        self.board = Board()
        self.answered = 0
        self.sent = {"item": 0, "callback": 0, "board": 0}
        self.hanging = 0  # remote_hang calls running
        self.finished = 0  # remote_finish calls done

    def remote_echo(self, value: Any) -> Any:
        self.answered += 1
        return value

    def remote_item(self, n: int) -> Item:
        self.answered += 1
        self.sent["item"] += 1
        return Item(n)

    def remote_take(self, item: Item) -> int:
        self.answered += 1
        return item.n  # the client's reference came home as the Item itself

    async def remote_callback(self, callback: Any, n: int) -> Any:
        self.answered += 1
        self.sent["callback"] += 1
        return await callback.callRemote("twice", n)

    def remote_blob(self, size: int) -> bytes:
        self.answered += 1
        return b"b" * size

    def remote_board(self) -> Board:
        self.answered += 1
        self.sent["board"] += 1
        return self.board

    def remote_boards(self, count: int) -> list:
        return [Board() for _ in range(count)]

    async def remote_hang(self) -> None:
        self.hanging += 1
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.hanging -= 1

    @pb.survives_disconnect
    async def remote_finish(self, seconds: float) -> None:
        """Work that must finish even if the caller leaves."""
        await asyncio.sleep(seconds)
        self.finished += 1

    async def remote_sleep(self, seconds: float, value: Any) -> Any:
        await asyncio.sleep(seconds)
        return value

    def remote_size(self, data: bytes) -> int:
        return len(data)

    def remote_add(self, a: int, b: int) -> int:
        return a + b


class Recorder:
    """Serves one SoakRoot and remembers every connection, to check its tables afterwards."""

    def __init__(self, root: SoakRoot):
        self.root = root
        self.connections: list = []

    def rootObject(self, connection: Any) -> SoakRoot:
        self.connections.append(connection)
        return self.root

    def tables(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for connection in self.connections:
            for name, size in connection.broker.table_sizes().items():
                totals[name] = totals.get(name, 0) + size
        return totals


class Doubler(pb.Referenceable):
    def remote_twice(self, n: int) -> int:
        return 2 * n


class EchoAvatar(pb.Avatar):
    """What a bystander logged in through a Portal calls."""

    def perspective_echo(self, value: Any) -> Any:
        return value


class EchoRealm:
    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: type) -> tuple:
        return interfaces[0], EchoAvatar(), lambda: None


#: The users of ``login_portal()``; the bystander logs in as the first.
USERS = {"bystander": "watching closely", "ada": "lovelace"}


def login_portal(**options: Any) -> Any:
    """A Portal whose users get an EchoAvatar."""
    from pbnb.cred import InMemoryPasswordChecker, Portal

    return Portal(EchoRealm(), [InMemoryPasswordChecker(USERS)], **options)
