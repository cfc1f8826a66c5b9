"""Framing, message kinds and limits: the one place the wire format is defined.

A connection starts with an 8-byte preamble from each side, ``b"PBNB"``, a
big-endian ``u16`` protocol version and two reserved zero bytes. Every later
unit is a frame::

    u32 body_length | u16 header_length | header | payload

``header`` is a msgpack array whose first item is the message kind (below);
``payload``, possibly empty, is one msgpack value produced by
:mod:`pbnb.core.serialize`. Keeping the header apart lets a receiver fail the
one call whose payload it could not decode and carry on. ``docs/protocol.md``
describes every message.

``RECEIVABLE`` says which kinds are legal in each ``ConnectionState``;
``FrameReader`` cuts the incoming stream into frames and hands each to the
handler the current state allows, so that table is enforced in one place.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, NamedTuple, NoReturn

import msgpack

from ..errors import LimitExceeded, ProtocolError

MAGIC = b"PBNB"
VERSION = 1
PREAMBLE = MAGIC + struct.pack(">HH", VERSION, 0)
PREAMBLE_SIZE = len(PREAMBLE)

#: ``u32 body_length | u16 header_length``: what starts every frame.
FRAME_PREFIX = struct.Struct(">IH")
FRAME_PREFIX_SIZE = FRAME_PREFIX.size
MAX_HEADER = 0xFFFF
# One packer for every header saves building a Packer per frame (half the cost
# of a small frame). Sharing it across threads is safe: headers hold only
# builtins, so pack() runs in C without calling back into Python or
# releasing the GIL, and it resets itself if it raises.
_HEADER_PACKER = msgpack.Packer(use_bin_type=True)
_BIN32 = b"\xc6"  # msgpack's header of a bin of 64 KiB or more
# A PackedCall with a payload this small keeps up to _KEPT_FRAMES of the frames it made, by id.
_KEPT_PAYLOAD = 4096
_KEPT_FRAMES = 256


class Kind(IntEnum):
    """Message kinds; the first item of every frame header."""

    HELLO = 0  # [HELLO, settings]
    CALL = 1  # [CALL, request_id, export_id, method, mode] + [args, kwargs]
    OBSERVE = 2  # [OBSERVE, request_id, cache_id, method, mode] + [args, kwargs]
    ANSWER = 3  # [ANSWER, request_id, mode] + value
    ERROR = 4  # [ERROR, request_id, type, message, traceback, mode] + copy or nil
    DECREF = 5  # [DECREF, export_id, count]
    DECACHE = 6  # [DECACHE, cache_id, count]
    ROOT = 7  # [ROOT, request_id]
    DESCRIBE = 8  # [DESCRIBE, request_id, export_id]
    CANCEL = 9  # [CANCEL, request_id]
    PING = 10  # [PING, token]
    PONG = 11  # [PONG, token]
    GOODBYE = 12  # [GOODBYE, error_type, message]
    CACHE_STATE = 13  # [CACHE_STATE, cache_id, mode] + state
    UNCACHED = 14  # [UNCACHED, cache_id]
    PIPELINE = 15  # [PIPELINE, request_id, answer_of_request_id, method, mode] + [args, kwargs]
    FINISH = 16  # [FINISH, [request_id, ...]]: answers the sender will pipeline on no more
    PROGRESS = 17  # [PROGRESS, request_id, done, total, message]: how far a running call has got
    STREAM = 18  # [STREAM, request_id]: the answer is a stream; ANSWER or ERROR ends it
    CREDIT = 19  # [CREDIT, request_id, items, bytes]: the caller lets a stream send more
    ITEM = 20  # [ITEM, request_id, mode] + value: one item of a stream


class ConnectionState(Enum):
    """Where one side's connection stands; ``Broker.state``."""

    #: Our preamble and HELLO are queued; the peer's preamble has not arrived.
    AWAITING_PREAMBLE = "awaiting preamble"
    #: The peer's preamble arrived; its HELLO (or a GOODBYE refusing us) has not.
    AWAITING_HELLO = "awaiting hello"
    #: The handshake is complete: calls go both ways.
    OPEN = "open"
    #: A GOODBYE went or came: input is ignored until the transport closes.
    CLOSING = "closing"
    #: The transport closed (``Broker.connection_lost``).
    CLOSED = "closed"


