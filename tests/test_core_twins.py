"""Every fast path against its slow twin: the same bytes, the same values, the same errors.

The broker and the frame reader keep quick forms of a few steps inline, for
speed (see benchmarks/README.md). Each property here feeds both forms the same
input and requires the same outcome, so the copies cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pair import ConnectionPair

import pbnb as pb
from pbnb.aio.connection import _serving
from pbnb.core import events as ev
from pbnb.core import flavors, serialize, wire
from pbnb.core._receiving import FrameLoop, QuickObserve  # built by `pip install -e .` (setup.py)
from pbnb.core.broker import Broker
from pbnb.core.carried import carried_references, decoded_references, walked_references
from pbnb.core.progress import Throttle, checked_message, checked_number
from pbnb.core.wire import (
    FRAME_PREFIX,
    PREAMBLE,
    FrameReader,
    Kind,
    Limits,
    PackedCall,
    check_prefix,
    decode_header,
    encode_bin_frame,
    encode_frame,
)

atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=40),
)
values = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Panel(pb.ObservedCacheable):
    pass


class PanelCopy(pb.ObservedRemoteCache):
    def observe_set(self, *args):
        pass


pb.setUnjellyableForClass(Panel, PanelCopy)


class Echo(pb.Root):
    def remote_echo(self, *args, **kwargs):
        return [args, kwargs]


def slow_payload(broker: Broker, value) -> tuple[int, bytes]:
    """The full encoder, with its transaction: what every shortcut must match."""
    broker._tables.begin()
    try:
        return broker._encoder.encode(value, None)
    finally:
        broker._tables.commit()


@FAST
@given(st.lists(atoms, max_size=5), st.dictionaries(st.text(max_size=6), atoms, max_size=3))
def test_atoms_only_calls_pack_like_the_encoder(args, kwargs):
    broker = Broker()
    quick = broker._plain_arguments(tuple(args), kwargs)
    mode, payload = slow_payload(broker, [list(args), kwargs])
    if quick is not None:  # None: an int too big for msgpack, left to the full path
        assert (serialize.PLAIN, quick) == (mode, payload)
    assert broker.encode_arguments(tuple(args), kwargs) == (mode, payload)


@FAST
@given(values)
def test_the_atom_shortcut_of_an_answer_frame_matches_the_full_encode(value):
    broker = Broker()
    frame = broker._frame([Kind.ANSWER, 7, serialize.PLAIN], value, None)
    mode, payload = slow_payload(broker, value)
    assert frame == encode_frame([Kind.ANSWER, 7, mode], payload)


@FAST
@given(st.one_of(values, st.dictionaries(st.text(max_size=6), atoms, max_size=4)))
def test_the_quick_encode_of_a_stream_item_matches_the_full_encode(value):
    broker = Broker()
    assert broker._encode_item(value, None) == slow_payload(broker, value)


def typed(value):
    """A value's tree with every type spelled out (tuple vs list, -0.0 vs 0.0, NaN)."""
    if isinstance(value, (list, tuple)):
        return type(value).__name__, [typed(item) for item in value]
    if isinstance(value, dict):
        return "dict", [(typed(key), typed(item)) for key, item in value.items()]
    if isinstance(value, (set, frozenset)):
        return type(value).__name__, sorted(repr(typed(item)) for item in value)
    if isinstance(value, float):
        return "float", repr(value)
    return type(value).__name__, value


def full_decode(broker: Broker, mode: int, payload) -> tuple[str, object]:
    """The slow twin, in its transaction: ("value", tree) or ("error", type and message)."""
    broker._tables.begin()
    try:
        value = broker._decoder.decode(mode, payload)
    except pb.PBError as exc:
        broker._tables.rollback()
        return "error", (type(exc), str(exc))
    broker._tables.commit()
    return "value", typed(value)


def decode_payload_outcome(broker: Broker, mode: int, payload) -> tuple[str, object]:
    try:
        return "value", typed(broker.decode_payload(mode, payload))
    except pb.PBError as exc:
        return "error", (type(exc), str(exc))


def assert_bare_agrees(broker: Broker, mode: int, payload: bytes) -> None:
    """decode_payload (its bare fast path, or the full one) gives what the full decoder gives."""
    full = full_decode(broker, mode, payload)
    for form in (payload, memoryview(payload), bytearray(payload)):
        if payload:  # an empty payload is refused before either decoder sees it
            assert decode_payload_outcome(broker, mode, form) == full


# Values that go out PLAIN with ext (tuples, sets, big ints, datetimes, references)
# or GRAPH (shared containers, copies): the bare path must decline each of them.
with_ext = st.recursive(
    st.one_of(
        atoms,
        st.integers(min_value=2**64, max_value=2**80),
        st.datetimes(),
        st.decimals(allow_nan=False, allow_infinity=False, places=3),
        st.builds(Echo),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.frozensets(st.integers(-5, 5), max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-9, 9)), inner, max_size=4),
    ),
    max_leaves=12,
)


@FAST
@given(st.one_of(values, with_ext))
def test_the_bare_plain_decode_matches_the_decoder(value):
    broker = Broker(limits=pb.Limits(max_depth=400))
    mode, payload = slow_payload(broker, value)
    assert_bare_agrees(broker, mode, payload)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=60),  # garbage, truncated values, stray ext
        values.map(lambda value: slow_payload(Broker(), value)[1][:-1]),  # cut short
        values.map(lambda value: slow_payload(Broker(), value)[1] + b"\x01"),  # trailing bytes
        values.map(lambda value: slow_payload(Broker(), value)[1]),
    ),
    st.integers(1, 6),
)
def test_bare_and_full_decodes_agree_on_any_bytes(payload, max_depth):
    # Small limits bring the depth and length checks within reach of small payloads.
    limits = pb.Limits(max_depth=max_depth, max_container_len=8, max_string_len=16)
    assert_bare_agrees(Broker(limits=limits), serialize.PLAIN, payload)


