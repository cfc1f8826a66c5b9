"""Remote streams without sockets (issue 16): the frames, the credit rules, refusals, every table emptied.

Two brokers joined by a ConnectionPair (whole and byte by byte); the frames
that cross are read back, so "no round trip per item" and "never past the
credit" are checked on the wire itself.
"""

from __future__ import annotations

import msgpack
import pytest

import pbnb as pb
from pbnb.core import events as ev
from pbnb.core.streaming import Batch, Window, is_tuples_first
from pbnb.core.wire import PREAMBLE, FrameReader, Kind, encode_frame
from tests.pair import ConnectionPair, Outcome, Stream


class Feed(pb.Root):
    def __init__(self):
        self.produced = 0
        self.closed = 0

    def remote_count(self, n):
        try:
            for i in range(n):
                self.produced += 1
                yield i
        finally:
            self.closed += 1

    def remote_forever(self, size=0):
        try:
            while True:
                self.produced += 1
                yield b"x" * size if size else self.produced
        finally:
            self.closed += 1

    def remote_fails_after(self, n):
        yield from range(n)
        raise pb.Error("broken row")

    def remote_rows_of_refs(self):
        row = pb.Referenceable()
        yield row
        yield [row, row]

    def remote_value(self):
        return 7


class Logged(ConnectionPair):
    """A pair that keeps the kind (and header) of every frame that crossed, per sender."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames = {"client": [], "server": []}
        self._readers = {side: self._reader(side) for side in self.frames}

    def _reader(self, side):
        frames = self.frames[side]

        class EveryKind(dict):
            def get(self, kind, default=None):
                return lambda header, payload: frames.append(header)

        return FrameReader(1 << 30, EveryKind(), lambda kind: None)

    def feed(self, receiver, data):
        self._readers[self.side(self.peer(receiver))].feed(data)
        super().feed(receiver, data)

    def kinds(self, side, *, since=0):
        return [Kind(header[0]).name for header in self.frames[side][since:] if header[0] >= Kind.STREAM]


def open_pair(byte_by_byte=False, **server_limits):
    options = {"limits": pb.Limits(**server_limits)} if server_limits else {}
    pair = Logged(server_root=Feed(), byte_by_byte=byte_by_byte, server_options=options).handshake()
    return pair, pair.root()


def opened(pair, outcome, window):
    """The stream that ``outcome`` answers with, ``window`` granted with its call."""
    pair.client.stream_window(outcome.request_id, window)
    pair.pump()
    return outcome.result()


def tables_empty(pair):
    client = pair.client.table_sizes()
    server = pair.server.table_sizes()
    return all(v == (k == "imports") for k, v in client.items()) and all(
        v == (k == "exports") for k, v in server.items()
    )


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_a_stream_opens_is_granted_a_window_sends_its_items_and_ends(byte_by_byte):
    pair, root = open_pair(byte_by_byte)
    outcome = pair.call(root, "count", 5)
    stream = outcome.result()
    assert isinstance(stream, Stream)
    assert stream.take() == [0, 1, 2, 3, 4]
    pair.pump()
    assert stream.ended and stream.error is None
    # STREAM, then the items as soon as the first CREDIT arrived, in one ITEM frame
    # (they were queued back to back), then the call's ANSWER ends it.
    assert pair.kinds("server") == ["STREAM", "ITEM"]
    assert pair.frames["server"][-2] == [Kind.ITEM, outcome.request_id, 0, 5]
    assert pair.frames["server"][-1][0] == Kind.ANSWER
    window = Window()
    assert pair.frames["client"][-1] == [Kind.CREDIT, outcome.request_id, window.items, window.bytes]
    assert pair.server.root.closed == 1
    assert tables_empty(pair)


def test_a_window_granted_with_the_call_saves_the_round_trip():
    pair, root = open_pair()
    outcome = root.callRemote("count", 3)
    pair.client.stream_window(outcome.request_id, Window(items=2, bytes=1000))
    pair.pump()
    # CALL and CREDIT left together: the server sent STREAM and the first two items at once.
    client_frames = [header[0] for header in pair.frames["client"][-2:]]
    assert client_frames == [Kind.CALL, Kind.CREDIT]
    assert pair.kinds("server", since=-2) == ["STREAM", "ITEM"]
    assert pair.frames["server"][-1] == [Kind.ITEM, outcome.request_id, 0, 2]
    stream = outcome.result()
    assert stream.take() == [0, 1]  # half the window read: credit for two more
    pair.pump()
    assert stream.take() == [2]
    pair.pump()
    assert stream.ended and tables_empty(pair)


def test_the_generator_is_never_advanced_past_the_credit_and_credit_returns_at_half_a_window():
    pair, root = open_pair()
    outcome = root.callRemote("forever")
    stream = opened(pair, outcome, Window(items=10, bytes=1 << 20))
    feed = pair.server.root
    assert feed.produced == 10 and len(stream.arrived) == 10
    stream.take(4)  # under half the window: no credit yet
    pair.pump()
    assert feed.produced == 10
    credits = [h for h in pair.frames["client"] if h[0] == Kind.CREDIT]
    assert len(credits) == 1
    stream.take(1)  # half read: five more granted in one CREDIT
    pair.pump()
    assert [h for h in pair.frames["client"] if h[0] == Kind.CREDIT][-1][2] == 5
    assert feed.produced == 15 and len(stream.arrived) == 10
    for _ in range(100):  # a steady reader: one CREDIT per half window, never one per item
        stream.take(5)
        pair.pump()
    assert feed.produced - len(stream.read) == 10
    assert len([h for h in pair.frames["client"] if h[0] == Kind.CREDIT]) == 102
    pair.client.cancel(outcome.request_id)
    pair.pump()
    assert feed.closed == 1 and tables_empty(pair)


def test_the_byte_window_holds_back_large_items_but_an_item_larger_than_it_still_goes():
    pair, root = open_pair()
    outcome = root.callRemote("forever", 1000)
    stream = opened(pair, outcome, Window(items=100, bytes=2500))
    assert len(stream.arrived) == 3  # 1000 + 1000 + (500 left: one more goes, then none)
    pair.client.cancel(outcome.request_id)
    pair.pump()
    outcome = root.callRemote("forever", 5000)
    stream = opened(pair, outcome, Window(items=100, bytes=1000))
    assert len(stream.arrived) == 1  # alone, beyond the whole window
    stream.take()
    pair.pump()
    assert len(stream.arrived) == 1
    pair.client.cancel(outcome.request_id)
    pair.pump()
    assert tables_empty(pair)


def test_an_error_ends_the_stream_after_its_items():
    pair, root = open_pair()
    stream = pair.call(root, "fails_after", 2).result()
    assert stream.take() == [0, 1]
    assert stream.ended
    assert isinstance(stream.error, pb.RemoteError) and stream.error.check(pb.Error)
    assert pair.frames["server"][-1][0] == Kind.ERROR
    assert tables_empty(pair)


def test_items_carry_references_counted_like_any_value():
    pair, root = open_pair()
    stream = pair.call(root, "rows_of_refs").result()
    row, pair_of_rows = stream.take()
    assert isinstance(row, pb.RemoteReference) and pair_of_rows[0] is row and pair_of_rows[1] is row
    assert pair.server.table_sizes()["exports"] == 2
    del row, pair_of_rows, stream
    pair.pump()
    assert pair.client.table_sizes()["imports"] == 1
    assert tables_empty(pair)


def test_cancel_closes_the_generator_and_late_items_are_dropped_quietly():
    pair, root = open_pair()
    outcome = root.callRemote("forever")
    pair.client.stream_window(outcome.request_id, Window(items=4, bytes=1000))
    pair.transfer(pair.client)  # CALL + CREDIT reach the server: it sends four items
    pair.client.cancel(outcome.request_id)  # ... while our CANCEL is on its way
    pair.pump()
    assert pair.server.root.closed == 1
    assert not pair.events["client"] or not pair.of_type("client", ev.ConnectionFailed)
    assert tables_empty(pair)
    assert pair.call(root, "value").result() == 7  # the connection carries on


def test_connection_lost_ends_open_streams_with_pbconnectionlost_and_empties_the_tables():
    pair, root = open_pair()
    outcome = root.callRemote("forever")
    pair.pump()
    stream = outcome.result()
    pair.disconnect()
    assert stream.ended and isinstance(stream.error, pb.PBConnectionLost)
    assert pair.server.root.closed == 1
    assert all(count == 0 for count in pair.client.table_sizes().values())
    assert all(count == 0 for count in pair.server.table_sizes().values())


def test_iterating_a_value_is_an_ordinary_answer_and_its_early_window_is_forgotten():
    pair, root = open_pair()
    outcome = root.callRemote("value")
    pair.client.stream_window(outcome.request_id, Window())
    assert pair.client.table_sizes()["stream_windows"] == 1
    pair.pump()
    assert outcome.result() == 7
    assert tables_empty(pair)  # the server's credit for it went with the answer too


# ----------------------------------------------------------- misbehaving peers


def forge(broker, header, value=None):
    """Queue a frame ``broker`` would never send by itself."""
    broker._out.append(encode_frame(header, msgpack.packb(value) if header[0] == Kind.ITEM else b""))


def test_items_without_credit_fail_that_stream_only():
    pair, root = open_pair()
    outcome = root.callRemote("count", 0)
    pair.client.stream_window(outcome.request_id, Window(items=2, bytes=1000))
    pair.defer_calls = True
    pair.pump()  # the call waits on the server; we answer it by hand
    (server, event), *_ = pair.deferred
    pair.deferred.clear()
    pair.defer_calls = False
    assert server.open_stream(event.request_id)
    for i in range(3):  # one more than the credit
        forge(server, [Kind.ITEM, event.request_id, 0], i)
    pair.pump()
    stream = outcome.result()
    assert [value for value, _ in stream.arrived] == [0, 1]
    assert stream.ended and isinstance(stream.error, pb.ProtocolError)
    assert "beyond its credit" in str(stream.error)
    assert pair.frames["client"][-1] == [Kind.CANCEL, outcome.request_id]
    server.answer(event.request_id, None)  # the peer carries on: its late end is dropped
    pair.pump()
    assert pair.client.state.value == "open"
    assert pair.call(root, "value").result() == 7
    assert tables_empty(pair)


def test_an_item_before_stream_fails_that_call_only_and_an_item_for_no_call_is_a_protocol_error():
    pair, root = open_pair()
    pair.defer_calls = True
    outcome = pair.call(root, "count", 1)
    (server, event), *_ = pair.deferred
    pair.deferred.clear()
    pair.defer_calls = False
    forge(server, [Kind.ITEM, event.request_id, 0], 1)
    pair.pump()
    with pytest.raises(pb.ProtocolError, match="before STREAM"):
        outcome.result()
    assert pair.call(root, "value").result() == 7
    forge(server, [Kind.ITEM, 999, 0], 1)
    pair.pump()
    (failed,) = pair.of_type("client", ev.ConnectionFailed)
    assert "no open stream" in str(failed.error)


def test_credit_beyond_the_window_limit_fails_that_stream_on_the_callee():
    pair, root = open_pair(max_stream_window=100)
    outcome = root.callRemote("forever")
    forge(pair.client, [Kind.CREDIT, outcome.request_id, 1000, 1000])
    pair.pump()
    with pytest.raises(pb.LimitExceeded, match="max_stream_window is 100"):
        outcome.result()
    assert pair.server.root.closed == 0  # it never started: nothing to close
    assert pair.call(root, "value").result() == 7
    assert tables_empty(pair)
    outcome = root.callRemote("forever")
    stream = opened(pair, outcome, Window(items=50, bytes=1000))
    assert len(stream.arrived) == 50
    forge(pair.client, [Kind.CREDIT, outcome.request_id, 101, 0])  # all 50 spent: 101 outstanding
    pair.pump()
    assert isinstance(stream.error, pb.LimitExceeded)  # refused once open: the generator is closed
    assert pair.server.root.closed == 1
    assert tables_empty(pair)


def test_streams_per_connection_are_limited():
    pair, root = open_pair(max_streams=1)
    first = root.callRemote("forever")
    pair.client.stream_window(first.request_id, Window(items=2, bytes=100))
    pair.pump()
    second = pair.call(root, "count", 3)
    with pytest.raises(pb.LimitExceeded, match="max_streams"):
        second.result()
    pair.client.cancel(first.request_id)
    pair.pump()
    assert pair.call(root, "count", 1).result().take() == [0]
    pair.pump()
    assert tables_empty(pair)


def test_a_call_pipelined_on_a_streaming_call_fails_clearly_and_leaves_no_entry():
    pair, root = open_pair()
    promise = root.callRemote("forever")
    pipelined = Outcome()
    pair.client.call_on_answer(promise.request_id, "value", (), {}, pipelined)
    pair.pump()
    assert isinstance(promise.result(), Stream)  # it streams on
    with pytest.raises(pb.PipelineError, match=r"Streamed \(a stream of items\), not a reference"):
        pipelined.result()  # failed at once, not when the stream ends
    pair.client.cancel(promise.request_id)
    pair.pump()
    assert tables_empty(pair)


def test_the_new_kinds_are_refused_before_the_handshake():
    pair = ConnectionPair(server_root=Feed())
    pair.server.receive_data(PREAMBLE + encode_frame([Kind.CREDIT, 1, 1, 1]))
    (failed,) = [e for e in pair.server.next_events() if isinstance(e, ev.ConnectionFailed)]
    assert "before HELLO" in str(failed.error)


def deferred_stream(pair, root, window):
    """A stream the test answers by hand: (the caller's outcome, the server broker, its request id)."""
    pair.defer_calls = True
    outcome = root.callRemote("count", 0)
    pair.client.stream_window(outcome.request_id, window)
    pair.pump()
    (server, event), *_ = pair.deferred
    pair.deferred.clear()
    pair.defer_calls = False
    assert server.open_stream(event.request_id)
    return outcome, server, event.request_id


@pytest.mark.parametrize("items", [["a", "bc", "def"], [{"k": i, "v": [i] * i} for i in range(20)]])
def test_a_batch_and_single_items_deliver_the_same_and_cost_the_same(items):
    """The batched ITEM frame (the fast path) against one frame per item (its slow twin)."""
    costs = []
    for batched in (False, True):
        pair, root = open_pair()
        outcome, server, request_id = deferred_stream(pair, root, Window(items=100, bytes=10_000))
        payloads = [msgpack.packb(item) for item in items]
        if batched:
            body = (
                bytes([0xDC]) + len(items).to_bytes(2, "big")
                if len(items) >= 16
                else bytes([0x90 | len(items)])
            )
            server._out.append(
                encode_frame([Kind.ITEM, request_id, 0, len(items)], body + b"".join(payloads))
            )
        else:
            for payload in payloads:
                server._out.append(encode_frame([Kind.ITEM, request_id, 0], payload))
        pair.pump()
        stream = outcome.result()
        assert [value for value, _ in stream.arrived] == items
        accounting = pair.client._streams.receiving[request_id]
        costs.append((accounting.items, accounting.bytes, sum(size for _, size in stream.arrived)))
    assert costs[0] == costs[1]
    assert costs[0][2] == sum(len(msgpack.packb(item)) for item in items)


@pytest.mark.parametrize(
    "items",
    [
        [(i, i * i) for i in range(20)],  # rows: one tuples-first batch
        [(1, 2), (3, "x"), [4], [5, (6,)], (7, (8,)), {"k": (9, 10)}, "eleven", [12, 13], (14,)],
    ],
    ids=["rows", "mixed layouts"],
)
def test_items_batch_by_layout_and_both_sides_count_the_same_bytes(items):
    pair, root = open_pair()
    outcome, server, request_id = deferred_stream(pair, root, Window(items=100, bytes=10_000))
    for item in items:
        server.send_item(request_id, item)
    batches = [entry for entry in server._out if type(entry) is Batch]
    # A batch holds items of one layout, and a new one starts where the layout changes.
    for batch in batches:
        assert {is_tuples_first(payload) for payload in batch.payloads} == {batch.tuples_first}
    if len(items) == 20:
        assert len(batches) == 1 and batches[0].tuples_first and len(batches[0].payloads) == 20
    pair.pump()
    stream = outcome.result()
    arrived = [value for value, _ in stream.arrived]
    assert arrived == items and list(map(type, arrived)) == list(map(type, items))
    sent, received = server._streams.credit[request_id], pair.client._streams.receiving[request_id]
    assert (sent.items, sent.bytes) == (received.items, received.bytes) == (100 - len(items), received.bytes)
    assert sum(size for _, size in stream.arrived) == 10_000 - received.bytes


def test_a_batch_beyond_the_item_credit_or_with_a_wrong_count_fails_its_stream():
    pair, root = open_pair()
    outcome, server, request_id = deferred_stream(pair, root, Window(items=2, bytes=1000))
    server._out.append(encode_frame([Kind.ITEM, request_id, 0, 3], msgpack.packb([1, 2, 3])))
    pair.pump()
    stream = outcome.result()
    assert stream.arrived == [] and "beyond its credit" in str(stream.error)
    outcome, server, request_id = deferred_stream(pair, root, Window(items=5, bytes=1000))
    server._out.append(encode_frame([Kind.ITEM, request_id, 0, 3], msgpack.packb([1, 2])))
    pair.pump()
    stream = outcome.result()
    assert stream.arrived == [] and "array of 3 items" in str(stream.error)
    assert pair.call(root, "value").result() == 7  # the connection carries on


def test_the_window_of_an_open_stream_grows_at_once_and_shrinks_as_the_reader_goes():
    pair, root = open_pair()
    outcome = root.callRemote("forever")
    stream = opened(pair, outcome, Window(items=10, bytes=10_000))
    assert len(stream.arrived) == 10
    pair.client.stream_window(outcome.request_id, Window(items=40, bytes=10_000))
    pair.pump()
    assert len(stream.arrived) == 40  # thirty more granted at once: nothing was read
    pair.client.stream_window(outcome.request_id, Window(items=4, bytes=10_000))
    stream.take()  # all forty read: credit tops up to the new window only
    pair.pump()
    assert len(stream.arrived) == 4
    stream.take()
    pair.pump()
    assert len(stream.arrived) == 4
    pair.client.cancel(outcome.request_id)
    pair.pump()
    assert tables_empty(pair)