#: The message kinds a side accepts from its peer in each state; any other
#: kind is a ProtocolError. A new kind is legal once the connection is open;
#: list it here only if it may come earlier.
RECEIVABLE: Mapping[ConnectionState, frozenset[Kind]] = {
    ConnectionState.AWAITING_PREAMBLE: frozenset(),  # the reader takes the preamble itself
    # A peer that will not serve us sends GOODBYE instead of HELLO, saying why.
    ConnectionState.AWAITING_HELLO: frozenset({Kind.HELLO, Kind.GOODBYE}),
    ConnectionState.OPEN: frozenset(Kind) - {Kind.HELLO},
    ConnectionState.CLOSING: frozenset(),  # input is ignored, not refused
    ConnectionState.CLOSED: frozenset(),
}

# request_id 0 in CALL/OBSERVE asks for no answer.
NO_ANSWER = 0

#: The smallest ``max_frame`` a side may announce: room for an ERROR or
#: GOODBYE with a clipped message, so every failure can still be reported.
MIN_FRAME = 128
#: The largest body the u32 length prefix can announce.
MAX_FRAME = 0xFFFFFFFF
# What a refused frame is called in LimitExceeded's message.
_WHAT = {
    Kind.CALL: "call",
    Kind.OBSERVE: "call",
    Kind.PIPELINE: "call",
    Kind.ANSWER: "answer",
    Kind.CACHE_STATE: "cache state",
    Kind.ITEM: "stream item",
}


@dataclass(frozen=True)
class Limits:
    """Per-connection limits, enforced as data arrives.

    Each side announces ``max_frame`` in its HELLO so that a sender can refuse
    an oversized message locally instead of getting its connection dropped.
    """

    max_frame: int = 256 * 1024 * 1024
    max_depth: int = 200
    max_container_len: int = 10_000_000
    max_inbound_calls: int = 10_000
    max_references: int = 1_000_000
    max_caches: int = 100_000
    max_held_answers: int = 100_000  # answers kept for calls pipelined on them
    max_string_len: int = 64 * 1024 * 1024  # one str or bytes value, in bytes
    max_streams: int = 1_000  # streams this side sends at once (generators running for the peer)
    max_stream_window: int = 100_000  # items of credit a stream's receiver may grant ahead
    max_stream_window_bytes: int = 256 * 1024 * 1024  # payload bytes of credit granted ahead

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"limit {name} must be a positive int, got {value!r}")
        if self.max_frame > MAX_FRAME:
            raise ValueError("max_frame cannot exceed 4 GiB - 1 (u32 length prefix)")
        if self.max_frame < MIN_FRAME:
            raise ValueError(f"max_frame must be at least {MIN_FRAME} bytes, got {self.max_frame}")

    @classmethod
    def from_options(cls, **options: int) -> Limits:
        """Build limits from keyword options, rejecting unknown names clearly."""
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown limit option(s): {', '.join(sorted(unknown))}")
        return cls(**options)


def encode_frame(header: list, payload: bytes = b"", max_frame: int = MAX_FRAME) -> bytes:
    """Return one framed message; raise LimitExceeded if its body exceeds ``max_frame``.

    This is the one size check of everything a side sends: the broker passes
    the ``max_frame`` its peer announced, so a frame the peer would refuse
    (and drop the connection for) is refused here instead.
    """
    head = _HEADER_PACKER.pack(header)
    head_len = len(head)
    body = 2 + head_len + len(payload)
    if body > max_frame or head_len > MAX_HEADER:
        if head_len > MAX_HEADER:
            raise LimitExceeded(f"frame header is {head_len} bytes; the wire allows {MAX_HEADER}")
        what = _WHAT.get(header[0]) or Kind(header[0]).name.lower()
        raise LimitExceeded(f"{what} of {body} bytes exceeds the peer's frame limit of {max_frame} bytes")
    return b"".join((FRAME_PREFIX.pack(body, head_len), head, payload))


