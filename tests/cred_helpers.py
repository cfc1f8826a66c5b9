"""Helpers for the login tests: a realm that records what happens, a recording relay.

``serving`` and ``within`` come from ``core_net``, shared with the core tests.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from core_net import within

import pbnb as pb
from pbnb.cred import InMemoryPasswordChecker, IPerspective, Portal, UsernamePassword

USERS = {"alice": "correct horse", "bob": "battery staple"}
ALICE = UsernamePassword("alice", USERS["alice"])
BOB = UsernamePassword("bob", USERS["bob"])


class User(pb.Avatar):
    """An avatar that knows its user name and its client's mind."""

    def __init__(self, name: Any, mind: Any, number: int):
        self.name = name
        self.mind = mind
        self.number = number

    def perspective_whoami(self) -> Any:
        return self.name

    def perspective_number(self) -> int:
        return self.number

    async def perspective_call_me_back(self, text: str) -> Any:
        return await self.mind.callRemote("told", f"{self.name}: {text}")

    def perspective_view(self, viewable: Any) -> Any:
        return viewable


class Realm:
    """Makes a fresh ``User`` per login and records requests and logouts.

    ``gate``, when set, is awaited before the avatar is returned, so a test can
    act while a login is in the middle of ``requestAvatar``.
    """

    def __init__(self) -> None:
        self.requested: list[Any] = []
        self.logouts: list[Any] = []
        self.avatars: list[weakref.ref] = []
        self.minds: list[weakref.ref] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.logged_out = asyncio.Event()

    async def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: type) -> tuple:
        assert IPerspective in interfaces
        self.requested.append(avatar_id)
        if mind is not None:
            self.minds.append(weakref.ref(mind))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        user = User(avatar_id, mind, len(self.requested))
        self.avatars.append(weakref.ref(user))

        def logout() -> None:
            user.mind = None  # a realm lets go of the mind at logout
            self.logouts.append(user.number)
            self.logged_out.set()

        return IPerspective, user, logout

    async def wait_logouts(self, count: int) -> None:
        while len(self.logouts) < count:
            self.logged_out.clear()
            await within(self.logged_out.wait())


class Mind(pb.Referenceable):
    """A client's mind: records what the server tells it."""

    def __init__(self) -> None:
        self.told: list[str] = []

    def remote_told(self, text: str) -> str:
        self.told.append(text)
        return "ok"


def make_portal(realm: Any = None, *checkers: Any, **options: Any) -> Portal:
    """A portal over ``realm`` (a fresh Realm) with ``USERS`` in memory unless checkers are given."""
    return Portal(realm or Realm(), checkers or [InMemoryPasswordChecker(USERS)], **options)


@asynccontextmanager
async def client_of(server: pb.Server, **options: Any) -> AsyncIterator[pb.Client]:
    client = await within(pb.connect("127.0.0.1", server.port, **options))
    try:
        yield client
    finally:
        await client.close()


def login_root_of(server: pb.Server) -> Any:
    """The LoginRoot of the server's only connection."""
    (connection,) = server.connections
    return connection.broker.root


class Relay:
    """A loopback TCP relay between a client and a server that records every byte.

    ``async with Relay(server.port) as relay:`` then connect to ``relay.port``.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self.upstream = bytearray()  # client -> server
        self.downstream = bytearray()  # server -> client
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        """Listen on a free loopback port and return it."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        routes = ((reader, up_writer, self.upstream), (up_reader, writer, self.downstream))
        for source, sink, record in routes:
            task = asyncio.ensure_future(self._pump(source, sink, record))
            self._tasks.add(task)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bytearray) -> None:
        try:
            while data := await source.read(65536):
                record.extend(data)
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
