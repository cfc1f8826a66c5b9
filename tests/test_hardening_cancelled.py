"""The caller's record of cancelled calls is bounded, whatever the peer does (sans-IO)."""

from __future__ import annotations

import msgpack
from pair import ConnectionPair, Outcome

import pbnb as pb
from pbnb.core import events as ev
from pbnb.core.broker import MAX_CANCELLED
from pbnb.core.wire import Kind, encode_frame


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
