"""Cacheable / RemoteCache over real sockets: pb-behaviours items 18-22."""

from __future__ import annotations

import asyncio
import gc
import itertools

import pytest

import pbnb as pb
from pbnb.cred import InMemoryPasswordChecker, IPerspective, Portal, UsernamePassword
from tests.cache_helpers import (
    TIMEOUT,
    Board,
    BoardCopy,
    Owner,
    collect_and_settle,
    empty_tables,
    server_side,
)
from tests.core_net import serving

# ------------------------------------------------------------------ item 18


async def test_first_send_makes_a_copy_later_sends_refer_to_it():
    board = Board("first")
    async with serving(Owner(board)) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        copy = await root.callRemote("get")
        assert type(copy) is BoardCopy and copy.text == "first"
        assert len(board.observed) == 1
        perspective, observer = board.observed[0]
        assert perspective is None  # no login on this connection
        assert isinstance(observer, pb.CacheObserver)

        board.text = "changed on the owner"  # later sends carry no state, so this must not show
        again = await root.callRemote("get")
        assert again is copy and copy.text == "first"
        assert len(board.observed) == 1
        assert client.broker.table_sizes()["cache_imports"] == 1
        assert server_side(server, client).broker.table_sizes()["cache_exports"] == 1


async def test_same_cacheable_twice_in_one_message_arrives_as_one_object():
    board = Board()
    async with serving(Owner(board)) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        first, nested = await root.callRemote("twice")
        assert first is nested["again"]
        assert isinstance(first, BoardCopy)
        assert len(board.observed) == 1


async def test_each_connection_gets_its_own_copy_and_observer():
    board = Board()
    async with serving(Owner(board)) as server:
        async with (
            await pb.connect("127.0.0.1", server.port) as one,
            await pb.connect("127.0.0.1", server.port) as two,
        ):
            copy_one = await (await one.getRootObject()).callRemote("get")
            copy_two = await (await two.getRootObject()).callRemote("get")
            assert copy_one is not copy_two
            (_, observer_one), (_, observer_two) = board.observed
            assert observer_one != observer_two
            await observer_two.callRemote("text", "only two")
            assert copy_two.text == "only two" and copy_one.text == "hello"


# ------------------------------------------------------------------ item 19


async def test_observer_calls_run_observe_methods_in_order():
    board = Board()
    async with serving(Owner(board)) as server, await pb.connect("127.0.0.1", server.port) as client:
        copy = await (await client.getRootObject()).callRemote("get")
        _, observer = board.observed[0]
        answers = []
        for i in range(300):
            if i % 3 == 0:
                answers.append(observer.callRemote("append", i))
            else:
                observer.callRemoteNoAnswer("append", i)
        await copy.wait_for_items(300)
        assert copy.log == list(range(300))
        assert (await answers[-1]) == "298 items"  # the answer is observe_append's return value


async def test_observer_call_to_a_missing_observe_method_raises_no_such_method():
    board = Board()
    async with serving(Owner(board)) as server, await pb.connect("127.0.0.1", server.port) as client:
        copy = await (await client.getRootObject()).callRemote("get")
        _, observer = board.observed[0]
        with pytest.raises(pb.NoSuchMethod, match="setCopyableState"):
            await observer.callRemote("setCopyableState", {"text": "forged"})
        assert copy.text == "hello"


# ------------------------------------------------------------------ item 20


async def test_observers_compare_equal_and_can_be_removed_from_lists_and_sets():
    board = Board()
    async with serving(Owner(board)) as server:
        one = await pb.connect("127.0.0.1", server.port)
        two = await pb.connect("127.0.0.1", server.port)
        copy_one = await (await one.getRootObject()).callRemote("get")
        await (await two.getRootObject()).callRemote("get")
        watching = [observer for _, observer in board.observed]
        as_set = set(watching)
        assert len(as_set) == 2

        del copy_one
        await collect_and_settle(one)
        await board.wait_stopped(1)
        _, stopped = board.stopped[0]
        assert stopped == watching[0] and hash(stopped) == hash(watching[0]) and stopped != watching[1]
        watching.remove(stopped)
        as_set.discard(stopped)
        assert watching == [board.observed[1][1]] and as_set == {board.observed[1][1]}
        await one.close()
        await two.close()