@pytest.mark.parametrize("depth", [150, 200, 201, 300])
def test_the_bare_path_leaves_too_deep_payloads_to_the_full_decoder(depth):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    payload = msgpack.packb(value)
    broker = Broker()  # max_depth 200
    assert_bare_agrees(broker, serialize.PLAIN, payload)
    if depth > 200:
        with pytest.raises(pb.LimitExceeded, match="nests deeper than 200"):
            broker.decode_payload(serialize.PLAIN, payload)
    else:
        assert broker.decode_payload(serialize.PLAIN, payload) == value


def test_the_bare_path_leaves_a_payload_longer_than_a_limit_to_the_full_decoder():
    payload = msgpack.packb(["x" * 40])
    broker = Broker(limits=pb.Limits(max_string_len=32))
    with pytest.raises(pb.LimitExceeded):
        broker.decode_payload(serialize.PLAIN, payload)


@FAST
@given(st.lists(atoms, max_size=4), st.sampled_from(["set", "other"]))
def test_a_packed_broadcast_call_is_the_call_it_stands_for(args, packed_for):
    pair = ConnectionPair().handshake()
    board = Panel()
    pair.server.root = type("R", (pb.Root,), {"remote_get": lambda self: board})()
    pair.call(pair.root(), "get").result()
    (observer,) = board.observers
    payload = slow_payload(pair.server, [list(args), {}])[1]
    pair.server.call_packed(observer, "set", payload)
    packed = pair.server.data_to_send()
    pair.server.call(observer, "set", tuple(args), {}, None, answer=False)
    assert pair.server.data_to_send() == packed
    # Packed once with its header (a PackedCall made for another method is only its payload).
    pair.server.call_packed(observer, "set", PackedCall(Kind.OBSERVE, packed_for, payload, serialize.PLAIN))
    assert pair.server.data_to_send() == packed


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([Kind.OBSERVE, Kind.CALL]),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.text(max_size=70),
    st.binary(max_size=300),
    st.sampled_from([0, 1]),
    st.sampled_from([pb.Limits().max_frame, 300, 60, 20]),
)
def test_a_packed_calls_frame_is_what_encode_frame_makes(kind, ref_id, method, payload, plain, max_frame):
    def outcome(make):
        try:
            return make()
        except (pb.LimitExceeded, OverflowError) as exc:
            return type(exc), str(exc)

    for body in (payload, payload * 20):  # kept by id (a small payload) or not
        packed = PackedCall(kind, method, body, plain)
        # Each id twice (the pieces around an id of its length, and a small call's
        # frames by id, are kept), with an id of another length between, the next
        # peer's limit, and bools (which pack otherwise than the ints equal to them).
        ids = ((ref_id, max_frame), (ref_id // 300, max_frame), (ref_id, 300), (ref_id + 1, 60))
        for other_id, limit in (*ids, (True, max_frame), (1, max_frame), (False, 300), (0, 300)):
            fast = outcome(partial(packed.frame, other_id, limit))
            assert fast == outcome(partial(encode_frame, [kind, 0, other_id, method, plain], body, limit))
        # What a sender takes unchecked (Broker.packed_call_now): a kept frame, under any
        # limit of observer_body or more, and only for a call an observer takes as made.
        sound = kind == Kind.OBSERVE and plain == serialize.PLAIN and method.isidentifier()
        assert packed.observer_body > wire.MAX_FRAME or sound
        for kept_id, kept in packed.frames.items():
            assert type(kept_id) is int
            for limit in {packed.observer_body, max_frame} - {wire.MAX_FRAME + 1}:
                if limit >= packed.observer_body:
                    assert kept == encode_frame([kind, 0, kept_id, method, plain], body, limit)
        if sound and len(method) < 100:  # a header that fits: every id's frame fits its observer_body
            assert packed.observer_body <= wire.MAX_FRAME
            for any_id in (0, -1, 2**64 - 1, -(2**63), ref_id % 2**64):
                assert len(packed.frame(any_id)) - 4 <= packed.observer_body


def test_a_packed_call_keeps_a_bounded_number_of_frames_and_makes_the_rest():
    packed = PackedCall(Kind.OBSERVE, "set", msgpack.packb([[1], {}]), serialize.PLAIN)
    for ref_id in (*range(600), *range(600)):
        header = [Kind.OBSERVE, 0, ref_id, "set", serialize.PLAIN]
        assert packed.frame(ref_id) == encode_frame(header, packed.payload)
    assert len(packed.frames) == wire._KEPT_FRAMES


class Other(pb.ObservedCacheable):
    pass


@pytest.mark.parametrize(
    "ref_kind", ["observer", "dropped", "leaving", "other broker", "disconnected", "plain ref", "frames wait"]
)
@pytest.mark.parametrize(
    "packing",
    [
        "same",
        "equal name",
        "other name",
        "int kind",
        "CALL kind",
        "GRAPH mode",
        "bad name",
        "bytes",
        "big",
        "kept under a larger limit",
    ],
)
def test_a_frame_written_at_once_is_the_frame_call_packed_queues(ref_kind, packing):
    """Broker.packed_call_now's inline guard against _packed_call_frame (what call_packed queues)."""
    pair = ConnectionPair(client_root=Echo(), server_root=Echo()).handshake()
    board = Panel()
    pair.server.root = type("R", (pb.Root,), {"remote_get": lambda self: board})()
    pair.call(pair.root(), "get").result()
    (ref,) = board.observers
    tables = pair.server._tables
    if ref_kind in ("dropped", "leaving"):  # the peer let go of the copy
        tables.drop_cache_export(next(iter(tables.cache_exports.values())))
        if ref_kind == "dropped":  # and the owner's stoppedObserving ran
            pair.server.next_events()
    elif ref_kind == "other broker":
        other = ConnectionPair(server_root=Echo()).handshake()
        other.server.root = pair.server.root
        other.call(other.root(), "get").result()
        ref = next(observer for observer in board.observers if observer is not ref)
    elif ref_kind == "disconnected":
        pair.disconnect()
    elif ref_kind == "plain ref":
        ref = pair.root(pair.server)
    pair.server.data_to_send()
    if ref_kind != "leaving":
        pair.server.next_events()
    method = "set"
    payload = msgpack.packb([[1, "x"], {}])
    packed: bytes | PackedCall = {
        "same": PackedCall(Kind.OBSERVE, method, payload, serialize.PLAIN),
        "equal name": PackedCall(Kind.OBSERVE, "".join(["s", "et"]), payload, serialize.PLAIN),
        "other name": PackedCall(Kind.OBSERVE, "update", payload, serialize.PLAIN),
        "int kind": PackedCall(int(Kind.OBSERVE), method, payload, serialize.PLAIN),
        "CALL kind": PackedCall(Kind.CALL, method, payload, serialize.PLAIN),
        "GRAPH mode": PackedCall(Kind.OBSERVE, method, payload, serialize.GRAPH),
        "bad name": PackedCall(Kind.OBSERVE, "not a name", payload, serialize.PLAIN),
        "bytes": payload,
        "big": PackedCall(Kind.OBSERVE, method, b"\x92\x91\xc4" + bytes(300), serialize.PLAIN),
        "kept under a larger limit": PackedCall(
            Kind.OBSERVE, method, b"\x92\x91\xc4" + bytes(300), serialize.PLAIN
        ),
    }[packing]
    if packing == "bad name":
        method = "not a name"
    if packing in ("big", "kept under a larger limit"):
        if packing == "kept under a larger limit":  # another peer's broadcast frame, kept for this id
            assert isinstance(packed, PackedCall)
            packed.frame(ref._id)
            assert ref._id in packed.frames
        pair.server._peer_max_frame = 200

    def outcome(make):
        try:
            return make()
        except Exception as exc:
            return type(exc), str(exc)

    waiting = b""
    if ref_kind == "frames wait":
        pair.server.ping(1)
        waiting = pair.server.data_to_send()
        pair.server.ping(1)  # the same frame, waiting again
    slow = outcome(lambda: pair.server._packed_call_frame(ref, method, packed))
    now = outcome(lambda: pair.server.packed_call_now(ref, method, packed))
    if waiting and isinstance(slow, bytes):  # queued behind what waits, not returned
        assert now is None
        queued = slow
    else:
        assert now == slow
        queued = b""
    assert pair.server.data_to_send() == waiting + queued  # written at once, or refused: never both
    assert tables.observers == {entry.observer for entry in tables.cache_exports.values()}


def test_a_broadcast_to_many_peers_takes_the_quick_path_and_makes_each_ids_frame_once(monkeypatch):
    """What a driver does per observer: packed_call_now never needs its slow twin, and the
    peers whose copies share a cache id share one frame, made once."""
    board = Panel()
    root = type("R", (pb.Root,), {"remote_get": lambda self: board})()
    pairs = [ConnectionPair(server_root=root).handshake() for _ in range(4)]
    other = Panel()  # on the last connection, ``board``'s copy comes second: another id
    pairs[-1].server.root = type("R", (pb.Root,), {"remote_get": lambda self: [other, board]})()
    for pair in pairs:
        pair.call(pair.root(), "get").result()
        pair.server.data_to_send(), pair.server.next_events()
    made: list[int] = []
    make = PackedCall._make
    monkeypatch.setattr(
        PackedCall, "_make", lambda packed, ref_id: made.append(ref_id) or make(packed, ref_id)
    )
    monkeypatch.setattr(Broker, "_packed_call_frame", lambda *_: pytest.fail("took the slow path"))
    packed = PackedCall(Kind.OBSERVE, "set", msgpack.packb([["x", 1], {}]), serialize.PLAIN)
    for _ in range(2):  # the second broadcast's observers all find their frame kept
        frames = {
            observer: observer.broker.packed_call_now(observer, "set", packed) for observer in board.observers
        }
    ids = sorted(observer.export_id for observer in board.observers)
    assert len(ids) == 4 and len(set(ids)) == 2 and sorted(made) == sorted(set(ids))
    for observer, frame in frames.items():
        assert frame is packed.frames[observer.export_id]
        assert frame == encode_frame(
            [Kind.OBSERVE, 0, observer.export_id, "set", serialize.PLAIN], packed.payload
        )


@pytest.mark.parametrize(
    ("ref_kind", "method"),
    [("own", "ok"), ("own", "not an identifier"), ("own", 7), ("foreign", "ok"), ("dead", "ok")],
)
def test_the_inline_call_guard_raises_what_the_full_check_raises(ref_kind, method):
    pair = ConnectionPair(server_root=Echo()).handshake()
    ref = pair.root()
    if ref_kind == "foreign":
        ref = ConnectionPair(server_root=Echo()).handshake().root()
    if ref_kind == "dead":
        pair.disconnect()

    def outcome(action):
        try:
            action()
        except Exception as exc:
            return type(exc), str(exc)
        return None

    fast = outcome(lambda: pair.client.call(ref, method, (), {}, None, answer=False))
    slow = outcome(lambda: pair.client._check_call(ref, method, None))
    assert fast == slow


# ------------------------------------------------------------------ the reader

headers = st.lists(st.one_of(st.integers(0, 20), st.text(max_size=5), st.none()), min_size=0, max_size=4)


def raw_frame(header_bytes: bytes, payload: bytes, body_delta: int = 0) -> bytes:
    return FRAME_PREFIX.pack(2 + len(header_bytes) + len(payload) + body_delta, len(header_bytes)) + (
        header_bytes + payload
    )


def reference_parse(stream: bytes, max_frame: int) -> tuple[list, type | None]:
    """The slow twin of FrameReader's loop: check_prefix and decode_header on every frame."""
    frames: list = []
    pos = len(PREAMBLE)
    try:
        while len(stream) - pos >= FRAME_PREFIX.size:
            body, head_len = FRAME_PREFIX.unpack_from(stream, pos)
            check_prefix(body, head_len, max_frame)  # raises only for a bad prefix
            if pos + 4 + body > len(stream):
                break
            header = decode_header(stream[pos + 6 : pos + 6 + head_len])
            frames.append((header, bytes(stream[pos + 6 + head_len : pos + 4 + body])))
            pos += 4 + body
    except pb.ProtocolError as exc:
        return frames, type(exc)
    return frames, None


# The frame loop's two twins: the reader's Python methods (the loop, feed) and the C
# FrameLoop (the loop, its feed method) that wire uses when built.
PYTHON_LOOP = FrameReader._read_frames
C_LOOP = wire._read_frames
TWINS = {"python": (PYTHON_LOOP, FrameReader.feed), "c": (C_LOOP, C_LOOP.feed)}
LOOPS = pytest.mark.parametrize("loop", list(TWINS))


def test_the_reader_runs_the_c_frame_loop():
    """The extension is built (setup.py) and wire uses it: the twins below test what runs."""
    assert isinstance(C_LOOP, FrameLoop)
    assert wire.feed_frames == C_LOOP.feed


def reader_parse(
    stream: bytes, max_frame: int, cuts: list[int], max_frames: int = 0, drain: bool = True, loop: str = "c"
) -> tuple[list, type | None]:
    """FrameReader fed ``stream`` cut at ``cuts``; with ``max_frames``, in batches of that many.

    ``drain``: empty the backlog before the next cut arrives, as a driver that
    stops reading does; else the next bytes arrive while a backlog waits.
    ``loop``: which twins of the frame loop and of feed run ("python" or "c").
    """
    wire._read_frames, feed = TWINS[loop]
    try:
        return _reader_parse(stream, max_frame, cuts, max_frames, drain, feed)
    finally:
        wire._read_frames = C_LOOP


def _reader_parse(
    stream: bytes, max_frame: int, cuts: list[int], max_frames: int, drain: bool, feed_twin
) -> tuple[list, type | None]:
    frames: list = []

    class EveryKind(dict):
        def get(self, kind, default=None):
            return lambda header, payload: frames.append((header, bytes(payload)))

    reader = FrameReader(max_frame, EveryKind(), lambda kind: None)

    def feed(data: bytes) -> None:
        before = len(frames)
        waiting = feed_twin(reader, data, max_frames)
        assert waiting == (reader.backlog > 0)
        assert not max_frames or len(frames) - before <= max_frames
        assert reader.backlog == 0 or len(frames) - before == max_frames  # stops only at the bound

    start = 0
    try:
        for cut in [*sorted(c for c in cuts if 0 < c < len(stream)), len(stream)]:
            feed(stream[start:cut])
            start = cut
            while drain and reader.backlog:
                feed(b"")
        while reader.backlog:
            feed(b"")
    except pb.ProtocolError as exc:
        return frames, type(exc)
    return frames, None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                headers.map(lambda h: msgpack.packb(h)),
                st.binary(min_size=0, max_size=6),  # garbage headers
                st.dictionaries(st.integers(0, 5), st.integers(-9, 9), max_size=2).map(
                    lambda d: msgpack.packb([1, d])  # maps with int keys: only the full decode takes them
                ),
            ),
            st.binary(max_size=300),
            st.sampled_from([0, 0, 0, -1, 3]),
        ),
        max_size=5,
    ),
    st.lists(st.integers(0, 2000), max_size=6),
)
@LOOPS
def test_the_frame_reader_agrees_with_check_prefix_and_decode_header(loop, frames, cuts):
    # Each frame twice: a header like the last one decoded is taken from it.
    stream = PREAMBLE + b"".join(raw_frame(h, p, delta) for h, p, delta in frames for _ in (0, 1))
    max_frame = 200
    expected = reference_parse(stream, max_frame)
    assert reader_parse(stream, max_frame, [], loop=loop) == expected
    assert reader_parse(stream, max_frame, cuts, loop=loop) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(headers.map(lambda h: msgpack.packb([1, *h])), st.binary(max_size=300)), max_size=12),
    st.lists(st.integers(0, 4000), max_size=6),
    st.integers(1, 4),
    st.booleans(),
)
@LOOPS
def test_the_frame_reader_in_batches_dispatches_what_it_does_in_one_go(loop, frames, cuts, max_frames, drain):
    """A driver that takes a few frames per turn sees the same frames, in order, as one that takes all."""
    stream = PREAMBLE + b"".join(raw_frame(h, p) for h, p in frames)
    whole = reader_parse(stream, 1 << 20, cuts, loop=loop)
    assert whole == (reference_parse(stream, 1 << 20)[0], None)
    assert reader_parse(stream, 1 << 20, cuts, max_frames, drain, loop=loop) == whole
    # The preamble alone first: then every feed of whole frames takes feed's common case.
    assert reader_parse(stream, 1 << 20, [len(PREAMBLE), *cuts], max_frames, drain, loop=loop) == whole


