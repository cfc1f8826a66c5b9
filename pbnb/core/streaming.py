"""Remote streams: the credit accounting of calls whose answer is a series of items.

A remote method that is a generator (plain or async) answers its call with a
stream. Flow control is by credit, granted by the receiver, in items and in
payload bytes. The rules, from both ends (docs/protocol.md has them with the
frames):

* **The callee opens.** When the method turns out to be a generator, the
  callee sends STREAM for the call's request id instead of an answer. Items
  follow as ITEM frames, and the call's own ANSWER (nil) or ERROR ends the
  stream; CANCEL from the caller stops it.
* **The caller grants.** CREDIT adds items and bytes to what the callee may
  send. The caller grants a whole window when the stream opens, or earlier,
  while the call is still pending, when it already knows it wants a stream
  (``async for`` over the call): then the first items need no round trip.
* **The callee spends.** It sends an item only while it holds at least one
  item and one byte of credit, and each item costs one item and its payload's
  length in bytes. The last item may take the byte credit below zero, so an
  item larger than the byte window still goes, alone. The generator is not
  advanced while there is no credit. Items queued back to back go out in one
  ITEM frame (a ``Batch``), which costs what its items cost.
* **The caller re-grants as its consumer reads,** once half a window (of
  items or of bytes) has been read, so credit arrives before the callee runs
  out: no round trip per item, and never more than a window queued.
* **Violations are the stream's own.** An item beyond the credit fails that
  stream with a ProtocolError on the caller, which cancels it; credit beyond
  ``Limits.max_stream_window`` (or ``_bytes``) fails it on the callee. The
  connection carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import LimitExceeded
from .serialize import PLAIN, TUPLES_FIRST_PREFIX
from .wire import Kind, Limits, Payload, encode_frame

#: The window a stream gets unless the caller chooses one: items, and payload bytes.
DEFAULT_WINDOW_ITEMS = 512
DEFAULT_WINDOW_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Window:
    """How much a caller lets the callee send ahead of its consumer: items and payload bytes."""

    items: int = DEFAULT_WINDOW_ITEMS
    bytes: int = DEFAULT_WINDOW_BYTES

    def __post_init__(self) -> None:
        for name in ("items", "bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"a stream window's {name} must be a positive int, got {value!r}")

    def changed(self, items: int | None = None, nbytes: int | None = None) -> Window:
        """This window with ``items`` or ``nbytes`` changed (None keeps each)."""
        return Window(self.items if items is None else items, self.bytes if nbytes is None else nbytes)

    def check(self, limits: Limits) -> None:
        """Raise LimitExceeded if the peer (with the same limits) would refuse this window."""
        if self.items > limits.max_stream_window:
            raise LimitExceeded(
                f"a window of {self.items} items exceeds max_stream_window ({limits.max_stream_window})"
            )
        if self.bytes > limits.max_stream_window_bytes:
            raise LimitExceeded(
                f"a window of {self.bytes} bytes exceeds "
                f"max_stream_window_bytes ({limits.max_stream_window_bytes})"
            )


#: Items of one stream queued back to back share an ITEM frame up to this many payload bytes.
BATCH_BYTES = 64 * 1024
_ITEM = int(Kind.ITEM)
#: msgpack's own header of an array of n items (a C call under the GIL, so one packer serves all threads).
_array_header = msgpack.Packer().pack_array_header


class Batch:
    """Items of one stream at the end of the send queue, to go out as one ITEM frame.

    Each item is encoded (PLAIN) when it is yielded, so later changes to a
    yielded object do not show; the frame is made when the queue is sent.
    A PLAIN payload's layout covers all of it, so a batch holds items of one
    layout: tuples-first items share one prefix before their array.
    """

    __slots__ = ("payloads", "request_id", "size", "tuples_first")

    def __init__(self, request_id: int, payload: bytes):
        self.request_id = request_id
        self.payloads = [payload]
        self.size = item_size(payload)
        self.tuples_first = is_tuples_first(payload)

    def takes(self, payload: bytes, limit: int) -> bool:
        """Whether ``payload`` (an item of this batch's stream) may join it, within ``limit`` bytes."""
        return self.size + item_size(payload) <= limit and is_tuples_first(payload) == self.tuples_first

    def add(self, payload: bytes) -> None:
        self.payloads.append(payload)
        self.size += item_size(payload)

    def frame(self) -> bytes:
        """``[ITEM, request_id, PLAIN]`` + the item, or ``[ITEM, request_id, PLAIN, n]`` + an array of n."""
        payloads = self.payloads
        if len(payloads) == 1:
            return encode_frame([_ITEM, self.request_id, PLAIN], payloads[0])
        head = [_ITEM, self.request_id, PLAIN, len(payloads)]
        if self.tuples_first:
            skip = len(TUPLES_FIRST_PREFIX)
            values = b"".join(memoryview(payload)[skip:] for payload in payloads)
            return encode_frame(head, TUPLES_FIRST_PREFIX + _array_header(len(payloads)) + values)
        return encode_frame(head, _array_header(len(payloads)) + b"".join(payloads))


#: The length of a msgpack array header, by its first byte (what a batch's payload cost leaves out).
ARRAY_HEADER_LENGTH = {**{0x90 | n: 1 for n in range(16)}, 0xDC: 3, 0xDD: 5}


def is_tuples_first(payload: Payload) -> bool:
    return payload[: len(TUPLES_FIRST_PREFIX)] == TUPLES_FIRST_PREFIX


def item_size(payload: Payload) -> int:
    """What one item costs of the byte credit: its payload, less a tuples-first prefix."""
    return len(payload) - len(TUPLES_FIRST_PREFIX) if is_tuples_first(payload) else len(payload)


def batch_size(payload: Payload) -> int:
    """What a batch costs: its payload less the array header (and a tuples-first prefix): its items' sizes."""
    start = len(TUPLES_FIRST_PREFIX) if is_tuples_first(payload) else 0
    header = ARRAY_HEADER_LENGTH.get(payload[start], 0) if len(payload) > start else 0
    return len(payload) - start - header


class Streamed:
    """The outcome a call pipelined on a stream's call learns: its answer is no reference."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "(a stream of items)"


STREAMED = Streamed()


class Credit:
    """The callee's side of one call: the credit its caller granted, and whether it streams yet."""

    __slots__ = ("bytes", "items", "open")

    def __init__(self) -> None:
        self.items = 0
        self.bytes = 0
        self.open = False  # STREAM was sent


class Receiving:
    """The caller's side of one open stream: credit the callee holds, and what is granted but unread."""

    __slots__ = ("bytes", "items", "token", "unread_bytes", "unread_items", "window")

    def __init__(self, token: Any, window: Window):
        self.token = token
        self.window = window
        # Credit granted and not yet spent by an arriving item: the callee's
        # view of its credit, exactly (the bytes may be below zero).
        self.items = window.items
        self.bytes = window.bytes
        # Granted and not yet read by the consumer: in flight plus queued.
        # Re-grants keep it at about one window.
        self.unread_items = window.items
        self.unread_bytes = window.bytes


class Streams:
    """The stream tables of one connection, both ends; the broker owns one."""

    __slots__ = ("credit", "limits", "open_count", "receiving", "windows")

    def __init__(self, limits: Limits):
        self.limits = limits
        # Callee side. The peer's request id we are running -> the credit it granted:
        # made by its first CREDIT (maybe before we knew the call streams) or by our
        # STREAM, dropped when the call ends (answered, failed, cancelled).
        self.credit: dict[int, Credit] = {}
        # How many of those have opened (STREAM sent): bounded by max_streams.
        self.open_count = 0
        # Caller side. Our pending call -> the credit granted before we knew it
        # streams (a Receiving without a token yet); dropped when the call is
        # answered, opens (it moves to ``receiving``) or is cancelled.
        self.windows: dict[int, Receiving] = {}
        # Our request id whose answer is an open stream -> its accounting; dropped
        # when the stream ends (ANSWER, ERROR, a violation, our cancel).
        self.receiving: dict[int, Receiving] = {}

    # ---------------------------------------------------------------- callee

    def grant(self, request_id: int, items: int, nbytes: int) -> str | None:
        """The peer granted credit on its call ``request_id``; the reason to refuse it, or None."""
        credit = self.credit.get(request_id)
        if credit is None:
            credit = self.credit[request_id] = Credit()
        credit.items += items
        credit.bytes += nbytes
        limits = self.limits
        if credit.items > limits.max_stream_window:
            return (
                f"peer granted {credit.items} items of credit;"
                f" max_stream_window is {limits.max_stream_window}"
            )
        if credit.bytes > limits.max_stream_window_bytes:
            return (
                f"peer granted {credit.bytes} bytes of credit; "
                f"max_stream_window_bytes is {limits.max_stream_window_bytes}"
            )
        return None

    def open(self, request_id: int) -> None:
        """Our answer to ``request_id`` is a stream; LimitExceeded if max_streams are open."""
        if self.open_count >= self.limits.max_streams:
            raise LimitExceeded(f"{self.open_count} streams are open on this connection (max_streams)")
        credit = self.credit.get(request_id)
        if credit is None:
            credit = self.credit[request_id] = Credit()
        credit.open = True
        self.open_count += 1

    def forget(self, request_id: int) -> None:
        """The peer's call ``request_id`` is over: drop its credit."""
        credit = self.credit.pop(request_id, None)
        if credit is not None and credit.open:
            self.open_count -= 1

    # ---------------------------------------------------------------- caller

    def opened(self, request_id: int, token: Any) -> tuple[Receiving, bool]:
        """Our call's answer is a stream: its accounting, and whether its first window is still to grant."""
        stream = self.windows.pop(request_id, None)
        first = stream is None
        if stream is None:
            stream = Receiving(token, Window())
        stream.token = token
        self.receiving[request_id] = stream
        return stream, first

    def read(self, stream: Receiving, items: int, nbytes: int) -> tuple[int, int] | None:
        """The consumer read ``items`` items (``nbytes`` in all): the (items, bytes) to grant now, or None."""
        stream.unread_items -= items
        stream.unread_bytes -= nbytes
        return self.top_up(stream)

    def top_up(self, stream: Receiving) -> tuple[int, int] | None:
        """The credit that brings ``stream`` back to one window unread, once half of it was read."""
        window = stream.window
        items = window.items - stream.unread_items
        nbytes = window.bytes - stream.unread_bytes
        if items * 2 < window.items and nbytes * 2 < window.bytes:
            return None
        items, nbytes = max(0, items), max(0, nbytes)
        stream.items += items
        stream.bytes += nbytes
        stream.unread_items += items
        stream.unread_bytes += nbytes
        return (items, nbytes) if items or nbytes else None

    def clear(self) -> None:
        self.credit.clear()
        self.open_count = 0
        self.windows.clear()
        self.receiving.clear()