class PackedCall:
    """One no-answer call packed once for many references: ``encode_frame`` with only the id varying.

    A broadcast sends ``[kind, NO_ANSWER, id, method, PLAIN]`` and the same
    payload to every observer; the header's bytes around the id are the same
    for all, so ``frame(ref_id)`` packs the id alone and joins the pieces
    (``encode_frame`` stays the reference, and decides every refusal). A
    small call keeps the frames it made by id: the same object's cache id is
    often the same on many connections (each numbers its caches in the order
    it sent them), and then those observers share one frame.
    """

    __slots__ = (
        "_back",
        "_front",
        "_pieces",
        "frames",
        "kind",
        "method",
        "observer_body",
        "payload",
        "plain",
    )

    def __init__(self, kind: int, method: str, payload: bytes, plain: int):
        self.kind, self.method, self.payload, self.plain = kind, method, payload, plain
        pack = _HEADER_PACKER.pack
        self._front = b"\x95" + pack(kind) + pack(NO_ANSWER)  # a msgpack array of 5
        self._back = pack(method) + pack(plain)
        # By the packed id's length (1 to 9 bytes): the frame's bytes before the id and
        # those after it, or None if the header cannot fit.
        self._pieces: dict[int, tuple[bytes, bytes] | None] = {}
        #: The frames ``frame`` made, by id (an int, never a bool), if the payload is
        #: 4 KiB or less (and at most 256 of them); each is what ``frame`` returns
        #: for its id under any limit of ``observer_body`` or more.
        self.frames: dict[int, bytes] = {}
        head_len = len(self._front) + 9 + len(self._back)  # 9: the longest packed int
        #: The largest body of this call's frames (the longest id's) if it is one an
        #: observer takes as made: OBSERVE, PLAIN (mode 0), an identifier for a name
        #: and a header that fits; otherwise more than any peer's limit. Checked once
        #: here, so a sender tests ``observer_body <= max_frame`` per observer instead.
        self.observer_body = MAX_FRAME + 1
        if kind == Kind.OBSERVE and plain == 0 and type(method) is str and method.isidentifier():
            if head_len <= MAX_HEADER and 2 + head_len + len(payload) <= MAX_FRAME:
                self.observer_body = 2 + head_len + len(payload)

    def frame(self, ref_id: int, max_frame: int = MAX_FRAME) -> bytes:
        """What ``encode_frame([kind, NO_ANSWER, ref_id, method, plain], payload, max_frame)`` returns."""
        frame = self.frames.get(ref_id) if type(ref_id) is int else None
        if frame is None:
            frame = self._make(ref_id)
        if frame is None or len(frame) - 4 > max_frame:  # the body: all but its u32 length
            header = [self.kind, NO_ANSWER, ref_id, self.method, self.plain]
            return encode_frame(header, self.payload, max_frame)  # raises, saying what is wrong
        return frame

    def _make(self, ref_id: int) -> bytes | None:
        """The frame for ``ref_id`` whatever its size, kept if small; None if its header cannot fit."""
        ident = _HEADER_PACKER.pack(ref_id)
        if len(ident) not in self._pieces:
            self._pieces[len(ident)] = self._around(len(ident))
        pieces = self._pieces[len(ident)]
        if pieces is None:
            return None
        frame = pieces[0] + ident + pieces[1]
        if type(ref_id) is int and len(self.frames) < _KEPT_FRAMES and len(self.payload) <= _KEPT_PAYLOAD:
            self.frames[ref_id] = frame
        return frame

    def _around(self, id_size: int) -> tuple[bytes, bytes] | None:
        head_len = len(self._front) + id_size + len(self._back)
        body = 2 + head_len + len(self.payload)
        if head_len > MAX_HEADER or body >> 32:  # beyond the prefix's u16 and u32
            return None
        return FRAME_PREFIX.pack(body, head_len) + self._front, self._back + self.payload


class BinFrame(NamedTuple):
    """A frame carrying one large bytes value, in two parts so the value is never copied.

    ``head`` is the prefix, the header and msgpack's bin 32 header; ``data`` the
    value itself. A driver writes them one after the other.
    """

    head: bytes
    data: bytes


