"""The references a refused message carried, found without decoding the message.

A message refused unread (a call to an object this side no longer holds) may
carry references to the peer's objects, which the peer counted as sent: they
must be given back. Decoding the message to find them costs nearly as much as
accepting it: seconds of the event loop for a message of millions of small
maps. ``walked_references`` reads the msgpack bytes instead: values in which
no reference can start (none of the byte patterns a reference begins with
occurs in them) are stepped over by msgpack's C skipper, many at a time in
strides that double, and only the values that hold such a pattern are looked
into. A message with a few references costs about one pass of the skipper
over its bytes, but each reference costs several skips, so once the walk
finds them dense it stops and the message is decoded instead
(``decoded_references``, the slow twin: both must agree, see
tests/test_core_twins.py).
"""

from __future__ import annotations

from typing import Any

import msgpack

from . import serialize
from .wire import Limits

# How each thing to give back begins: the fixext 8 of an EXT_REMOTE or EXT_CACHED
# id, and the empty ext TAG_CACHE that opens a cache's [tag, id, ...] array.
_REMOTE = bytes([0xD7, serialize.EXT_REMOTE])
_CACHED = bytes([0xD7, serialize.EXT_CACHED])
_CACHE_TAG = bytes([0xC7, 0, serialize.TAG_CACHE])
MARKERS = (_REMOTE, _CACHED, _CACHE_TAG)
_NONE = 1 << 62  # "no marker ahead"
_ARRAY32 = b"\xdd"
_READ_SIZE = 16 * 1024
# Bytes per marker below which decoding the payload costs less than walking to each.
_DENSE = 4096

#: How often each reference occurs in a payload, by ``(ext code, id)``.
Counts = dict[tuple[int, int], int]


def carried_references(payload: bytes, limits: Limits) -> Counts | None:
    """How often each reference occurs in ``payload``, by ``(ext code, id)``.

    The codes are ``EXT_REMOTE`` (an object of the peer) and ``EXT_CACHED``
    (a cache of the peer, as an id or as a ``[TAG_CACHE, id, ...]`` state).
    None if ``payload`` is not one whole msgpack value within ``limits``:
    then nothing can be trusted to give back.
    """
    try:
        return walked_references(payload, limits.max_depth)
    except _Dense:
        return decoded_references(payload, limits)


def walked_references(payload: bytes, max_depth: int, dense: int = _DENSE) -> Counts | None:
    """``carried_references`` by stepping over the values that hold no marker.

    Raises ``_Dense`` once more than one reference per ``dense`` bytes (and a
    few) has been found: decoding costs less than walking to each.
    """
    walk = _Walk(payload, max_depth, dense)
    try:
        end = walk.values(0, 1, 0)
    except _Dense:
        raise
    except Exception:  # too deep (_Unreadable), or whatever msgpack's skipper says of broken bytes
        return None
    return walk.counts if end == len(payload) else None


def decoded_references(payload: bytes, limits: Limits) -> Counts | None:
    """``carried_references`` by decoding, under the decoder's length limits, keeping no structure.

    Each array and map is dropped as soon as it has been looked at, so no
    dict is built and memory follows the largest array.
    """
    counts: Counts = {}
    tag = object()

    def note(code: int, data: bytes) -> Any:
        if code in (serialize.EXT_REMOTE, serialize.EXT_CACHED) and len(data) == 8:
            key = (code, int.from_bytes(data, "big"))
            counts[key] = counts.get(key, 0) + 1
        return tag if code == serialize.TAG_CACHE and not data else None

    def array(items: list) -> None:
        if len(items) > 1 and items[0] is tag and type(items[1]) is int:
            key = (serialize.EXT_CACHED, items[1])
            counts[key] = counts.get(key, 0) + 1

    longest = limits.max_string_len
    try:
        msgpack.unpackb(
            payload,
            ext_hook=note,
            list_hook=array,
            object_pairs_hook=_drop,
            strict_map_key=False,  # no dict is built: any key will do
            max_str_len=longest,
            max_bin_len=longest,
            max_array_len=limits.max_container_len,
            max_map_len=limits.max_container_len,
            max_ext_len=longest,
        )
    except Exception:
        return None  # not msgpack, or over a limit
    return counts


def _drop(pairs: list) -> None:
    """A map seen by the decoding scan: nothing in it is needed once its items were read."""


class _Unreadable(Exception):
    """The payload nests deeper than the limit."""


class _Dense(Exception):
    """The payload holds too many references to walk to each."""


