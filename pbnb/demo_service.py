"""What the demo broker serves (``python -m pbnb demo``); ``pbnb.demo`` adds the client's copies.

This module imports neither traitlets nor ipywidgets, so a demo server stays
a plain asyncio program. See ``pbnb.demo`` for what is on offer.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pbnb as pb
from pbnb.cred import InMemoryPasswordChecker, IPerspective, LoginRoot, Portal

__all__ = [
    "DEMO_USERS",
    "ChatRoom",
    "Chatter",
    "Counter",
    "DemoRoot",
    "DemoWorld",
    "Gadget",
    "Record",
    "RemoteRecord",
    "Ticker",
    "make_demo_service",
]


class Record(pb.Copyable):
    """A small record sent by value: a name, a score and some tags."""

    def __init__(self, name: str, score: float, tags: tuple[str, ...] = ()):
        self.name = name
        self.score = score
        self.tags = tags


class RemoteRecord(pb.RemoteCopy):
    """What a ``Record`` becomes on arrival (built without ``__init__``)."""

    name: str
    score: float
    tags: tuple[str, ...]

    def __repr__(self) -> str:
        return f"RemoteRecord({self.name!r}, score={self.score}, tags={self.tags!r})"


pb.setUnjellyableForClass(Record, RemoteRecord)


class Gadget(pb.Copyable):
    """A copyable that no one registered: receiving it raises ``InsecureJelly``."""

    def __init__(self, label: str):
        self.label = label


class Ticker(pb.ObservedCacheable):
    """A value that moves by itself every ``interval`` seconds while anyone watches."""

    observed_fields = ("count", "value")

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.count = 0
        self.value = 100.0
        self._task: asyncio.Task | None = None

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: pb.CacheObserver) -> Any:
        """Start moving when the first watcher arrives."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return super().getStateToCacheAndObserveFor(perspective, observer)

    def step(self) -> None:
        """Move once: a deterministic wobble, so runs are reproducible."""
        count = self.count + 1
        self.update(count=count, value=round(self.value + ((count * 37) % 11 - 5) * 0.25, 2))

    async def _run(self) -> None:
        while self.observers:
            await asyncio.sleep(self.interval)
            self.step()


class Counter(pb.WritableCacheable):
    """A number every client shares: any copy may set ``value``, and every copy follows."""

    observed_fields = ("value", "last_by")
    writable_fields = ("value",)

    def __init__(self) -> None:
        self.value = 0
        self.last_by = ""

    def add(self, amount: int, by: str) -> int:
        """Add ``amount`` on behalf of ``by``, tell every copy, return the new value."""
        self.update(value=self.value + amount, last_by=by)
        return self.value

    def accept_write(self, name: str, value: Any) -> Any:
        """A copy set ``value``: it must be an int."""
        if not isinstance(value, int) or isinstance(value, bool):
            raise pb.Error(f"the counter holds an int, not {type(value).__name__}")
        self.last_by = "a linked widget"
        return value


class Chatter(pb.Avatar):
    """A logged-in chat user: ``perspective_`` methods run as this user."""

    def __init__(self, name: str, room: ChatRoom, mind: pb.RemoteReference | None):
        self.name = name
        self.room = room
        self.mind = mind

    def perspective_say(self, text: str) -> int:
        """Send ``text`` to everyone in the room; return how many received it."""
        if not isinstance(text, str) or not text.strip():
            raise pb.Error("say something: the message must be a non-empty str")
        return self.room.broadcast(self.name, text[:1000])

    def perspective_who(self) -> list[str]:
        """The names of everyone logged in, in the order they arrived."""
        return self.room.names()

    def perspective_whoami(self) -> str:
        """Your user name, as the server knows it (a client cannot claim another)."""
        return self.name


class ChatRoom:
    """The realm of the demo chat: each login gets a ``Chatter``; minds get every message."""

    def __init__(self) -> None:
        self.members: list[Chatter] = []

    def requestAvatar(self, avatar_id: str, mind: Any, *interfaces: type) -> tuple:
        """Make the avatar for ``avatar_id``; its mind, if any, receives ``remote_message``."""
        if IPerspective not in interfaces:
            raise NotImplementedError("the demo chat only hands out PB perspectives")
        chatter = Chatter(avatar_id, self, mind)
        self.members.append(chatter)
        self.broadcast("server", f"{avatar_id} joined")
        return IPerspective, chatter, lambda: self._leave(chatter)

    def broadcast(self, sender: str, text: str) -> int:
        """Push ``(sender, text)`` to every member's mind; return how many have one."""
        minds = [member.mind for member in self.members if member.mind is not None]
        for mind in minds:
            mind.callRemoteNoAnswer("message", sender, text)
        return len(minds)

    def names(self) -> list[str]:
        """Who is logged in."""
        return [member.name for member in self.members]

    def _leave(self, chatter: Chatter) -> None:
        self.members.remove(chatter)
        self.broadcast("server", f"{chatter.name} left")


