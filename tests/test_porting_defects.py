"""Regression tests, over loopback, for what porting Twisted's PB howtos turned up."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

import pbnb as pb
from pbnb.cred import AllowAnonymousAccess, Anonymous, InMemoryPasswordChecker, LoginRoot, UsernamePassword

# ------------------------------------------------------------- the wrong user


class Card(pb.Copyable):
    """A copy whose state says who it was made for."""

    def getStateToCopyFor(self, perspective):
        return {"holder": getattr(perspective, "name", None)}


class CardCopy(pb.RemoteCopy):
    pass


pb.setUnjellyableForClass(Card, CardCopy)


class Board(pb.Viewable):
    def view_whoami(self, user):
        return getattr(user, "name", None)


class Desk(pb.Referenceable):
    """A plain object, shared by every user: what it hands out depends on who reached it."""

    board = Board()

    def remote_card(self):
        return Card()

    def remote_board(self):
        return self.board

    def remote_caller(self):
        caller = pb.current_perspective.get()
        return getattr(caller, "name", None)


desk = Desk()


class Clerk(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_desk(self):
        return desk


class Office(pb.Root):
    def remote_desk(self):
        return desk


class DeskLoginRoot(LoginRoot):
    def remote_desk(self):
        return desk


class FrontDesk(pb.Portal):
    def rootObject(self, connection):
        return DeskLoginRoot(self, connection)


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return pb.IPerspective, Clerk(avatar_id or "anonymous"), None


async def _acts_for(ref: pb.RemoteReference) -> list:
    card = await ref.callRemote("card")
    board = await ref.callRemote("board")
    return [card.holder, await board.callRemote("whoami"), await ref.callRemote("caller")]


async def test_an_object_reached_through_an_avatar_acts_for_that_user_whoever_logs_in_later():
    checker = InMemoryPasswordChecker(alice="a", bob="b")
    portal = pb.Portal(Realm(), [checker, AllowAnonymousAccess()])
    async with await pb.serve(portal) as server, await pb.connect("127.0.0.1", server.port) as client:
        alice = await client.login(UsernamePassword("alice", "a"))
        alices_desk = await alice.callRemote("desk")
        assert await _acts_for(alices_desk) == ["alice", "alice", "alice"]
        bob = await client.login(UsernamePassword("bob", "b"))  # on the same connection
        bobs_desk = await bob.callRemote("desk")
        assert await _acts_for(bobs_desk) == ["bob", "bob", "bob"]
        assert await _acts_for(alices_desk) == ["alice", "alice", "alice"]  # still alice's
        guest = await client.login(Anonymous())  # as pbAnonClient does
        assert await _acts_for(await guest.callRemote("desk")) == ["anonymous"] * 3
        assert await _acts_for(alices_desk) == ["alice", "alice", "alice"]
        assert await _acts_for(bobs_desk) == ["bob", "bob", "bob"]


async def test_an_object_reached_before_any_login_acts_for_no_one():
    def root_for_each_connection():
        return Office()

    # A root of our own, and a portal: both hand out objects before anyone logs in.
    async with await pb.serve(root_for_each_connection) as server:
        async with await pb.connect("127.0.0.1", server.port) as client:
            office = await client.getRootObject()
            early = await office.callRemote("desk")
            assert await _acts_for(early) == [None, None, None]

    # A login root that also hands out the desk: reached before and after logins.
    portal = FrontDesk(Realm(), [InMemoryPasswordChecker(alice="a")])
    async with await pb.serve(portal) as server, await pb.connect("127.0.0.1", server.port) as client:
        early = await (await client.getRootObject()).callRemote("desk")
        alice = await client.login(UsernamePassword("alice", "a"))
        assert await _acts_for(await alice.callRemote("desk")) == ["alice"] * 3
        assert await _acts_for(early) == [None, None, None]
        later = await (await client.getRootObject()).callRemote("desk")  # the root is no one's
        assert await _acts_for(later) == [None, None, None]


# ------------------------------------------------- a cache dropped as it is updated


class Counter(pb.Cacheable):
    """Keeps its observers in a list and updates them in a loop, as cache_classes.py does."""

    def __init__(self):
        self.observers = []
        self.value = 0
        self.stopped = 0
        self.pending = []  # what observer.callRemote returned

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)
        self.stopped += 1


class CounterCopy(pb.RemoteCache):
    def observe_set(self, value):
        self.value = value


pb.setUnjellyableForClass(Counter, CounterCopy)


class CounterRoot(pb.Root):
    def __init__(self):
        self.counter = Counter()
        self.seen = []  # how many observers each bump found

    def remote_counter(self):
        return self.counter

    def remote_bump(self, answer, ear=None):
        counter = self.counter
        if ear is not None:  # a call of our own first: it flushes while the read is still acted on
            counter.pending.append(ear.callRemote("hear"))
        counter.value += 1
        self.seen.append(len(counter.observers))
        for observer in counter.observers:
            if answer:
                counter.pending.append(observer.callRemote("set", counter.value))
            else:
                observer.callRemoteNoAnswer("set", counter.value)
        return "bump ok"


class Ear(pb.Referenceable):
    def remote_hear(self):
        return None


async def _drop_a_copy_then_bump(
    ref: pb.RemoteReference, answer: bool, *, decache_first: bool, ear: Ear | None = None
) -> None:
    copy = await ref.callRemote("counter")
    del copy
    if decache_first:
        await asyncio.sleep(0)  # asyncio holds the last answer for one loop turn
    gc.collect()  # without decache_first, the DECACHE goes out right after the next call
    if decache_first:
        await asyncio.sleep(0)  # one more turn: the DECACHE leaves before the next call
    assert await ref.callRemote("bump", answer, ear) == "bump ok"


@pytest.mark.parametrize("calls_back", [False, True], ids=["", "calling-back"])
@pytest.mark.parametrize("answer", [False, True], ids=["callRemoteNoAnswer", "callRemote"])
async def test_a_cache_dropped_as_an_update_is_sent_fails_no_call(answer, calls_back, caplog):
    root = CounterRoot()
    async with await pb.serve(root) as server, await pb.connect("127.0.0.1", server.port) as client:
        ref = await client.getRootObject()
        ear = Ear() if calls_back else None
        for _ in range(5):
            await _drop_a_copy_then_bump(ref, answer, decache_first=False, ear=ear)
        kept = await ref.callRemote("counter")
        assert await ref.callRemote("bump", answer) == "bump ok"
        assert await ref.callRemote("counter") is kept  # the loop above left the live copy alone
        assert kept.value == root.counter.value  # its update came before the bump's answer
        # Updates sent to the dropped copies settled quietly (no answer to wait for).
        assert [await update for update in root.counter.pending] == [None] * (len(root.counter.pending))
        assert root.counter.stopped == 5 and len(root.counter.observers) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("pbnb")]


async def test_stopped_observing_runs_before_the_next_message_is_dispatched():
    root = CounterRoot()
    async with await pb.serve(root) as server, await pb.connect("127.0.0.1", server.port) as client:
        ref = await client.getRootObject()
        for _ in range(5):
            await _drop_a_copy_then_bump(ref, True, decache_first=True)
        assert root.seen == [0] * 5  # no bump ever found the dropped copy's observer
        assert root.counter.stopped == 5


# ------------------------------------------------------------ errors at call time


class Echo(pb.Root):
    def remote_echo(self, value):
        return value


async def test_call_on_a_dead_reference_raises_at_once():
    async with await pb.serve(Echo()) as server:
        client = await pb.connect("127.0.0.1", server.port)
        ref = await client.getRootObject()
        await client.close()
        with pytest.raises(pb.DeadReferenceError):
            ref.callRemote("echo", 1)  # raised by the call itself: Twisted's try/except works
        with pytest.raises(pb.DeadReferenceError):
            ref.callRemoteNoAnswer("echo", 1)

        other = await pb.connect("127.0.0.1", server.port)
        ref = await other.getRootObject()
        await server.close()  # the server goes: the client learns it, then calls
        await asyncio.wait_for(other.wait_closed(), 30)
        with pytest.raises(pb.DeadReferenceError):
            ref.callRemote("echo", 1)


async def test_a_refused_argument_raises_at_call_time():
    async with await pb.serve(Echo()) as server, await pb.connect("127.0.0.1", server.port) as client:
        ref = await client.getRootObject()
        with pytest.raises(pb.InsecureJelly, match=r"cannot send a builtins\.object"):
            ref.callRemote("echo", object())
        with pytest.raises(pb.SerializationError):  # InsecureJelly is one, as PB users catch it
            ref.callRemote("echo", [1, {"x": object()}])
        assert await ref.callRemote("echo", 7) == 7  # nothing was sent, nothing is owed