async def test_an_observer_never_equals_a_reference_with_the_same_number():
    board = Board()
    async with serving(Owner(board)) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        await root.callRemote("get")
        _, observer = board.observed[0]
        # Export ids and cache ids both start at 1 on a fresh connection.
        reference = pb.RemoteReference(observer._broker, observer._id)
        assert observer != reference and reference != observer


# ------------------------------------------------------------------ item 21


async def test_remote_cache_sent_back_arrives_as_the_original():
    board = Board()
    async with serving(Owner(board)) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        copy = await root.callRemote("get")
        assert await root.callRemote("is_mine", copy) is True
        assert await root.callRemote("is_mine", [copy, copy]) is False  # a list, not the board
        assert len(board.observed) == 1


async def test_a_remote_cache_from_another_connection_cannot_be_sent():
    board = Board()
    async with serving(Owner(board)) as server:
        async with (
            await pb.connect("127.0.0.1", server.port) as one,
            await pb.connect("127.0.0.1", server.port) as two,
        ):
            copy = await (await one.getRootObject()).callRemote("get")
            with pytest.raises(pb.SerializationError, match="not a cache held over this connection"):
                await (await two.getRootObject()).callRemote("is_mine", copy)


# ------------------------------------------------------------------ item 22


async def test_collecting_the_last_copy_stops_observing_once_and_both_sides_forget():
    board = Board()
    async with serving(Owner(board)) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        copy = await root.callRemote("get")
        also = await root.callRemote("get")
        owner_side = server_side(server, client).broker
        del copy
        await collect_and_settle(client)
        assert board.stopped == []  # one copy is still held: nothing released

        del also
        await collect_and_settle(client)
        await board.wait_stopped(1)
        assert board.stopped == board.observed
        assert owner_side.table_sizes()["cache_exports"] == 0
        assert client.broker.table_sizes()["cache_imports"] == 0
        assert not client.broker._tables.cache_tombstones and not client.broker._tables.cache_import_ids

        _, old_observer = board.observed[0]
        with pytest.raises(pb.DeadReferenceError, match="dropped that cache"):
            await old_observer.callRemote("append", 1)

        # Sending it again starts over: fresh state, a new observer.
        board.text = "second life"
        fresh = await root.callRemote("get")
        assert fresh.text == "second life" and len(board.observed) == 2
        assert board.observed[1][1] != old_observer
        await collect_and_settle(client)
        assert len(board.stopped) == 1  # still exactly once for the first copy


async def test_disconnect_stops_observing_once_and_empties_every_table():
    board = Board()
    async with serving(Owner(board)) as server:
        client = await pb.connect("127.0.0.1", server.port)
        copy = await (await client.getRootObject()).callRemote("get")
        owner_side = server_side(server, client)
        await client.close()
        await asyncio.wait_for(asyncio.shield(owner_side.closed), TIMEOUT)
        await board.wait_stopped(1)
        assert board.stopped == board.observed
        assert empty_tables(owner_side.broker) and empty_tables(client.broker)
        assert not client.broker._tables.cache_tombstones and not client.broker._tables.cache_import_ids
        del copy
        gc.collect()
        assert len(board.stopped) == 1


