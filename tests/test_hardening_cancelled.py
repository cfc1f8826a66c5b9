"""Cancelled calls leave nothing behind: the caller's record of them is bounded (sans-IO), and the
server cleans up a call cancelled before it started (loopback)."""

from __future__ import annotations

import asyncio
import gc
import warnings

import msgpack
from pair import ConnectionPair, Outcome

import pbnb as pb
from pbnb.core import events as ev
from pbnb.core.broker import MAX_CANCELLED
from pbnb.core.wire import Kind, encode_frame
from tests.core_net import TIMEOUT, serving


class Slow(pb.Root):
    def remote_wait(self) -> None:
        return None


def test_cancelled_calls_a_peer_never_answers_are_forgotten_and_late_answers_ignored():
    pair = ConnectionPair(server_root=Slow()).handshake()
    root = pair.root()
    client = pair.client
    ids = []
    for _ in range(MAX_CANCELLED + 50):
        outcome = Outcome()
        ids.append(client.call(root, "wait", (), {}, outcome))
        client.cancel(ids[-1])
    client.data_to_send()  # the peer never gets them, and so never answers
    assert len(client._cancelled) == MAX_CANCELLED
    # A late answer to the oldest (forgotten) and to a remembered one: neither breaks the connection.
    for request_id in (ids[0], ids[-1]):
        client.receive_data(encode_frame([Kind.ANSWER, request_id, 0], msgpack.packb(None)))
    assert not any(isinstance(event, ev.ConnectionFailed) for event in client.next_events())
    assert len(client._cancelled) == MAX_CANCELLED - 1
    # An answer to a request never made is still a protocol error.
    client.receive_data(encode_frame([Kind.ANSWER, ids[-1] + 100, 0], msgpack.packb(None)))
    assert any(isinstance(event, ev.ConnectionFailed) for event in client.next_events())


class Gate(pb.Root):
    def __init__(self) -> None:
        self.finished = asyncio.Event()

    async def remote_wait(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self.finished.set()

    def remote_nothing(self) -> None:
        return None


async def test_a_call_cancelled_in_the_read_that_brought_it_is_cleaned_up_like_any_other():
    """CALL and CANCEL flushed together: the method is cancelled (its finally runs) and no task stays."""
    gate = Gate()
    async with serving(gate) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = root.callRemote("nothing")  # sent at once; what follows waits for the next flush
            call = root.callRemote("wait")
            call.cancel()  # so CANCEL goes in the same write as its CALL
            assert await asyncio.wait_for(first, TIMEOUT) is None
            await asyncio.wait_for(gate.finished.wait(), TIMEOUT)
            assert await asyncio.wait_for(root.callRemote("nothing"), TIMEOUT) is None
            gc.collect()
        (side,) = server.connections
        assert side._tasks == {}
        assert side.broker.table_sizes()["inbound_calls"] == 0
        assert not [w for w in caught if "never awaited" in str(w.message)]