@LOOPS
def test_feed_says_whether_frames_wait(loop):
    seen = []
    reader = FrameReader(1 << 20, {Kind.PING: lambda header, payload: seen.append(header[1])}, print)
    wire._read_frames, feed = TWINS[loop]
    try:
        assert feed(reader, PREAMBLE, 0) is False
        assert feed(reader, b"".join(encode_frame([Kind.PING, n]) for n in range(3)), 2) is True
        assert seen == [0, 1] and reader.backlog
        assert feed(reader, b"", 2) is False
        assert seen == [0, 1, 2] and not reader.backlog
    finally:
        wire._read_frames = C_LOOP


# What a twin-test frame's handler does, by the frame's kind (the header's first item).
_OK, _RAISES_VALUE, _RAISES_KEY, _CLOSES, _LOWERS_LIMIT, _SWAPS_TABLE, _ILLEGAL = range(7)
frame_headers = st.one_of(
    st.tuples(st.integers(0, 6), headers).map(lambda t: msgpack.packb([t[0], *t[1]])),
    st.just(msgpack.packb([_OK, 1])),  # repeated often: the header kept
    st.binary(min_size=0, max_size=5),  # garbage, or no header at all
    st.dictionaries(st.integers(0, 3), st.integers(-9, 9), max_size=2).map(lambda d: msgpack.packb([_OK, d])),
)


