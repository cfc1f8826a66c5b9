"""ObservedCacheable / ObservedRemoteCache: observer bookkeeping and broadcasts, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading

import pytest

import pbnb as pb
from pbnb.core import events as ev
from tests.cache_helpers import TIMEOUT, Waiting, collect_and_settle, server_side
from tests.core_net import serving
from tests.pair import ConnectionPair


class Scoreboard(pb.ObservedCacheable):
    observed_fields = ("title", "score")

    def __init__(self, title: str = "final"):
        self.title = title
        self.score = 0
        self.notes = "owner only"


class ScoreboardCopy(Waiting, pb.ObservedRemoteCache):
    observed_fields = ("title", "score")

    def setCopyableState(self, state):
        super().setCopyableState(state)
        self.initial = dict(state)
        self.changes = []
        self.blobs = []

    def changed(self, fields):
        self.changes.append(dict(fields))
        self._wake()

    def observe_blob(self, data):
        self.blobs.append(data)
        self._wake()


class Sheet(pb.ObservedCacheable):
    """No declared fields: the state is the copyable state, changes go through notify."""

    def __init__(self):
        self.rows = []


class SheetCopy(Waiting, pb.ObservedRemoteCache):
    def observe_row(self, row):
        self.rows.append(row)
        self._wake()


pb.setUnjellyableForClass(Scoreboard, ScoreboardCopy)
pb.setUnjellyableForClass(Sheet, SheetCopy)


class Arena(pb.Root):
    def __init__(self, *shared):
        self.shared = shared

    def remote_get(self, index=0):
        return self.shared[index]

    def remote_ping(self):
        return "pong"


@contextlib.asynccontextmanager
async def watchers(root, count, **options):
    """A server for ``root`` and ``count`` clients, each holding a copy of ``root.shared[0]``."""
    async with serving(root) as server:
        clients = [await pb.connect("127.0.0.1", server.port, **options) for _ in range(count)]
        try:
            copies = [await (await client.getRootObject()).callRemote("get") for client in clients]
            yield server, clients, copies
        finally:
            for client in clients:
                await client.close()


async def test_notify_reaches_every_copy_and_counts_them():
    sheet = Sheet()
    async with watchers(Arena(sheet), 3) as (_, _, copies):
        assert list(sheet.observers.values()) == [None, None, None]  # no login: perspective None
        assert sheet.notify("row", [1, "a"]) == 3
        assert sheet.notify("row", [2, "b"]) == 3
        for copy in copies:
            await copy.wait_until(lambda copy=copy: len(copy.rows) == 2)
            assert copy.rows == [[1, "a"], [2, "b"]]


async def test_initial_state_is_the_declared_fields_and_never_the_bookkeeping():
    board = Scoreboard()
    sheet = Sheet()
    sheet.rows.append("first")
    async with watchers(Arena(board, sheet), 1) as (_, clients, copies):
        assert copies[0].initial == {"title": "final", "score": 0}
        assert not hasattr(copies[0], "notes")
        sheet_copy = await (await clients[0].getRootObject()).callRemote("get", 1)
        assert sheet_copy.__dict__.keys() == {"rows"} and sheet_copy.rows == ["first"]


async def test_assigning_a_declared_field_broadcasts_it():
    board = Scoreboard()
    async with watchers(Arena(board), 2) as (_, _, copies):
        board.score = 3
        board.notes = "not broadcast"
        board.title = "overtime"
        for copy in copies:
            await copy.wait_until(lambda copy=copy: len(copy.changes) == 2)
            assert copy.changes == [{"score": 3}, {"title": "overtime"}]
            assert (copy.score, copy.title) == (3, "overtime")


async def test_update_sends_several_fields_in_one_message():
    board = Scoreboard()
    async with watchers(Arena(board), 1) as (_, _, (copy,)):
        assert board.update(score=7, title="done") == 1
        await copy.wait_until(lambda: copy.changes)
        assert copy.changes == [{"score": 7, "title": "done"}]
        with pytest.raises(AttributeError, match=r"\['notes'\], which are not in observed_fields"):
            board.update(notes="x")


async def test_a_copy_refuses_changes_to_fields_it_did_not_declare():
    board = Scoreboard()
    sheet = Sheet()
    async with watchers(Arena(board, sheet), 1) as (_, clients, (copy,)):
        (observer,) = board.observers
        with pytest.raises(pb.RemoteError, match="does not accept a remote change to 'notes'") as info:
            await observer.callRemote("set", "notes", "forged")
        assert info.value.remote_type == "AttributeError"
        assert not hasattr(copy, "notes")

        sheet_copy = await (await clients[0].getRootObject()).callRemote("get", 1)
        (sheet_observer,) = sheet.observers
        for name in ("_secret", "__class__", "not an identifier"):
            with pytest.raises(pb.RemoteError, match="does not accept a remote change"):
                await sheet_observer.callRemote("update", {name: 1})
        with pytest.raises(pb.RemoteError, match="expects a dict of changes, got list") as info:
            await sheet_observer.callRemote("update", ["rows", 1])
        assert info.value.remote_type == "TypeError"
        assert sheet_copy.__dict__.keys() == {"rows"}


async def test_observers_are_forgotten_when_a_copy_is_dropped_or_its_peer_leaves():
    board = Scoreboard()
    async with watchers(Arena(board), 3) as (server, clients, copies):
        _, second, third = board.observers
        del copies[0]
        await collect_and_settle(clients[0])
        assert list(board.observers) == [second, third]

        owner_side = server_side(server, clients[1])
        await clients[1].close()
        await asyncio.wait_for(asyncio.shield(owner_side.closed), TIMEOUT)
        assert list(board.observers) == [third]
        assert board.notify("set", "score", 1) == 1


def test_observers_whose_connection_died_are_pruned_without_stopped_observing():
    board = Scoreboard()
    pair = ConnectionPair(server_root=Arena(board)).handshake()
    copy = pair.call(pair.root(), "get").result()
    assert len(board.observers) == 1
    pair.server.connection_lost()
    events = pair.server.next_events()
    assert ev.CacheReleased in {type(event) for event in events}  # left unhandled on purpose
    assert len(board.observers) == 1
    assert board.notify("set", "score", 5) == 0
    assert board.observers == {}
    del copy


async def test_a_peer_that_stops_reading_never_delays_the_others():
    sheet = Sheet()
    async with watchers(Arena(sheet), 2) as (_, clients, (slow_copy, fast_copy)):
        slow = clients[0].connection.transport
        slow.pause_reading()
        row = "x" * 1000
        for i in range(2000):
            assert sheet.notify("row", (i, row)) == 2  # never waits, never drops the slow one
        await fast_copy.wait_until(lambda: len(fast_copy.rows) == 2000)
        assert slow_copy.rows == []  # it has read nothing, and nobody waited for it
        slow.resume_reading()
        await slow_copy.wait_until(lambda: len(slow_copy.rows) == 2000)
        assert [i for i, _ in slow_copy.rows] == list(range(2000))


def _vanishing_peer(port: int, holding: threading.Event, vanish: threading.Event) -> None:
    """A client on a loop of its own: it takes a copy, then closes when ``vanish`` is set."""

    async def run():
        client = await pb.connect("127.0.0.1", port)
        copy = await (await client.getRootObject()).callRemote("get")
        holding.set()
        await asyncio.to_thread(vanish.wait, TIMEOUT)
        await client.close()
        del copy

    asyncio.run(run())


async def test_a_peer_gone_in_the_middle_of_a_broadcast_is_written_to_no_more(caplog):
    sheet = Sheet()
    async with watchers(Arena(sheet), 1) as (server, _, (bystander,)):
        holding, vanish = threading.Event(), threading.Event()
        peer = threading.Thread(target=_vanishing_peer, args=(server.port, holding, vanish))
        peer.start()
        await asyncio.to_thread(holding.wait, TIMEOUT)
        assert len(sheet.observers) == 2
        vanish.set()
        peer.join(TIMEOUT)  # blocking this loop: the owner hears of the close only by writing
        assert not peer.is_alive()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for number in range(200):
                sheet.notify("row", number)  # the first writes to the gone peer fail
            await bystander.wait_until(lambda: len(bystander.rows) == 200)
        # asyncio logs every write past the fifth to a transport that a failed write closed
        assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
        assert bystander.rows == list(range(200))
        assert sheet.notify("row", 200) == 1  # the gone peer's observer is dropped


async def test_a_call_that_cannot_go_to_one_peer_still_goes_to_the_others():
    board = Scoreboard()
    async with serving(Arena(board)) as server:
        small = await pb.connect("127.0.0.1", server.port, max_frame=4096)
        large = await pb.connect("127.0.0.1", server.port)
        small_copy = await (await small.getRootObject()).callRemote("get")
        large_copy = await (await large.getRootObject()).callRemote("get")
        with pytest.raises(pb.LimitExceeded, match="frame limit of 4096"):
            board.notify("blob", b"x" * 10_000)
        await large_copy.wait_until(lambda: large_copy.blobs)
        assert large_copy.blobs == [b"x" * 10_000]
        assert len(board.observers) == 2  # a refused call is not a dead peer
        assert small_copy.blobs == []
        await small.close()
        await large.close()


class Desk(pb.Avatar):
    def __init__(self, name, shared):
        self.name = name
        self.shared = shared

    def perspective_get(self):
        return self.shared


class PersonalSheet(Sheet):
    def getStateToCacheFor(self, perspective):
        return {"rows": [f"welcome {perspective.name}"]}


pb.setUnjellyableForClass(PersonalSheet, SheetCopy)


async def test_state_and_updates_can_differ_per_perspective():
    sheet = PersonalSheet()
    names = iter(["alice", "bob", "carol"])
    async with serving(lambda: Desk(next(names), sheet)) as server:
        clients = [await pb.connect("127.0.0.1", server.port) for _ in range(3)]
        alice, bob, carol = [await (await c.getRootObject()).callRemote("get") for c in clients]
        assert [p.name for p in sheet.observers.values()] == ["alice", "bob", "carol"]
        assert bob.rows == ["welcome bob"]

        def only_friends(perspective):
            return None if perspective.name == "carol" else ((f"hi {perspective.name}",), {})

        assert sheet.notify_each("row", only_friends) == 2
        sheet.notify("row", "everyone")
        for copy, expected in ((alice, "alice"), (bob, "bob")):
            await copy.wait_until(lambda copy=copy: len(copy.rows) == 3)
            assert copy.rows == [f"welcome {expected}", f"hi {expected}", "everyone"]
        await carol.wait_until(lambda: len(carol.rows) == 2)
        assert carol.rows == ["welcome carol", "everyone"]
        for client in clients:
            await client.close()
    gc.collect()


class Pinger(pb.Referenceable):
    def remote_ping(self):
        return "pong from the owner"


class Carrier(SheetCopy):
    def observe_carry(self, thing):
        self.carried = thing
        self._wake()


async def test_plain_broadcasts_leave_at_once_for_every_peer():
    sheet = Sheet()
    async with watchers(Arena(sheet), 3) as (server, clients, copies):
        owners = [server_side(server, client).broker for client in clients]
        assert sheet.notify("row", {"n": 1}) == 3
        # Packed once and written before notify returned: nothing waits for a later loop turn.
        assert not any(owner.has_data_to_send() for owner in owners)
        for copy in copies:
            await copy.wait_until(lambda copy=copy: copy.rows == [{"n": 1}])


async def test_broadcasts_of_references_and_shared_objects_are_encoded_per_connection():
    sheet = Sheet()
    registry = pb.CopyRegistry()
    registry.register(Sheet, Carrier)
    pinger = Pinger()
    async with watchers(Arena(sheet), 2, registry=registry) as (_, _, copies):
        shared = {"k": 1}
        assert sheet.notify("carry", [pinger, shared, shared]) == 2
        for copy in copies:
            await copy.wait_until(lambda copy=copy: hasattr(copy, "carried"))
            reference, first, second = copy.carried
            assert first is second == {"k": 1}
            assert await reference.callRemote("ping") == "pong from the owner"
        assert copies[0].carried[0] is not copies[1].carried[0]