def encode_bin_frame(header: list, data: bytes, max_frame: int = MAX_FRAME) -> BinFrame:
    """``encode_frame(header, msgpack.packb(data))`` for bytes of 64 KiB or more, not copying them.

    msgpack would copy ``data`` into its buffer and out again, and
    ``encode_frame`` once more: for an answer of 80 MiB, a quarter of a
    second of the event loop on a quiet core. At this size msgpack writes a
    bin 32 header too, so the bytes are the same.
    """
    head = _HEADER_PACKER.pack(header)
    size = len(data)
    body = 2 + len(head) + 5 + size
    if body > max_frame or len(head) > MAX_HEADER or size >> 32:
        encode_frame(header, msgpack.packb(data), max_frame)  # raises, saying what is wrong
    prefix = FRAME_PREFIX.pack(body, len(head))
    return BinFrame(b"".join((prefix, head, _BIN32, size.to_bytes(4, "big"))), data)


def check_prefix(body: int, head_len: int, max_frame: int) -> None:
    """Raise LimitExceeded or ProtocolError if a frame prefix is unacceptable.

    ``FRAME_PREFIX`` gives ``body`` and ``head_len``. FrameReader tests
    ``body > max_frame or head_len + 2 > body or head_len == 0`` inline and
    calls this only when that holds, to learn what to say.
    """
    if body > max_frame:
        raise LimitExceeded(f"peer announced a {body}-byte frame; the limit is {max_frame} bytes")
    if head_len + 2 > body or head_len == 0:
        raise ProtocolError(f"frame header length {head_len} does not fit a {body}-byte frame")


def decode_header(raw: Payload) -> list:
    """Decode a frame header: a msgpack array whose first item is an int kind."""
    try:
        header = msgpack.unpackb(raw, strict_map_key=False)
    except Exception as exc:
        raise ProtocolError(f"undecodable frame header: {exc}") from None
    if type(header) is not list or not header or type(header[0]) is not int:
        raise ProtocolError(f"frame header must be a list starting with a kind, got {header!r:.80}")
    return header


def check_preamble(data: Payload) -> None:
    """Validate the peer's 8-byte preamble; raise ProtocolError with what was wrong."""
    if data[:4] != MAGIC:
        raise ProtocolError(f"peer does not speak pbnb: it opened with {bytes(data)!r}")
    version = int.from_bytes(data[4:6], "big")
    if version != VERSION:
        raise ProtocolError(f"peer speaks pbnb protocol version {version}; this side speaks {VERSION}")


#: A frame's payload as a FrameReader hands it over: a copy, or a view of the data fed.
Payload = bytes | bytearray | memoryview
#: What a FrameReader hands each frame to: ``handler(header, payload)``.
FrameHandler = Callable[[list, Payload], None]

_read_prefix = FRAME_PREFIX.unpack_from
_unpackb = msgpack.unpackb
# Payloads up to this many bytes are copied out of the received data rather than viewed.
_COPIED_PAYLOAD = 2048
# A frame at least this long is assembled in one growing buffer, which takes
# each chunk with one copy (and takes views, see feed), rather than kept as
# chunks and joined: a peer that announces a big frame and sends little makes
# us hold little.
_ASSEMBLED_FRAME = 256 * 1024