class _Table(dict):
    """A handlers table that is not exactly a dict: the C loop asks its get(), as Python does."""

    def get(self, kind, default=None):
        return dict.get(self, kind, default)


def run_loop(loop, stream, start, budget, max_frame, handler_table, illegal_raises):
    """One call of ``loop`` on a fresh reader: what it dispatched, how it ended, and the reader's state."""
    seen: list = []
    reader: FrameReader

    def handle(header, payload):
        kind = header[0]
        seen.append((header, header is previous[0], type(payload).__name__, bytes(payload)))
        previous[0] = header
        if kind == _RAISES_VALUE:
            raise ValueError("a bad field")
        if kind == _RAISES_KEY:
            raise KeyError("not made malformed")
        if kind == _CLOSES:
            reader.closed = True
        elif kind == _LOWERS_LIMIT:
            reader.max_frame = 20  # read once per call: later frames of this data keep the old limit
        elif kind == _SWAPS_TABLE:
            reader.handlers = {_OK: handle}

    def on_illegal(kind):
        seen.append(("illegal", kind))
        if illegal_raises:
            raise pb.ProtocolError(f"no {kind} here")

    previous: list = [None]
    table = {kind: handle for kind in range(_ILLEGAL)}
    if handler_table == "mapping":  # not a dict: looked up through its get()
        table = _Table(table)
    reader = FrameReader(max_frame, table, on_illegal)
    reader._preamble_seen = True
    try:
        loop(reader, stream, start, budget)
        ended = None
    except Exception as exc:
        ended = (type(exc), str(exc), exc.__cause__, exc.__suppress_context__)
    backlog = reader._backlog
    state = (
        bytes(reader._last_raw),
        type(reader._last_raw),
        reader._last_header,
        reader._needed,
        None if backlog is None else (backlog is stream, reader._backlog_at),
        reader._pending,
        reader._pending_size,
        reader._assembly,
        reader.closed,
        reader.max_frame,
    )
    return seen, ended, state


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            frame_headers,
            st.one_of(st.binary(max_size=40), st.integers(2040, 2060).map(bytes)),  # around _COPIED_PAYLOAD
            st.sampled_from([0, 0, 0, -1, 2]),
        ),
        max_size=7,
    ),
    cut=st.integers(0, 30),
    start=st.integers(0, 3),
    budget=st.sampled_from([-1, -1, 0, 1, 2, 5]),
    max_frame=st.sampled_from([1 << 20, 200, 3000]),
    as_bytearray=st.booleans(),
    handler_table=st.sampled_from(["dict", "mapping"]),
    illegal_raises=st.booleans(),
)
def test_the_c_frame_loop_does_what_the_python_loop_does(
    frames, cut, start, budget, max_frame, as_bytearray, handler_table, illegal_raises
):
    """Same dispatches (headers kept, payload copies or views), same error, same reader state after."""
    stream = b"\0" * start + b"".join(raw_frame(h, p, delta) for h, p, delta in frames)
    stream = stream[: len(stream) - cut] if cut < len(stream) else stream  # the last frame cut short
    data = bytearray(stream) if as_bytearray else stream
    slow = run_loop(PYTHON_LOOP, data, start, budget, max_frame, handler_table, illegal_raises)
    fast = run_loop(C_LOOP, data, start, budget, max_frame, handler_table, illegal_raises)
    assert fast == slow


