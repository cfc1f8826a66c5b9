"""References over real loopback sockets: pb-behaviours.md items 8-13."""

from __future__ import annotations

import asyncio
import gc

import pytest
from core_net import collect_and_wait, connected, released, within

import pbnb as pb


class Thing(pb.Referenceable):
    def __init__(self, name: str):
        self.name = name

    def remote_name(self) -> str:
        return self.name


class Listener(pb.Referenceable):
    def __init__(self):
        self.heard: list = []
        self.taken = 0

    def remote_hear(self, value):
        self.heard.append(value)
        return f"heard {value}"

    def remote_drop(self, ref):
        self.taken += isinstance(ref, pb.RemoteReference)

    async def remote_take(self, ref):
        self.taken += 1
        return await ref.callRemote("name")


class Registry(pb.Root):
    def __init__(self):
        self.thing = Thing("shared")
        self.listener = None
        self.made: list[Thing] = []

    def remote_thing(self):
        return self.thing

    def remote_new_thing(self, name):
        self.made.append(Thing(name))
        return self.made[-1]

    def remote_is_our_thing(self, obj):
        return obj is self.thing

    def remote_subscribe(self, listener):
        self.listener = listener
        return isinstance(listener, pb.RemoteReference)

    async def remote_notify(self, value):
        return await self.listener.callRemote("hear", value)

    def remote_give_back(self, ref):
        return ref

    def remote_same(self, a, b):
        return [a == b, hash(a) == hash(b), a is b]

    async def remote_push(self, listener, times):
        # Pushes leave one per loop iteration while the client drops each copy
        # at once, so copies cross the client's DECREFs on the wire.
        for _ in range(times):
            listener.callRemoteNoAnswer("drop", self.thing)
            await asyncio.sleep(0)
        return await listener.callRemote("take", self.thing)


@pytest.fixture
async def session():
    async with connected(Registry()) as session:
        yield session


async def test_referenceable_returned_becomes_a_remote_reference(session):
    """Behaviour 8: a returned Referenceable arrives as a RemoteReference that can be called."""
    thing = await within(session.root.callRemote("new_thing", "fresh"))
    assert isinstance(thing, pb.RemoteReference)
    assert await within(thing.callRemote("name")) == "fresh"


async def test_callbacks_from_server_to_client(session):
    """Behaviour 8: the client passes its own Referenceable; the server calls it back."""
    listener = Listener()
    assert await within(session.root.callRemote("subscribe", listener)) is True
    assert await within(session.root.callRemote("notify", "news")) == "heard news"
    assert listener.heard == ["news"]


async def test_remote_reference_sent_home_arrives_as_the_original(session):
    """Behaviour 9: on both sides, a reference sent back to its owner is the owner's object."""
    thing = await within(session.root.callRemote("thing"))
    assert await within(session.root.callRemote("is_our_thing", thing)) is True
    listener = Listener()
    assert await within(session.root.callRemote("give_back", listener)) is listener
    assert await within(session.root.callRemote("give_back", session.root)) is session.root


async def test_references_to_one_object_are_equal_and_hash_alike(session):
    """Behaviour 10: on the client, and on the server for a client object."""
    first = await within(session.root.callRemote("thing"))
    second = await within(session.root.callRemote("thing"))
    other = await within(session.root.callRemote("new_thing", "other"))
    assert first == second and hash(first) == hash(second)
    assert first != other
    assert {first: 1}[second] == 1
    listener = Listener()
    await within(session.root.callRemote("subscribe", listener))
    assert await within(session.root.callRemote("same", listener, listener)) == [True, True, True]


async def test_collecting_the_last_reference_releases_the_export(session):
    """Behaviour 11: the owner is told when the peer's last reference is collected."""
    registry = session.server.root
    connection = session.server_side
    baseline = connection.broker.table_sizes()["exports"]
    first = await within(session.root.callRemote("thing"))
    second = await within(session.root.callRemote("thing"))
    assert first is second  # one handle per remote object
    assert connection.broker.table_sizes()["exports"] == baseline + 1
    gone = released(connection, registry.thing)
    del first
    gc.collect()
    assert await within(session.root.callRemote("new_thing", "x")) is not None  # a round trip
    assert not gone.is_set()  # `second` is still alive
    del second
    await collect_and_wait(gone)
    assert connection.broker.table_sizes()["exports"] == baseline
    assert session.client.broker.table_sizes()["imports"] == 1  # the root


async def test_reference_sent_while_decref_travels_still_resolves(session):
    """Behaviour 11 (twisted#2334): the server pushes the object again and again while the
    client keeps dropping it, so pushes cross DECREFs on the wire; every push resolves."""
    registry = session.server.root
    connection = session.server_side
    baseline = connection.broker.table_sizes()["exports"]
    listener = Listener()
    assert await within(session.root.callRemote("push", listener, 300), 30) == "shared"
    assert listener.taken == 301
    gone = released(connection, registry.thing)
    if connection.broker.table_sizes()["exports"] > baseline:  # the last DECREF is still coming
        await collect_and_wait(gone)
    # Whatever the interleaving, the export went away exactly when the last copy did.
    assert connection.broker.table_sizes()["exports"] == baseline
    assert session.client.broker.table_sizes()["imports"] == 1
    thing = await within(session.root.callRemote("thing"))
    assert await within(session.root.callRemote("is_our_thing", thing)) is True


async def test_live_reference_limit_fails_that_call_only():
    """Behaviour 12: over max_references the call fails with LimitExceeded; the rest works."""
    async with connected(Registry(), server_options={"max_references": 4}) as session:
        kept = [await within(session.root.callRemote("new_thing", str(i))) for i in range(3)]
        with pytest.raises(pb.LimitExceeded, match="max_references"):
            await within(session.root.callRemote("new_thing", "too many"))
        assert await within(kept[0].callRemote("name")) == "0"
        gone = released(session.server_side, session.server.root.made[0])
        del kept
        await collect_and_wait(gone)
        fresh = await within(session.root.callRemote("new_thing", "fits again"))
        assert await within(fresh.callRemote("name")) == "fits again"


async def test_either_side_may_expose_objects():
    """Behaviour 13: the server gets the client's root and calls it (symmetric protocol)."""
    client_root = Listener()
    async with connected(Registry(), client_root=client_root) as session:
        ref = await within(session.server_side.get_root())
        assert isinstance(ref, pb.RemoteReference)
        assert await within(ref.callRemote("hear", "from the server")) == "heard from the server"
        assert client_root.heard == ["from the server"]


class Bouncer(pb.Referenceable):
    """Each side holds one; a bounce calls the other side's bouncer until the count runs out."""

    async def remote_bounce(self, other, count):
        if count == 0:
            return ["bottom"]
        return [count, *await other.callRemote("bounce", self, count - 1)]


async def test_calls_nest_back_and_forth_between_the_two_sides():
    """Behaviour 13: a call can call back into its caller, which calls back again, and so on."""

    class Court(Registry):
        def remote_bouncer(self):
            return Bouncer()

    async with connected(Court()) as session:
        theirs = await within(session.root.callRemote("bouncer"))
        got = await within(Bouncer().remote_bounce(theirs, 30))
        assert got == [*range(30, 0, -1), "bottom"]


async def test_client_without_a_root_refuses_clearly(session):
    with pytest.raises(pb.ProtocolError, match="serves no root"):
        await within(session.server_side.get_root())
