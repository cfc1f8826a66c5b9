"""PROGRESS without sockets: reports reach the caller's token, crossings are dropped, bad frames refused."""

from __future__ import annotations

import math

import pytest
from pair import ConnectionPair, Stream

from pbnb import Limits, Progress, ProtocolError, Root
from pbnb.core import events as ev
from pbnb.core.progress import INTERVAL, MAX_MESSAGE, Throttle, checked_message, checked_number
from pbnb.core.streaming import Window
from pbnb.core.wire import Kind, decode_header


class Worker(Root):
    def remote_work(self, n):
        return n


@pytest.fixture(params=[False, True], ids=["whole", "byte-by-byte"])
def pair(request):
    return ConnectionPair(server_root=Worker(), byte_by_byte=request.param).handshake()


def started(pair, *args):
    """Call ``work`` and hold it running on the server; return (outcome, the server's CallReceived)."""
    root = pair.root()
    pair.defer_calls = True
    outcome = root.callRemote("work", *args)
    pair.pump()
    pair.defer_calls = False
    ((_, call),) = pair.deferred
    pair.deferred.clear()
    return outcome, call


def reports(pair):
    return [(event.token, event.progress) for event in pair.of_type("client", ev.ProgressReceived)]


def test_reports_reach_the_callers_token_in_order_before_the_answer(pair):
    outcome, call = started(pair, 3)
    for done in (1, 2.5, 3):
        pair.server.progress(call.request_id, Progress(done, 3, f"step {done}"))
    pair.pump()
    assert reports(pair) == [
        (outcome, Progress(1, 3, "step 1")),
        (outcome, Progress(2.5, 3, "step 2.5")),
        (outcome, Progress(3, 3, "step 3")),
    ]
    assert not outcome.done()
    pair.server.answer(call.request_id, "finished")
    pair.pump()
    assert outcome.result() == "finished"
    assert call.broker is pair.server  # where a driver reports a call's progress


def test_a_report_without_total_or_message(pair):
    _, call = started(pair, 1)
    pair.server.progress(call.request_id, Progress(7))
    pair.pump()
    ((_, progress),) = reports(pair)
    assert progress == Progress(7, None, None) and progress.fraction is None


def test_no_frame_once_answered_cancelled_or_without_answer(pair):
    outcome, call = started(pair, 1)
    pair.server.answer(call.request_id, 1)
    pair.pump()
    pair.server.progress(call.request_id, Progress(1, 1))
    assert not pair.server.has_data_to_send()  # the answer superseded it

    outcome, call = started(pair, 2)
    pair.client.cancel(outcome.request_id)
    pair.pump()
    pair.server.progress(call.request_id, Progress(1, 2))
    assert not pair.server.has_data_to_send()

    pair.server.progress(0, Progress(1))  # request id 0: the caller asked for no answer
    assert not pair.server.has_data_to_send()
    assert reports(pair) == []


def test_a_report_crossing_the_cancel_is_dropped_by_the_caller(pair):
    outcome, call = started(pair, 1)
    pair.client.cancel(outcome.request_id)  # the CANCEL has not reached the server yet
    pair.server.progress(call.request_id, Progress(0.5, 1))
    pair.pump()
    assert reports(pair) == []
    assert not pair.of_type("client", ev.ConnectionFailed)
    assert pair.client.table_sizes()["pending_calls"] == 0


def test_a_report_for_an_unknown_request_is_ignored(pair):
    pair.root()
    pair.server._send([Kind.PROGRESS, 999, 1, 2, "late"])
    pair.pump()
    assert reports(pair) == []
    assert not pair.of_type("client", ev.ConnectionFailed)
    assert pair.call(pair.root(), "work", 5).result() == 5  # the connection lives on


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (["one", 2, None], "PROGRESS done must be a finite number"),
        ([True, 2, None], "PROGRESS done must be a finite number"),
        ([math.nan, 2, None], "PROGRESS done must be a finite number"),
        ([1, "two", None], "PROGRESS total must be a finite number or nil"),
        ([1, math.inf, None], "PROGRESS total must be a finite number or nil"),
        ([1, 2, b"bytes"], "PROGRESS message must be a string or nil"),
        ([1, 2], "malformed PROGRESS message"),
    ],
)
def test_bad_fields_are_a_protocol_error(pair, fields, message):
    _, call = started(pair, 1)
    pair.server._send([Kind.PROGRESS, call.request_id, *fields])
    pair.pump()
    (failed,) = pair.of_type("client", ev.ConnectionFailed)
    assert isinstance(failed.error, ProtocolError) and message in str(failed.error)