def test_the_c_frame_loop_hands_other_readers_and_data_to_the_python_loop():
    """A FrameReader subclass, or data that is neither bytes nor a bytearray: the Python twin runs."""
    seen = []

    class Reader(FrameReader):
        __slots__ = ()

    frame = raw_frame(msgpack.packb([_OK]), b"\xc0")
    for reader, data in (
        (Reader(1 << 20, {_OK: lambda h, p: seen.append(type(p))}, print), frame),
        (FrameReader(1 << 20, {_OK: lambda h, p: seen.append(type(p))}, print), memoryview(frame)),
    ):
        C_LOOP(reader, data, 0, -1)
    assert seen == [bytes, memoryview]


# ------------------------------------------------------------- progress


def _outcome(check, *args):
    try:
        return ("ok", check(*args))
    except (TypeError, ValueError) as exc:
        return (type(exc), str(exc))


progress_fields = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-(2**63) - 1, -(2**63), 2**64 - 1, 2**64]),
    st.floats(),
    st.fractions(),
    st.text(max_size=300),
    st.binary(max_size=4),
)


@FAST
@given(done=progress_fields, total=progress_fields, message=st.one_of(progress_fields, st.text(min_size=250)))
def test_progress_checks_inline_what_checked_number_and_checked_message_check(done, total, message):
    """pb.progress checks the common forms inline; the core's checks decide the rest."""
    call = ev.CallReceived(1, print, [], {}, None, None, "work", None, Throttle())
    call.throttle.armed = True  # a frame is planned: the report is only kept
    slow = [
        _outcome(checked_number, done, "done"),
        ("ok", None) if total is None else _outcome(checked_number, total, "total"),
        _outcome(checked_message, message),
    ]
    token = _serving.set(call)
    try:
        fast = _outcome(pb.progress, done, total, message)
    finally:
        _serving.reset(token)
    failures = [outcome for outcome in slow if outcome[0] != "ok"]
    if failures:
        assert fast == failures[0]
    else:
        assert fast == ("ok", None)
        kept = call.throttle.latest
        assert kept == tuple(value for _, value in slow)
        assert [type(value) for value in kept] == [type(value) for _, value in slow]


