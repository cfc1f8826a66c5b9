"""The in-flight drop race, driven deterministically with two sans-IO brokers (item 22).

The owner sends a CACHED reference while the peer's DECACHE for its last copy is
on the way. The owner must answer with the state (CACHE_STATE) and the peer must
hold every event until it has it; with nothing in flight the owner answers
UNCACHED. Either way stoppedObserving runs exactly once, when the last copy goes.
"""

from __future__ import annotations

import gc
import struct

import pytest

from pbnb.core import events as ev
from pbnb.core.broker import Broker
from pbnb.core.wire import Kind, decode_header, encode_frame
from pbnb.errors import DeadReferenceError
from tests.cache_helpers import Board, BoardCopy, Owner
from tests.pair import ConnectionPair


def frame_kinds(data: bytes) -> list[int]:
    """The message kinds in a chunk of queued bytes."""
    kinds = []
    while data:
        (body,) = struct.unpack_from(">I", data)
        header = decode_header(data[6 : 6 + int.from_bytes(data[4:6], "big")])
        kinds.append(header[0])
        data = data[4 + body :]
    return kinds


def deliver(pair: ConnectionPair, receiver: Broker, data: bytes) -> list:
    """Hand ``data`` to ``receiver`` the way the pair would (whole or byte by byte); return its events."""
    chunks = [data[i : i + 1] for i in range(len(data))] if pair.byte_by_byte else [data]
    reported = []
    for chunk in chunks:
        receiver.receive_data(chunk)
        events = receiver.next_events()
        reported.extend(events)
        pair.handle(receiver, events)
    return reported


def released(pair: ConnectionPair) -> list[ev.CacheReleased]:
    return pair.of_type("server", ev.CacheReleased)


def forgotten(pair: ConnectionPair) -> bool:
    client, server = pair.client, pair.server
    return (
        client.table_sizes()["cache_imports"] == 0
        and server.table_sizes()["cache_exports"] == 0
        and not client._tables.cache_tombstones
        and not client._tables.cache_import_ids
        and not client._tables.awaited_states
        and client._held_events is None
    )


@pytest.fixture(params=[False, True], ids=["whole", "byte-by-byte"])
def pair(request):
    board = Board("v1")
    pair = ConnectionPair(server_root=Owner(board), byte_by_byte=request.param).handshake()
    pair.board = board
    return pair


def test_a_drop_with_nothing_in_flight_is_answered_uncached(pair):
    root = pair.root()
    copy = pair.call(root, "get").result()
    assert isinstance(copy, BoardCopy)
    del copy
    gc.collect()
    pair.client.flush_collected()
    decache = pair.client.data_to_send()
    assert frame_kinds(decache) == [Kind.DECACHE]
    deliver(pair, pair.server, decache)
    assert frame_kinds(pair.server.data_to_send()) == [Kind.UNCACHED]
    assert pair.client._tables.cache_tombstones  # until UNCACHED arrives, the peer remembers the class
    deliver(pair, pair.client, encode_frame([Kind.UNCACHED, 1]))
    assert len(released(pair)) == 1
    assert forgotten(pair)


def test_a_cached_ref_racing_the_drop_gets_the_state_and_holds_events(pair):
    board = pair.board
    root = pair.root()
    copy = pair.call(root, "get").result()
    _, observer = board.observed[0]

    # The owner answers a second "get" (a CACHED ref, no state) and pushes an
    # update, but none of it has reached the peer yet...
    again = root.callRemote("get")
    pair.transfer(pair.client)
    board.text = "v2"
    observer.callRemoteNoAnswer("text", "v2")
    in_flight = pair.server.data_to_send()
    assert frame_kinds(in_flight) == [Kind.ANSWER, Kind.OBSERVE]

    # ...when the peer drops its only copy and says so.
    del copy
    gc.collect()
    pair.client.flush_collected()
    pair.transfer(pair.client)
    state_frame = pair.server.data_to_send()
    assert frame_kinds(state_frame) == [Kind.CACHE_STATE]
    # The dropped copy's observation ended; the copy the CACHED ref will build
    # is a new observation with a new observer (same cache id).
    assert [event.observer for event in released(pair)] == [observer]
    assert len(board.observed) == 2
    _, new_observer = board.observed[1]
    assert new_observer is not observer and new_observer != observer
    watching = [observer, new_observer]  # bookkeeping in a list, the PB idiom
    watching.remove(observer)  # what stoppedObserving for the old copy does
    assert watching == [new_observer]
    assert pair.server.table_sizes()["cache_exports"] == 1

    # The orphan ref arrives first: the answer is held until the state comes.
    deliver(pair, pair.client, in_flight)
    assert not again.done()
    deliver(pair, pair.client, state_frame)
    revived = again.result()
    assert isinstance(revived, BoardCopy) and revived.text == "v2"
    assert pair.client.table_sizes()["cache_imports"] == 1

    # Updates reach the revived copy through its new observer; the old one is dead.
    pair.call(new_observer, "append", "after")
    assert revived.log == ["after"]
    with pytest.raises(DeadReferenceError):
        observer.callRemote("append", "lost").result()

    del revived, again
    gc.collect()
    pair.pump()
    assert [event.observer for event in released(pair)] == [observer, new_observer]
    assert forgotten(pair)


def test_events_after_an_orphan_ref_keep_their_order(pair):
    """Answers to calls made after the orphan arrived wait behind it."""
    board = pair.board
    root = pair.root()
    copy = pair.call(root, "get").result()
    first = root.callRemote("get")
    second = root.callRemote("ping")
    pair.transfer(pair.client)
    in_flight = pair.server.data_to_send()
    del copy
    gc.collect()
    pair.client.flush_collected()
    pair.transfer(pair.client)
    state_frame = pair.server.data_to_send()

    assert deliver(pair, pair.client, in_flight) == []
    assert not first.done() and not second.done()
    released_events = deliver(pair, pair.client, state_frame)
    assert [type(event) for event in released_events] == [ev.AnswerReceived, ev.AnswerReceived]
    assert [event.token for event in released_events] == [first, second]
    assert second.result() == "pong" and first.result().text == board.text


def test_calling_an_observer_after_release_raises_dead_reference(pair):
    board = pair.board
    root = pair.root()
    copy = pair.call(root, "get").result()
    _, observer = board.observed[0]
    del copy
    gc.collect()
    pair.pump()
    assert len(released(pair)) == 1
    with pytest.raises(DeadReferenceError, match="dropped that cache"):
        observer.callRemote("append", 1).result()
    assert not pair.server.has_data_to_send()


def test_connection_lost_releases_every_cache_once(pair):
    board = pair.board
    other = Board("other")
    pair.server.root.board = other
    root = pair.root()
    held = pair.call(root, "get").result()
    pair.server.root.board = board
    held_too = pair.call(root, "get").result()
    pair.disconnect()
    assert {event.cacheable for event in released(pair)} == {board, other}
    assert len(released(pair)) == 2
    assert all(count == 0 for count in pair.server.table_sizes().values())
    assert all(count == 0 for count in pair.client.table_sizes().values())
    del held, held_too
    gc.collect()
    pair.client.flush_collected()
    assert len(released(pair)) == 2