#: The demo's users and their passwords. Demo only: real servers keep salted keys in a file.
DEMO_USERS = {"alice": "wonderland", "bob": "builder", "carol": "singer"}


class DemoWorld:
    """Everything the demo broker shares between connections; ``pbnb.serve`` it.

    Each connection gets its own ``DemoRoot``, which is also the login root of
    the chat portal, so one port offers both the demo calls and ``client.login``.
    """

    def __init__(self, tick_interval: float = 0.5):
        self.ticker = Ticker(tick_interval)
        self.counter = Counter()
        self.chat = ChatRoom()
        checker = InMemoryPasswordChecker()
        for user, password in DEMO_USERS.items():
            checker.addUser(user, password)
        self.portal = Portal(self.chat, [checker])

    def rootObject(self, connection: Any) -> DemoRoot:
        """Each connection's own root (see ``pbnb.IPBRoot``)."""
        return DemoRoot(self, connection)


class DemoRoot(LoginRoot):
    """The root each demo connection gets: demo calls plus the chat's login."""

    def __init__(self, world: DemoWorld, connection: Any):
        super().__init__(world.portal, connection)
        self.world = world

    def remote_echo(self, value: Any) -> Any:
        """Send ``value`` straight back (references come back as the originals)."""
        return value

    def remote_add(self, a: Any, b: Any) -> Any:
        """Return ``a + b``."""
        return a + b

    async def remote_countdown(self, listener: pb.RemoteReference, start: int = 3) -> str:
        """Call ``listener.remote_count(n)`` for n = start..1, then answer."""
        for n in range(start, 0, -1):
            await listener.callRemote("count", n)
        return "liftoff"

    def remote_records(self) -> list[Record]:
        """A few copyable records."""
        return [
            Record("ada", 9.5, ("math", "engines")),
            Record("grace", 9.8, ("compilers",)),
            Record("alan", 9.7, ("logic", "machines")),
        ]

    def remote_gadget(self) -> Gadget:
        """A copy of a class nobody registered: the caller gets ``InsecureJelly``."""
        return Gadget("not on any allow-list")

    def remote_ticker(self) -> Ticker:
        """The live ticker (a Cacheable)."""
        return self.world.ticker

    def remote_counter(self) -> Counter:
        """The shared counter (a Cacheable)."""
        return self.world.counter

    async def remote_wave(self, points: int = 200, every: float = 0.05) -> AsyncIterator[tuple[int, float]]:
        """Stream ``points`` samples ``(t, y)`` of a fading wave, one every ``every`` seconds.

        A stand-in for an instrument: the caller reads it with ``async for``.
        """
        _check_number("points", points, int, 1, 100_000)
        _check_number("every", every, (int, float), 0.001, 10)
        for t in range(points):
            yield t, round(10 * math.sin(t / 6) * math.exp(-t / 300) + ((t * 37) % 11 - 5) * 0.1, 3)
            await asyncio.sleep(every)

    async def remote_crunch(self, steps: int = 20, pause: float = 0.1) -> str:
        """Work through ``steps`` steps of ``pause`` seconds, reporting progress as it goes."""
        _check_number("steps", steps, int, 1, 10_000)
        _check_number("pause", pause, (int, float), 0, 10)
        for step in range(steps):
            pb.progress(step, steps, f"working on step {step + 1}")
            await asyncio.sleep(pause)
        return f"crunched {steps} steps"

    def remote_increment(self, amount: int = 1, by: str = "someone") -> int:
        """Add to the shared counter; every copy is told."""
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise TypeError(f"amount must be an int, not {type(amount).__name__}")
        return self.world.counter.add(amount, str(by)[:100])


def _check_number(name: str, value: Any, kinds: Any, low: float, high: float) -> None:
    """Refuse a demo argument that is not a number in ``low..high`` (the demo broker is shared)."""
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise pb.Error(f"{name} must be a number from {low} to {high}, got {value!r}")


def make_demo_service() -> DemoWorld:
    """What ``python -m pbnb demo`` serves."""
    return DemoWorld()
