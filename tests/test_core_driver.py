"""The boundary between the sans-IO core and its drivers: frame limits, the one event queue."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
from core_net import connected, within
from pair import ConnectionPair

import pbnb as pb
from pbnb.aio.connection import connection_of
from pbnb.core import events as ev
from pbnb.core.broker import Broker
from pbnb.core.reference import Undriven
from pbnb.core.wire import (
    MIN_FRAME,
    PREAMBLE,
    RECEIVABLE,
    ConnectionState,
    FrameReader,
    Kind,
    encode_frame,
)


def frame_kinds(stream: bytes, preamble: bool = True) -> list[int]:
    """The kinds of the frames in ``stream``, read by a FrameReader that accepts any kind."""
    kinds: list[int] = []

    class EveryKind(dict):
        def get(self, kind, default=None):
            return lambda header, payload: kinds.append(header[0])

    reader = FrameReader(1 << 30, EveryKind(), lambda kind: None)
    reader.feed(stream if preamble else PREAMBLE + stream)
    return kinds


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


# ------------------------------------------------------------ the state machine


def handshake_bytes(max_frame: int = 1 << 20) -> bytes:
    return PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": max_frame}])


def test_the_states_of_a_connection_and_the_handshake_event():
    broker = Broker()
    assert broker.state is ConnectionState.AWAITING_PREAMBLE and broker.has_data_to_send()
    assert broker.data_to_send().startswith(PREAMBLE)  # ours goes out at once
    broker.receive_data(PREAMBLE[:5])
    assert broker.state is ConnectionState.AWAITING_PREAMBLE
    broker.receive_data(PREAMBLE[5:])
    assert broker.state is ConnectionState.AWAITING_HELLO and broker.next_events() == []
    broker.receive_data(encode_frame([Kind.HELLO, {"max_frame": 4096}]))
    assert broker.state is ConnectionState.OPEN
    assert broker.next_events() == [ev.HandshakeCompleted(max_frame=4096)]
    broker.receive_data(encode_frame([Kind.GOODBYE, "x.Y", "bye"]) + encode_frame([Kind.PING, 1]))
    (failed,) = broker.next_events()
    assert isinstance(failed, ev.ConnectionFailed) and failed.by_peer
    assert broker.state is ConnectionState.CLOSING and not broker.has_data_to_send()  # the PING was ignored
    broker.receive_data(b"anything at all")
    assert broker.next_events() == []
    broker.connection_lost()
    assert broker.state is ConnectionState.CLOSED and broker.disconnected


@pytest.mark.parametrize("kind", sorted(set(Kind) - RECEIVABLE[ConnectionState.AWAITING_HELLO]))
def test_before_hello_only_hello_and_goodbye_are_legal(kind):
    broker = Broker()
    broker.data_to_send()
    broker.receive_data(PREAMBLE + encode_frame([kind, 1, 2, 3]))
    (failed,) = broker.next_events()
    assert isinstance(failed, ev.ConnectionFailed) and "before HELLO" in str(failed.error)
    assert broker.state is ConnectionState.CLOSING
    assert frame_kinds(broker.data_to_send(), preamble=False) == [Kind.GOODBYE]  # the peer is told why


def test_a_second_hello_and_an_unknown_kind_are_refused_once_open():
    for frame, message in (
        (encode_frame([Kind.HELLO, {}]), "sent HELLO while the connection is open"),
        (encode_frame([99]), "unknown message kind 99"),
    ):
        broker = Broker()
        broker.receive_data(handshake_bytes())
        assert isinstance(broker.next_events()[0], ev.HandshakeCompleted)
        broker.receive_data(frame)
        (failed,) = broker.next_events()
        assert isinstance(failed, ev.ConnectionFailed) and message in str(failed.error)


def test_every_kind_has_a_handler_and_every_state_a_row():
    assert set(RECEIVABLE) == set(ConnectionState)
    assert RECEIVABLE[ConnectionState.OPEN] == frozenset(Kind) - {Kind.HELLO}
    pair = ConnectionPair().handshake()
    assert pair.client.state is pair.server.state is ConnectionState.OPEN


def test_a_peer_announcing_a_tiny_frame_limit_is_refused():
    broker = Broker()
    broker.receive_data(handshake_bytes(max_frame=MIN_FRAME - 1))
    (failed,) = broker.next_events()
    assert isinstance(failed, ev.ConnectionFailed) and f"the least is {MIN_FRAME}" in str(failed.error)
    with pytest.raises(ValueError, match="at least"):
        pb.Limits(max_frame=MIN_FRAME - 1)


def test_receiving_large_frame_and_queued_frames():
    sender, receiver = Broker(), Broker()
    receiver.receive_data(sender.data_to_send())
    big = encode_frame([Kind.PING, 1], b"\xc0" * (1 << 20))  # a nil payload padded out: large
    receiver.receive_data(big[:1000])
    assert receiver.receiving_large_frame
    receiver.receive_data(memoryview(big)[1000:])
    assert not receiver.receiving_large_frame
    assert receiver.queued_frames == 3  # preamble, HELLO, the PONG
    receiver.data_to_send()
    assert receiver.queued_frames == 0 and not receiver.has_data_to_send()


class Gauge(pb.ObservedCacheable):
    observed_fields = ("value",)

    def __init__(self):
        self.value = 0


class GaugeCopy(pb.ObservedRemoteCache):
    observed_fields = ("value",)


pb.setUnjellyableForClass(Gauge, GaugeCopy)


def test_packed_call_now_returns_the_frame_only_when_nothing_waits_before_it():
    gauge = Gauge()
    pair = ConnectionPair(server_root=type("R", (pb.Root,), {"remote_get": lambda self: gauge})()).handshake()
    copy = pair.call(pair.root(), "get").result()
    (observer,) = gauge.observers
    owner = pair.server
    sets = [msgpack.packb([["value", value], {}]) for value in range(3)]
    owner.call_packed(observer, "set", sets[0])
    queued = owner.data_to_send()
    assert owner.packed_call_now(observer, "set", sets[0]) == queued  # nothing waits: written at once
    assert not owner.has_data_to_send()
    owner.ping(1)  # a frame waits: the update goes behind it
    assert owner.packed_call_now(observer, "set", sets[1]) is None
    behind_ping = owner.data_to_send()
    assert behind_ping.startswith(encode_frame([Kind.PING, 1]))
    owner._events.append(ev.HandshakeCompleted(0))  # an event waits to be acted on first
    assert owner.packed_call_now(observer, "set", sets[2]) is None
    pair.feed(pair.client, queued + behind_ping + owner.data_to_send())
    assert copy.value == 2


def test_a_broadcast_counts_those_told_skips_one_drops_the_dead_and_raises_after_the_rest():
    gauge = Gauge()
    root = type("R", (pb.Root,), {"remote_get": lambda self: gauge})()
    pairs = [ConnectionPair(server_root=root).handshake() for _ in range(5)]
    copies = [pair.call(pair.root(), "get").result() for pair in pairs]
    observer_of = {observer.broker: observer for observer in gauge.observers}
    dead, skipped, small = (observer_of[pair.server] for pair in pairs[:3])
    pairs[0].server.connection_lost()  # its stoppedObserving has not run: the broadcast drops it
    small.broker._peer_max_frame = MIN_FRAME  # refuses the long value below, and only that
    assert gauge.send_change("set", ("value", 1), {}, skip=skipped) == 3  # packed once for all
    assert dead not in gauge.observers and skipped in gauge.observers
    with pytest.raises(pb.LimitExceeded, match=f"frame limit of {MIN_FRAME} bytes"):
        gauge.send_change("set", ("value", "x" * 200), {})  # the others are told all the same
    for pair in pairs[1:]:
        pair.pump()
    assert [copy.value for copy in copies[1:]] == ["x" * 200, 1, "x" * 200, "x" * 200]
    assert gauge.observers.keys() == {skipped, small, *(observer_of[pair.server] for pair in pairs[3:])}
    # Arguments per perspective: those left out are not counted.
    assert gauge.notify_each("set", lambda perspective: (("value", 3), {})) == 4
    assert gauge.notify_each("set", lambda perspective: None) == 0
    for pair in pairs[1:]:
        pair.pump()
    assert [copy.value for copy in copies[1:]] == [3, 3, 3, 3]
    for pair in pairs:  # the owner's quick test of a live observer agrees with its table
        tables = pair.server._tables
        assert tables.observers == {entry.observer for entry in tables.cache_exports.values()}
    assert not pairs[0].server._tables.observers


# ------------------------------------------------------------ the public hooks


class PerConnection:
    """Not a Referenceable: an IPBRoot that gives each connection a root of its own."""

    def __init__(self):
        self.made = []

    def rootObject(self, connection):
        root = Loud()
        self.made.append((connection, root))
        return root


async def test_an_ipbroot_gives_each_connection_its_own_root():
    source = PerConnection()
    assert isinstance(source, pb.IPBRoot) and isinstance(Loud(), pb.IPBRoot)
    async with connected(source) as first, connected(source) as second:
        assert await within(first.root.callRemote("hello", "a")) == "hello a"
        assert await within(second.root.callRemote("hello", "b")) == "hello b"
        assert len({id(root) for _, root in source.made}) == 2
        assert connection_of(first.root) is first.client.connection
        assert connection_of(first.root).loop is asyncio.get_running_loop()


async def test_a_description_is_asked_once_and_kept_by_the_broker():
    async with connected(Loud()) as session:
        root = session.root
        assert root.description is None and dir(root.remote) == []
        described = await within(root.describe())
        assert root.description == described and described["type"] == "Loud"
        assert "hello" in dir(root.remote) and root.broker.known_methods(root) == dir(root.remote)
        assert root.export_id == 1 and root.broker is session.client.broker


def test_a_broker_without_a_driver_says_so():
    pair = ConnectionPair(server_root=Loud()).handshake()
    root = pair.root()
    pair.client.invoker = Undriven()
    with pytest.raises(RuntimeError, match="no driver"):
        root.callRemote("hello", "x")