class FrameReader:
    """Cuts the peer's byte stream into its preamble and frames, and dispatches each frame.

    ``feed(data)`` takes bytes as they arrive, in pieces of any size. After
    the preamble (checked, then ``on_preamble()``), each whole frame goes to
    ``handlers[kind](header, payload)``; ``handlers`` is the table of what is
    legal now, which the owner swaps as its state changes. A kind missing from
    it goes to ``on_illegal(kind)``, which must raise. ``feed`` raises
    ProtocolError (or LimitExceeded) for a stream that breaks the framing;
    a handler's ValueError, TypeError or IndexError becomes a ProtocolError
    naming the message. ``payload`` may be a view of ``data``: a handler that
    keeps it must copy it. ``header`` is not the handler's to change: a frame
    whose header repeats the last one decoded gets the same list (so a handler
    may remember a header it has checked, and know it again by identity).

    ``feed(data, max_frames)`` dispatches at most ``max_frames`` frames and
    keeps the rest of what arrived (``backlog`` bytes); ``feed(b"", max_frames)``
    dispatches the next ones. A driver uses it to serve other peers between
    batches of a peer that sent thousands of messages in one read.
    """

    __slots__ = (
        "_assembly",
        "_backlog",
        "_backlog_at",
        "_last_header",
        "_last_raw",
        "_needed",
        "_on_illegal",
        "_on_preamble",
        "_pending",
        "_pending_size",
        "_preamble_seen",
        "closed",
        "handlers",
        "max_frame",
    )

    def __init__(
        self,
        max_frame: int,
        handlers: Mapping[int, FrameHandler],
        on_illegal: Callable[[int], None],
        on_preamble: Callable[[], None] | None = None,
    ):
        self.max_frame = max_frame
        self.handlers = handlers
        self._on_illegal = on_illegal
        self._on_preamble = on_preamble
        #: Set to stop reading: later bytes, and the rest of the current ones, are ignored.
        self.closed = False
        self._preamble_seen = False
        # Bytes waiting for a whole frame, and how many we need.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._needed = PREAMBLE_SIZE
        self._assembly: bytearray | None = None
        # What a feed with max_frames left undispatched: data[at:], starting at a frame.
        self._backlog: bytes | bytearray | None = None
        self._backlog_at = 0
        # The last header decoded (see _read_frames), and its bytes.
        self._last_raw: bytes | bytearray = b""
        self._last_header: list = []

    @property
    def receiving_large_frame(self) -> bool:
        """Whether a large frame is arriving: then ``feed`` copies from views, so pass views."""
        return self._assembly is not None

    @property
    def buffered(self) -> int:
        """Bytes held of a frame (or the preamble) that has not arrived whole yet."""
        return len(self._assembly) if self._assembly is not None else self._pending_size

    @property
    def backlog(self) -> int:
        """Bytes received but not dispatched because a feed reached its ``max_frames``."""
        return 0 if self._backlog is None else len(self._backlog) - self._backlog_at

    def close(self) -> None:
        """Ignore all further input and drop what is held."""
        self.closed = True
        self._pending.clear()
        self._pending_size = 0
        self._assembly = None
        self._backlog = None

    def feed(self, data: bytes | bytearray | memoryview, max_frames: int = 0) -> bool:
        """Take the next bytes of the stream; dispatch the frames they complete.

        With ``max_frames``, at most that many: the rest waits as ``backlog``,
        dispatched first by the next feed (with no bytes, or more). Returns
        whether frames wait so.
        """
        if self.closed:
            return False
        backlog = self._backlog
        if backlog is not None:
            self._backlog = None
            if data:  # the driver did not stop reading: these bytes queue behind the backlog
                backlog = backlog[self._backlog_at :] + bytes(data)
                self._backlog_at = 0
            _read_frames(self, backlog, self._backlog_at, max_frames or -1)
            return self._backlog is not None
        if not data:
            return False
        rest = None
        assembly = self._assembly
        if assembly is not None:
            taken = min(len(data), self._needed - len(assembly))
            assembly += data[:taken]
            if len(assembly) < self._needed:
                return False
            self._assembly = None
            data, rest = assembly, data[taken:]
        else:
            if type(data) is not bytes:
                data = bytes(data)
            if self._pending_size:
                self._pending.append(data)
                self._pending_size += len(data)
                if self._pending_size < self._needed:
                    return False
                data = b"".join(self._pending)
                self._pending.clear()
                self._pending_size = 0
        if self._preamble_seen:
            _read_frames(self, data, 0, max_frames or -1)
        else:
            self._read_preamble(data, max_frames)
        if rest:  # what followed a large frame in the same read
            return self.feed(rest, max_frames)
        return self._backlog is not None

    def _read_preamble(self, data: bytes | bytearray, max_frames: int) -> None:
        """Check the preamble at the start of ``data``, then dispatch the frames after it."""
        if len(data) < PREAMBLE_SIZE:
            if not PREAMBLE.startswith(data[:4]):
                check_preamble(data)  # garbage: say so now rather than wait for 8 bytes
            self._keep(data, PREAMBLE_SIZE)
            return
        check_preamble(data[:PREAMBLE_SIZE])
        self._preamble_seen = True
        if self._on_preamble is not None:
            self._on_preamble()
        _read_frames(self, data, PREAMBLE_SIZE, max_frames or -1)

    def _read_frames(self, data: bytes | bytearray, pos: int, budget: int) -> None:
        """Dispatch the frames of ``data[pos:]``, at most ``budget`` of them (-1: no bound).

        The frame loop; ``_receiving.FrameLoop`` is its C twin, used when it was
        built (tests/test_core_twins.py holds both to the same dispatches, state
        and errors). A frame cut short is kept for the next feed; frames beyond
        the budget wait as the backlog.
        """
        max_frame = self.max_frame
        end = len(data)
        # The loop is written out in full (prefix, header, dispatch): it runs
        # for every message, and each helper call would cost more than its
        # work. The checks inline are the quick forms of check_prefix and
        # decode_header, which run only to say what is wrong (or to accept a
        # header the quick decode refused); tests/test_core_twins.py checks
        # that both forms agree. Headers and small payloads are sliced as
        # bytes: copying a few bytes is cheaper than a memoryview, and msgpack
        # reads bytes faster.
        view: memoryview | None = None
        while pos < end and not self.closed:
            if not budget:
                self._backlog, self._backlog_at = data, pos
                return
            budget -= 1
            if end - pos < FRAME_PREFIX_SIZE:
                self._keep(data[pos:], FRAME_PREFIX_SIZE)
                return
            body, head_len = _read_prefix(data, pos)
            if body > max_frame or head_len + 2 > body or head_len == 0:
                check_prefix(body, head_len, max_frame)
            stop = pos + 4 + body
            if stop > end:
                self._keep(data[pos:], 4 + body)
                return
            head_end = pos + FRAME_PREFIX_SIZE + head_len
            raw = data[pos + FRAME_PREFIX_SIZE : head_end]
            # A peer repeats a header for each update of one copy or item of one stream:
            # the same bytes as the last header decoded are not decoded again (and are
            # handed over as the same list).
            header: Any  # a list once checked
            if raw == self._last_raw:
                header = self._last_header
            else:
                try:
                    header = _unpackb(raw)
                except Exception:
                    header = None
                if type(header) is not list or not header or type(header[0]) is not int:
                    header = decode_header(raw)
                self._last_raw = raw
                self._last_header = header
            payload: Payload
            if stop - head_end <= _COPIED_PAYLOAD:
                payload = data[head_end:stop]
            else:
                if view is None:
                    view = memoryview(data)
                payload = view[head_end:stop]
            pos = stop
            kind = header[0]
            handler = self.handlers.get(kind)
            if handler is None:
                _refuse_kind(self, kind)
            try:
                handler(header, payload)
            except (ValueError, TypeError, IndexError) as exc:
                raise _malformed(kind, exc) from None
        self._needed = FRAME_PREFIX_SIZE

    def _keep(self, rest: bytes | bytearray, needed: int) -> None:
        self._needed = needed
        if needed >= _ASSEMBLED_FRAME:
            self._assembly = bytearray(rest)
            return
        chunk = bytes(rest)
        self._pending.append(chunk)
        self._pending_size = len(chunk)


