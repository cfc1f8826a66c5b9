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
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import msgpack

from ..errors import LimitExceeded, ProtocolError

MAGIC = b"PBNB"
VERSION = 1
PREAMBLE = MAGIC + struct.pack(">HH", VERSION, 0)
PREAMBLE_SIZE = len(PREAMBLE)

#: ``u32 body_length | u16 header_length``: what starts every frame.
FRAME_PREFIX = struct.Struct(">IH")
FRAME_PREFIX_SIZE = FRAME_PREFIX.size
_HEADER_LENGTH = struct.Struct(">H")
MAX_HEADER = 0xFFFF
# One packer for every header saves building a Packer per frame (half the cost
# of a small frame). Sharing it across threads is safe: headers hold only
# builtins, so pack() runs in C without calling back into Python or
# releasing the GIL, and it resets itself if it raises.
_HEADER_PACKER = msgpack.Packer(use_bin_type=True)


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


# request_id 0 in CALL/OBSERVE asks for no answer.
NO_ANSWER = 0

#: The smallest ``max_frame`` a side may announce: room for an ERROR or
#: GOODBYE with a clipped message, so every failure can still be reported.
MIN_FRAME = 128
#: The largest body the u32 length prefix can announce.
MAX_FRAME = 0xFFFFFFFF
# What a refused frame is called in LimitExceeded's message.
_WHAT = {Kind.CALL: "call", Kind.OBSERVE: "call", Kind.ANSWER: "answer", Kind.CACHE_STATE: "cache state"}


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
    max_string_len: int = 64 * 1024 * 1024  # one str or bytes value, in bytes

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


def check_prefix(body: int, head_len: int, max_frame: int) -> None:
    """Raise LimitExceeded or ProtocolError if a frame prefix is unacceptable.

    ``FRAME_PREFIX`` gives ``body`` and ``head_len``. The broker tests
    ``body > max_frame or head_len + 2 > body or head_len == 0`` inline and
    calls this only when that holds, to learn what to say.
    """
    if body > max_frame:
        raise LimitExceeded(f"peer announced a {body}-byte frame; the limit is {max_frame} bytes")
    if head_len + 2 > body or head_len == 0:
        raise ProtocolError(f"frame header length {head_len} does not fit a {body}-byte frame")


def decode_header(raw: bytes | memoryview) -> list:
    """Decode a frame header: a msgpack array whose first item is an int kind."""
    try:
        header = msgpack.unpackb(raw, strict_map_key=False)
    except Exception as exc:
        raise ProtocolError(f"undecodable frame header: {exc}") from None
    if type(header) is not list or not header or type(header[0]) is not int:
        raise ProtocolError(f"frame header must be a list starting with a kind, got {header!r:.80}")
    return header


def split_frame(frame: memoryview) -> tuple[list, memoryview]:
    """Decode a frame body (without its u32 length) into (header, payload view)."""
    # struct reads the view in place; int.from_bytes(frame[:2]) would cost a slice and a copy.
    end = 2 + _HEADER_LENGTH.unpack_from(frame)[0]
    return decode_header(frame[2:end]), frame[end:]


def check_preamble(data: bytes) -> None:
    """Validate the peer's 8-byte preamble; raise ProtocolError with what was wrong."""
    if data[:4] != MAGIC:
        raise ProtocolError(f"peer does not speak pbnb: it opened with {bytes(data)!r}")
    version = int.from_bytes(data[4:6], "big")
    if version != VERSION:
        raise ProtocolError(f"peer speaks pbnb protocol version {version}; this side speaks {VERSION}")