async def test_disconnect_in_the_middle_of_updates_leaves_no_entries_on_either_side():
    board = Board()
    updates_sent = 0

    class Closer(BoardCopy):
        def observe_append(self, item):
            super().observe_append(item)
            if item == 50:
                self.transport.abort()

    class Host(pb.Root):
        def remote_get(self):
            return board

    async def push(observer):
        nonlocal updates_sent
        for i in itertools.count():
            try:
                observer.callRemoteNoAnswer("append", i)
            except pb.DeadReferenceError:
                return
            updates_sent += 1
            if i % 20 == 0:
                await asyncio.sleep(0)  # let the writes out, so the peer sees them mid-stream

    registry = pb.CopyRegistry()
    registry.register(Board, Closer)
    async with serving(Host()) as server:
        client = await pb.connect("127.0.0.1", server.port, registry=registry)
        copy = await (await client.getRootObject()).callRemote("get")
        copy.transport = client.connection.transport
        owner_side = server_side(server, client)
        _, observer = board.observed[0]
        await asyncio.wait_for(push(observer), TIMEOUT)
        await asyncio.wait_for(asyncio.shield(owner_side.closed), TIMEOUT)
        await asyncio.wait_for(client.wait_closed(), TIMEOUT)
        await board.wait_stopped(1)
        assert 50 <= len(copy.log) < updates_sent
        assert copy.log == list(range(len(copy.log)))
        assert empty_tables(owner_side.broker) and empty_tables(client.broker)
        assert board.stopped == board.observed


# ----------------------------------------------------------- perspectives


class Desk(pb.Avatar):
    """Stands in for a logged-in user: calls on it run under this avatar."""

    def __init__(self, name, board, note):
        self.name = name
        self.board = board
        self.note = note

    def perspective_get(self):
        return self.board

    def perspective_poke(self):
        """Send the note to every copy of the board while running as this user."""
        for _, observer in self.board.observed:
            observer.callRemoteNoAnswer("append", self.note)


async def test_hooks_receive_the_avatar_of_the_receiving_connection():
    board = Board("view")
    note = Board("note")
    names = iter(["alice", "bob"])
    async with serving(lambda: Desk(next(names), board, note)) as server:
        async with (
            await pb.connect("127.0.0.1", server.port) as alice,
            await pb.connect("127.0.0.1", server.port) as bob,
        ):
            alice_copy = await (await alice.getRootObject()).callRemote("get")
            bob_root = await bob.getRootObject()
            bob_copy = await bob_root.callRemote("get")
            assert alice_copy.text == "view for alice" and bob_copy.text == "view for bob"
            assert [p.name for p, _ in board.observed] == ["alice", "bob"]

            # Bob triggers an update carrying a second Cacheable: each peer's copy
            # of it is made for that peer's own avatar, not for the caller's.
            await bob_root.callRemote("poke")
            await alice_copy.wait_for_items(1)
            await bob_copy.wait_for_items(1)
            assert alice_copy.log[0].text == "note for alice"
            assert bob_copy.log[0].text == "note for bob"
            assert sorted(p.name for p, _ in note.observed) == ["alice", "bob"]
        await board.wait_stopped(2)
        assert sorted(p.name for p, _ in board.stopped) == ["alice", "bob"]


class Reader(pb.Avatar):
    def __init__(self, name, board):
        self.name = name
        self.board = board

    def perspective_get(self):
        return self.board


class BoardRealm:
    def __init__(self, board):
        self.board = board

    def requestAvatar(self, avatar_id, mind, *interfaces):
        return IPerspective, Reader(avatar_id, self.board), lambda: None


async def test_after_a_real_login_the_hooks_receive_that_users_avatar():
    board = Board("board")
    portal = Portal(BoardRealm(board), [InMemoryPasswordChecker(ada="a pw", bob="b pw", iterations=4096)])
    async with serving(portal) as server:
        async with (
            await pb.connect("127.0.0.1", server.port) as ada,
            await pb.connect("127.0.0.1", server.port) as bob,
        ):
            ada_avatar = await ada.login(UsernamePassword("ada", "a pw"))
            bob_avatar = await bob.login(UsernamePassword("bob", "b pw"))
            ada_copy = await ada_avatar.callRemote("get")
            bob_copy = await bob_avatar.callRemote("get")
            assert (ada_copy.text, bob_copy.text) == ("board for ada", "board for bob")
            assert [p.name for p, _ in board.observed] == ["ada", "bob"]
        await board.wait_stopped(2)
        assert {p.name for p, _ in board.stopped} == {"ada", "bob"}