# ------------------------------------------------------- a refused message's references

_msgpack_ints = st.integers(-(2**63), 2**64 - 1)
_msgpack_atoms = st.one_of(
    st.none(), st.booleans(), _msgpack_ints, st.floats(), st.text(max_size=20), st.binary(max_size=20)
)
_ref_ids = st.integers(0, 2**64 - 1).map(lambda n: n.to_bytes(8, "big"))
_refs = st.one_of(
    _ref_ids.map(lambda b: msgpack.ExtType(serialize.EXT_REMOTE, b)),
    _ref_ids.map(lambda b: msgpack.ExtType(serialize.EXT_CACHED, b)),
    st.tuples(st.one_of(_msgpack_ints, st.text(max_size=2)), _msgpack_atoms).map(
        lambda t: [msgpack.ExtType(serialize.TAG_CACHE, b""), *t]  # a cache's state: [tag, id, ...]
    ),
)
# Text and bytes that hold a marker's bytes by chance, and values of every shape around them.
_decoys = st.sampled_from(["\xd7\x11", "a\xc7\x00\x05", b"\xd7\x13" * 3, b"\xc7\x00\x05\x01", 7])
_carrying = st.recursive(
    st.one_of(_msgpack_atoms, _refs, _decoys, st.just({"k": 258})),
    lambda inner: st.one_of(
        st.lists(inner, max_size=40),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 9)), inner, max_size=4),
    ),
    max_leaves=80,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_carrying, st.sampled_from(["whole", "cut", "trailing"]), st.integers(1, 1000))
def test_walking_a_refused_payload_finds_the_references_decoding_finds(value, form, cut):
    payload = msgpack.packb([[value], {}])
    if form == "cut":
        payload = payload[: max(0, len(payload) - cut)]
    elif form == "trailing":
        payload += b"\xc0"
    expected = decoded_references(payload, Limits())
    assert walked_references(payload, 200, dense=1) == expected  # however dense, it walks on
    assert carried_references(payload, Limits()) == expected  # it may stop walking and decode


def test_a_payload_dense_with_references_is_decoded_rather_than_walked():
    refs = [msgpack.ExtType(serialize.EXT_REMOTE, n.to_bytes(8, "big")) for n in range(1000)]
    payload = msgpack.packb([[refs, {"k": 258}], {}])
    with pytest.raises(Exception, match="decode instead"):
        walked_references(payload, 200)
    assert carried_references(payload, Limits()) == {(serialize.EXT_REMOTE, n): 1 for n in range(1000)}


# ------------------------------------------------------------------ large bytes


