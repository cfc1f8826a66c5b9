"""The boundary between the sans-IO core and its drivers: frame limits, the one event queue."""

from __future__ import annotations

import pytest
from core_net import connected, within
from pair import ConnectionPair

import pbnb as pb
from pbnb.core import events as ev


class Loud(pb.Root):
    """Raises errors longer than a small peer's frame, and answers what it cannot send."""

    def __init__(self, board: pb.ObservedCacheable | None = None):
        self.board = board

    def remote_shout(self):
        raise pb.Error("x" * 5000)

    def remote_hello(self, name):
        return f"hello {name}"

    def remote_board_and_junk(self):
        # The board is counted (and observed) before object() fails the encode.
        return [self.board, object()]


class Board(pb.ObservedCacheable):
    observed_fields = ("score",)

    def __init__(self):
        self.score = 0
        self.stopped = 0

    def stoppedObserving(self, perspective, observer):
        self.stopped += 1
        super().stoppedObserving(perspective, observer)


class RemoteBoard(pb.ObservedRemoteCache):
    pass


pb.setUnjellyableForClass(Board, RemoteBoard)

LONG_NAME = "m" * 200  # with its header, more than the 200 bytes the server takes


def test_an_error_longer_than_the_callers_frame_is_clipped_to_fit():
    pair = ConnectionPair(server_root=Loud(), client_options={"limits": pb.Limits(max_frame=2000)})
    root = pair.handshake().root()
    error = pair.call(root, "shout").exception()
    assert isinstance(error, pb.RemoteError) and error.remote_type.endswith("Error")
    assert error.message.startswith("x" * 1000) and len(error.message) < 2000
    assert pair.of_type("client", ev.ConnectionFailed) == []
    assert pair.call(root, "hello", "ada").result() == "hello ada"


def test_a_call_too_large_for_the_peer_fails_locally_and_the_connection_lives():
    pair = ConnectionPair(server_root=Loud(), server_options={"limits": pb.Limits(max_frame=200)})
    root = pair.handshake().root()
    before = pair.client.table_sizes()
    outcome = root.callRemote(LONG_NAME)
    with pytest.raises(pb.LimitExceeded, match="frame limit of 200 bytes"):
        outcome.result()
    assert not pair.client.has_data_to_send()  # nothing was queued
    assert pair.client.table_sizes() == before
    pair.pump()
    assert pair.of_type("server", ev.ConnectionFailed) == []
    assert pair.call(root, "hello", "ada").result() == "hello ada"


async def test_error_and_call_limits_over_loopback():
    async with connected(Loud(), client_options={"max_frame": 2000}) as session:
        with pytest.raises(pb.RemoteError) as shouted:
            await within(session.root.callRemote("shout"))
        assert shouted.value.message.startswith("x" * 1000)
        assert await within(session.root.callRemote("hello", "ada")) == "hello ada"
    async with connected(Loud(), server_options={"max_frame": 200}) as session:
        with pytest.raises(pb.LimitExceeded, match=r"call of 2[0-9]{2} bytes exceeds the peer's frame limit"):
            await within(session.root.callRemote(LONG_NAME))
        assert await within(session.root.callRemote("hello", "bob")) == "hello bob"
        assert session.client.broker.pending_calls == 0


async def test_a_rolled_back_answer_releases_its_cache_at_once():
    board = Board()
    async with connected(Loud(board)) as session:
        with pytest.raises(pb.SerializationError, match=r"cannot send a builtins\.object"):
            await within(session.root.callRemote("board_and_junk"))
        # No more bytes from the peer are needed: the owner has stopped counting the observer.
        assert board.stopped == 1 and board.observers == {}
        assert await within(session.root.callRemote("hello", "ada")) == "hello ada"
        assert board.stopped == 1


def test_every_event_goes_through_one_queue():
    board = Board()
    pair = ConnectionPair(server_root=Loud(board)).handshake()
    root = pair.root()
    root.callRemote("board_and_junk")
    pair.transfer(pair.client)  # the call reaches the server, which answers at once
    (released,) = pair.of_type("server", ev.CacheReleased)  # handed over in the same drain
    assert released.cacheable is board