def test_bad_request_id_is_a_protocol_error(pair):
    pair.root()
    pair.server._send([Kind.PROGRESS, "x", 1, 2, None])
    pair.pump()
    (failed,) = pair.of_type("client", ev.ConnectionFailed)
    assert "non-negative integer id" in str(failed.error)


def test_the_message_is_clipped_to_the_peers_frame_limit():
    pair = ConnectionPair(server_root=Worker(), client_options={"limits": Limits(max_frame=200)}).handshake()
    _, call = started(pair, 1)
    pair.server.progress(call.request_id, Progress(1, 2, "é" * 500))
    sent = pair.server.data_to_send()
    assert len(sent) - 4 <= 200
    header = decode_header(sent[6 : 6 + int.from_bytes(sent[4:6], "big")])
    assert header[:4] == [Kind.PROGRESS, call.request_id, 1, 2] and set(header[4]) == {"é"}
    pair.feed(pair.client, sent)
    ((_, progress),) = reports(pair)
    assert progress.message == header[4]


def test_progress_fraction():
    assert Progress(1, 4).fraction == 0.25
    assert Progress(5, 4).fraction == 1.0  # clamped
    assert Progress(-1, 4).fraction == 0.0
    assert Progress(3).fraction is None
    assert Progress(3, 0).fraction is None  # no meaningful total
    with pytest.raises(AttributeError):
        Progress(1).done = 2  # type: ignore[misc]


def test_throttle_sends_the_first_report_at_once_then_the_latest_each_interval():
    throttle = Throttle()
    throttle.latest = (1, 10, None)
    assert throttle.arm(100.0) == 0.0
    assert throttle.take(100.0) == Progress(1, 10)
    throttle.latest = (2, 10, None)
    assert throttle.arm(100.01) == pytest.approx(INTERVAL - 0.01)
    throttle.latest = (3, 10, "later")  # while armed: only kept
    assert throttle.armed
    assert throttle.take(100.0 + INTERVAL) == Progress(3, 10, "later")
    assert throttle.take(100.0 + 3 * INTERVAL) is None  # nothing new: nothing sent
    throttle.latest = (4, 10, None)
    assert throttle.arm(100.0 + 3 * INTERVAL) == 0.0  # the interval is long over


def test_checked_numbers_and_messages():
    assert checked_number(3, "done") == 3 and type(checked_number(3, "done")) is int
    assert checked_number(2**70, "done") == float(2**70)  # beyond msgpack's ints
    from fractions import Fraction

    assert checked_number(Fraction(1, 2), "done") == 0.5
    for bad, error in ((True, TypeError), ("1", TypeError), (None, TypeError), (math.nan, ValueError)):
        with pytest.raises(error, match="progress done"):
            checked_number(bad, "done")
    assert checked_message(None) is None
    assert len(checked_message("x" * 5000).encode()) == MAX_MESSAGE
    with pytest.raises(TypeError, match="progress message must be a str"):
        checked_message(42)


class Rows(Root):
    def remote_rows(self, n):
        yield from range(n)


def test_a_generators_reports_reach_its_stream():
    pair = ConnectionPair(server_root=Rows()).handshake()
    root = pair.root()
    outcome = root.callRemote("rows", 10)
    pair.client.stream_window(outcome.request_id, Window(items=2, bytes=1000))  # keeps it open
    pair.pump()
    stream = outcome.result()
    assert isinstance(stream, Stream) and not stream.ended
    pair.server.progress(outcome.request_id, Progress(2, 10, "two rows"))
    pair.pump()
    ((token, progress),) = reports(pair)
    assert token is stream and progress == Progress(2, 10, "two rows")