@settings(max_examples=40, deadline=None)
@given(
    st.integers(65536, 300_000),
    st.binary(min_size=1, max_size=64),
    headers,
    st.sampled_from([1 << 20, 200_000]),
)
def test_a_large_bytes_frame_is_the_frame_msgpack_would_make(size, pattern, header, max_frame):
    data = (pattern * (size // len(pattern) + 1))[:size]
    header = [Kind.ANSWER, *header]

    def outcome(make):
        try:
            return make()
        except pb.LimitExceeded as exc:
            return str(exc)

    fast = outcome(lambda: b"".join(encode_bin_frame(header, data, max_frame)))
    assert fast == outcome(lambda: encode_frame(header, msgpack.packb(data), max_frame))


LARGE = b"L" * ((1 << 20) + 1)  # framed in two parts (wire.encode_bin_frame)


@FAST
@given(st.lists(st.sampled_from([b"", b"small", LARGE]), max_size=6))
def test_buffers_to_send_are_data_to_send_with_large_values_not_copied(answers):
    whole, parts = Broker(), Broker()
    for broker in (whole, parts):
        for request_id, value in enumerate(answers, 2):
            broker._inbound.add(request_id)  # as if the peer had called
            broker.answer(request_id, value)
    buffers = parts.buffers_to_send()
    assert b"".join(buffers) == whole.data_to_send()
    assert sum(buffer is LARGE for buffer in buffers) == answers.count(LARGE)
    assert not parts.has_data_to_send() and parts.buffers_to_send() == []


# ----------------------------------------------------------- observer updates


class Dial(pb.ObservedCacheable):
    observed_fields = ("level",)

    def __init__(self) -> None:
        self.level = 0


class DialCopy(pb.ObservedRemoteCache):
    observed_fields = ("level",)

    def observe_echo(self, *args, **kwargs):
        pass


pb.setUnjellyableForClass(Dial, DialCopy)


def observed_copy(limits: pb.Limits | None = None) -> tuple[ConnectionPair, DialCopy, int]:
    """A pair whose client (with ``limits``) holds a copy of the server's Dial; its cache id."""
    dial = Dial()
    root = type("R", (pb.Root,), {"remote_get": lambda self: dial})()
    pair = ConnectionPair(server_root=root, client_options={"limits": limits}).handshake()
    copy = pair.call(pair.root(), "get").result()
    (cache_id,) = pair.client._tables.cache_imports
    return pair, copy, cache_id


def described(event) -> tuple:
    """An event with what differs between two pairs (brokers, bound methods) left out."""
    if isinstance(event, ev.CallReceived):
        method = event.method.__func__.__qualname__
        arguments = repr(typed([event.args, event.kwargs]))  # a reference shows its id
        return ("call", event.request_id, method, arguments, event.perspective, event.name)
    if isinstance(event, ev.MessageRefused):
        return ("refused", type(event.error), str(event.error), event.description)
    return (type(event).__name__,)


def observe_outcome(handler: str, header: list, payload: bytes, state: str) -> tuple:
    """What ``handler`` (_on_observe, its C twin _quick_observe, or _on_call) makes of one
    OBSERVE on a fresh copy in ``state``."""
    pair, copy, cache_id = observed_copy(pb.Limits(max_depth=4) if state == "shallow" else None)
    broker = pair.client
    header = [cache_id if item == "ID" else cache_id + 0.0 if item == "FLOAT_ID" else item for item in header]
    if state == "awaiting state":
        broker._tables.cache_imports[cache_id].awaiting_state = True
    elif state == "copy collected":
        del copy
    elif state == "busy":
        broker._running = broker._max_inbound_calls
    elif state == "events held":
        broker._hold_events()
    try:
        getattr(broker, handler)(header, payload)
        error = None
    except Exception as exc:
        error = (type(exc), str(exc))
    held = [described(event) for event in broker._held_events or []]
    return error, [described(event) for event in broker.next_events()], held, broker.data_to_send()


def assert_observe_twins_agree(header: list, payload: bytes, state: str) -> None:
    slow = observe_outcome("_on_call", header, payload, state)
    assert observe_outcome("_on_observe", header, payload, state) == slow, (header, payload, state)
    assert observe_outcome("_quick_observe", header, payload, state) == slow, (header, payload, state)


def test_a_broker_takes_updates_through_the_c_twin_of_on_observe():
    pair, _copy, _cache_id = observed_copy()
    assert isinstance(pair.client._quick_observe, QuickObserve)
    assert pair.client._reader.handlers[Kind.OBSERVE] is pair.client._quick_observe

    class Observing(Broker):
        __slots__ = ()

    assert Observing()._quick_observe.__func__ is Broker._on_observe  # a subclass may override it


UPDATE = [Kind.OBSERVE, 0, "ID", "set", serialize.PLAIN]
#: One thing at a time that the quick path must leave to the generic one (or handle alike).
DEVIATIONS = [
    *((1, request_id) for request_id in (3, -1, False, 0.0, "0", None)),
    *((2, cache_id) for cache_id in (999, -2, "FLOAT_ID", True, "x", None)),
    *((3, name) for name in ("echo", "update", "missing", "not a name", 7, "_pb_method", "")),
    *((4, mode) for mode in (serialize.GRAPH, 9, "x", None)),
]
STATES = ["live", "awaiting state", "copy collected", "busy", "events held", "shallow"]
SAMPLE_CALLS = [
    msgpack.packb([["level", 1], {}]),
    msgpack.packb([[{"level": 2}], {}]),
    msgpack.packb([["level"], {"x": 1}]),
    msgpack.packb([[[[[["deep"]]]]], {}]),
    slow_payload(Broker(), [[(1, 2)], {}])[1],  # an ext (a tuple)
    msgpack.packb([[], {}, 1]),
    msgpack.packb(["ab", {}]),
    msgpack.packb([{"level": 3}, {}]),
    b"\x92\x90",  # cut short
]


def test_the_quick_observer_update_leaves_each_odd_header_and_state_to_the_generic_path():
    for payload in SAMPLE_CALLS:
        for state in STATES:
            assert_observe_twins_agree(UPDATE, payload, state)
        for at, item in DEVIATIONS:
            header = list(UPDATE)
            header[at] = item
            assert_observe_twins_agree(header, payload, "live")
    assert_observe_twins_agree(UPDATE[:4], SAMPLE_CALLS[0], "live")  # a header too short


def encoded(value) -> bytes:
    return slow_payload(Broker(), value)[1]


keywords = st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), atoms)
call_payloads = st.one_of(
    st.tuples(st.lists(values, max_size=3), st.just({})).map(lambda call: encoded(list(call))),
    st.tuples(st.lists(atoms, max_size=2), keywords).map(lambda call: encoded(list(call))),
    values.map(encoded),  # not [args, kwargs]
    with_ext.map(lambda value: encoded([[value], {}])),  # exts, copies, refs: slow only
    st.binary(max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call_payloads, st.sampled_from(["set", "echo", "update"]), st.sampled_from(["live", "shallow"]))
def test_the_quick_observer_update_decodes_what_the_generic_call_path_decodes(payload, name, state):
    assert_observe_twins_agree([Kind.OBSERVE, 0, "ID", name, serialize.PLAIN], payload, state)


@pytest.mark.parametrize(
    ("args", "depth_limit"), [(["level", 4], 200), ([{"level": 1.5}], 200), (["x", []], 3)]
)
def test_a_broadcast_update_takes_the_quick_path(args, depth_limit, monkeypatch):
    pair, copy, cache_id = observed_copy(pb.Limits(max_depth=depth_limit))
    monkeypatch.setattr(Broker, "_on_call", lambda *_: pytest.fail("took the generic path"))
    frame = PackedCall(Kind.OBSERVE, "set", msgpack.packb([args, {}]), serialize.PLAIN).frame(cache_id)
    pair.client.receive_data(frame)
    (event,) = pair.client.next_events()
    assert (event.request_id, event.args, event.kwargs, event.target) == (0, args, {}, copy)


def test_the_c_twin_makes_the_event_the_python_twin_makes():
    """QuickObserve sets CallReceived's slots itself: every field as the class call sets it."""
    pair, copy, cache_id = observed_copy()
    broker = pair.client
    header = [Kind.OBSERVE, 0, cache_id, "set", serialize.PLAIN]
    payload = msgpack.packb([["level", 5], {}])
    broker._quick_observe(header, payload)
    broker._on_observe(header, payload)
    fast, slow = broker.next_events()
    assert type(fast) is type(slow) is ev.CallReceived
    for field in dataclasses.fields(ev.CallReceived):
        assert getattr(fast, field.name) == getattr(slow, field.name), field.name
    assert (fast.target, fast.broker, fast.throttle) == (copy, broker, None)
    assert fast == slow and repr(fast) == repr(slow)


def test_a_header_checked_once_is_checked_again_for_all_that_can_change():
    """One header list fed again and again (the reader hands a repeated header over as itself),
    with the copy's and the connection's state changing in between: both twins agree each time."""

    def run(handler: str) -> list:
        pair, copy, cache_id = observed_copy()
        held = [copy]
        del copy
        broker = pair.client
        entry = broker._tables.cache_imports[cache_id]
        header = [Kind.OBSERVE, 0, cache_id, "set", serialize.PLAIN]
        outcomes = []
        changes = [
            lambda: None,
            lambda: setattr(broker, "_running", broker._max_inbound_calls),
            lambda: setattr(broker, "_running", 0),
            lambda: setattr(entry, "awaiting_state", True),
            lambda: setattr(entry, "awaiting_state", False),
            lambda: held.clear(),  # the copy is collected
            lambda: broker._hold_events(),
        ]
        for change in changes:
            change()
            for payload in (SAMPLE_CALLS[0], SAMPLE_CALLS[2], SAMPLE_CALLS[0]):
                try:
                    getattr(broker, handler)(header, payload)
                    error = None
                except Exception as exc:
                    error = (type(exc), str(exc))
                events = [described(event) for event in broker.next_events()]
                outcomes.append((error, events, [described(e) for e in broker._held_events or []]))
        return outcomes

    assert run("_on_observe") == run("_on_call") == run("_quick_observe")


def test_a_repeated_update_header_is_handed_over_as_itself_and_taken_quickly(monkeypatch):
    pair, _copy, cache_id = observed_copy()  # (held: the copy must live)
    headers = []
    on_observe = pair.client._reader.handlers[Kind.OBSERVE]
    pair.client._reader.handlers[Kind.OBSERVE] = lambda header, payload: (
        headers.append(header),
        on_observe(header, payload),
    )
    monkeypatch.setattr(Broker, "_on_call", lambda *_: pytest.fail("took the generic path"))
    packed = PackedCall(Kind.OBSERVE, "set", msgpack.packb([["level", 1], {}]), serialize.PLAIN)
    pair.client.receive_data(packed.frame(cache_id) * 3)
    assert len(pair.client.next_events()) == 3
    assert headers[0] is headers[1] is headers[2]


class Meter(pb.ObservedRemoteCache):
    """A copy without observed_fields: any public name is accepted."""


@FAST
@given(
    st.sampled_from([DialCopy, Meter]),
    st.one_of(st.sampled_from(["level", "other", "_hidden", "not a name", "__class__"]), st.integers()),
    atoms,
)
def test_observe_set_applies_one_field_as_apply_does(cls, name, value):
    def outcome(apply):
        copy = cls.__new__(cls)
        seen = []
        copy.changed = seen.append
        try:
            apply(copy)
        except Exception as exc:
            return type(exc), str(exc)
        return dict(vars(copy), changed=None), seen

    quick = outcome(lambda copy: copy.observe_set(name, value))
    assert quick == outcome(lambda copy: copy._apply({name: value}))


@FAST
@given(
    st.lists(
        st.one_of(st.sampled_from(["level", "echo", "set", "update", "_pb_method"]), st.text()), max_size=8
    )
)
def test_an_updates_method_is_the_observe_attribute_however_many_names_came(names):
    """RemoteCache._pb_method's interned names against the plain ``getattr(copy, "observe_" + name)``."""
    copy = DialCopy.__new__(DialCopy)
    kept, limit = flavors._OBSERVE_NAMES, flavors._KEPT_NAMES
    flavors._OBSERVE_NAMES, flavors._KEPT_NAMES = {}, 3  # full after a few names: the rest are made each time
    try:
        for name in names * 2:
            plain = getattr(copy, "observe_" + name, None)
            assert copy._pb_method(name, None) == (plain if callable(plain) else None)
        assert len(flavors._OBSERVE_NAMES) == min(3, len(set(names)))
    finally:
        flavors._OBSERVE_NAMES, flavors._KEPT_NAMES = kept, limit