class _Walk:
    __slots__ = ("_data", "_dense", "_max_depth", "_next", "_notes", "_view", "counts")

    def __init__(self, data: bytes, max_depth: int, dense: int):
        self._data = data
        self._view = memoryview(data)
        self._max_depth = max_depth
        self._dense = dense
        self._notes = 0
        self._next = [-1, -1, -1]  # where each marker next occurs (-1: not looked yet)
        self.counts: Counts = {}

    def _marker_from(self, pos: int) -> int:
        """Where the first marker at or after ``pos`` starts; _NONE if none does."""
        found = self._next
        data = self._data
        for i, marker in enumerate(MARKERS):
            if found[i] < pos:
                # A one-byte search runs at memory speed (memchr), longer needles
                # several times slower: the longer one starts at its first byte.
                at = data.find(marker[0], pos)
                if at >= 0:
                    at = data.find(marker, at)
                found[i] = _NONE if at < 0 else at
        return min(found)

    def _skip(self, pos: int, count: int) -> int:
        """Where the ``count`` values starting at ``pos`` end (msgpack's skipper, as one array)."""
        head = b"" if count == 1 else _ARRAY32 + count.to_bytes(4, "big")
        # Reads in pieces the size of what a few values take, up to 16 KiB: each
        # piece is copied, and most skips are short.
        read_size = min(_READ_SIZE, 64 * count)
        unpacker = msgpack.Unpacker(_Stream(head, self._view, pos), read_size=read_size, max_buffer_size=0)
        unpacker.skip()
        return pos + unpacker.tell() - len(head)

    def values(self, pos: int, count: int, depth: int) -> int:
        """Note the references in the ``count`` values starting at ``pos``; return where they end."""
        data = self._data
        # Whole values that end before the next marker are stepped over in strides
        # that double while they fit, then halve down to the one value that holds it.
        stride, growing = 1, True
        while count:
            marker = self._marker_from(pos)
            if marker == _NONE:
                return self._skip(pos, count)
            if pos == marker and data[pos] == 0xD7:  # fixext 8: a reference, or an id of a cache
                self._note(data[pos + 1], int.from_bytes(data[pos + 2 : pos + 10], "big"), pos)
                pos, count, stride, growing = pos + 10, count - 1, 1, True
                continue
            step = min(stride, count)
            if step == 1:
                container = _container(data, pos)
                if container is not None:
                    # Into it rather than over it: were the marker inside, stepping over it
                    # would only have told us so, at the cost of reading all its bytes.
                    pos = self._container_items(pos, container, depth)
                else:
                    pos = self._skip(pos, 1)  # a str, bin or ext: before the marker, or holding its bytes
                count -= 1
                if marker < pos:  # passed: the next marker starts a new search
                    stride, growing = 1, True
                else:
                    stride = 2 if growing else 1
                continue
            end = self._skip(pos, step)
            if end <= marker:
                pos, count = end, count - step
                stride = step * 2 if growing else max(1, step // 2)
            else:
                growing, stride = False, step // 2
        return pos

    def _container_items(self, pos: int, container: tuple[int, int, bool], depth: int) -> int:
        """Note the references in the array or map at ``pos``; return where it ends."""
        count, head, is_array = container
        if depth >= self._max_depth:
            raise _Unreadable
        items = pos + head
        if is_array and count > 1 and self._data.startswith(_CACHE_TAG, items):
            self._cache_state(items + len(_CACHE_TAG))
        return self.values(items, count, depth + 1)

    def _cache_state(self, pos: int) -> None:
        """A ``[TAG_CACHE, id, ...]`` array: note the id if the item at ``pos`` is an int."""
        first = self._data[pos]
        if first <= 0x7F or first >= 0xE0 or 0xCC <= first <= 0xD3:
            self._note(serialize.EXT_CACHED, msgpack.unpackb(self._view[pos : self._skip(pos, 1)]), pos)

    def _note(self, code: int, remote_id: int, pos: int) -> None:
        key = (code, remote_id)
        self.counts[key] = self.counts.get(key, 0) + 1
        self._notes += 1
        if self._notes > 64 + pos // self._dense:
            raise _Dense("too many references to walk to each: decode instead")


def _container(data: bytes, pos: int) -> tuple[int, int, bool] | None:
    """The item count, header length and whether it is an array, of the array or map at ``pos``."""
    first = data[pos]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F, 1, True
    if 0x80 <= first <= 0x8F:
        return 2 * (first & 0x0F), 1, False  # a map's items: its keys and values
    if first in (0xDC, 0xDE):
        return (1 + (first == 0xDE)) * int.from_bytes(data[pos + 1 : pos + 3], "big"), 3, first == 0xDC
    if first in (0xDD, 0xDF):
        return (1 + (first == 0xDF)) * int.from_bytes(data[pos + 1 : pos + 5], "big"), 5, first == 0xDD
    return None


class _Stream:
    """A file-like view of ``head`` then ``view[pos:]``, read by an Unpacker as it skips."""

    __slots__ = ("_head", "_pos", "_view")

    def __init__(self, head: bytes, view: memoryview, pos: int):
        self._head = head
        self._view = view
        self._pos = pos

    def read(self, size: int) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        start = self._pos
        self._pos = start + size
        return self._view[start : start + size].tobytes()