def _refuse_kind(reader: FrameReader, kind: int) -> NoReturn:
    """A frame of a kind the reader's handlers do not take now: ``on_illegal``, then a ProtocolError."""
    reader._on_illegal(kind)
    raise ProtocolError(f"message kind {kind} is not allowed now")  # on_illegal must raise


def _malformed(kind: int, error: Exception) -> ProtocolError:
    """What a handler's ValueError, TypeError or IndexError becomes: a ProtocolError naming the message."""
    refusal = ProtocolError(f"malformed {Kind(kind).name} message: {error}")
    refusal.__cause__ = None  # as if raised "from None": the handler's error is in the message
    return refusal


_FrameLoopFunction = Callable[[FrameReader, bytes | bytearray, int, int], None]
#: ``feed_frames(reader, data, max_frames)`` is ``reader.feed(data, max_frames)``, in C when
#: built (its common case; the rest goes to ``FrameReader.feed``): what a broker calls.
feed_frames: Callable[[FrameReader, bytes | bytearray | memoryview, int], bool]
try:
    from ._receiving import FrameLoop
except ImportError:  # not built (a pure-Python wheel, as Pyodide's): the Python twins
    _read_frames: _FrameLoopFunction = FrameReader._read_frames
    feed_frames = FrameReader.feed
else:
    _read_frames = FrameLoop(
        FrameReader,
        _unpackb,
        check_prefix,
        decode_header,
        _refuse_kind,
        _malformed,
        FrameReader._read_frames,
        FrameReader.feed,
        _COPIED_PAYLOAD,
    )
    feed_frames = _read_frames.feed
