"""Object graph <-> msgpack, keeping identity only when a message needs it.

Two modes, chosen per message by the sender and named in the frame header:

``PLAIN``
    The value is a tree of builtins (no object reachable twice, no cycles, no
    copies or caches). msgpack packs it in C; tuples, sets, frozensets and big
    ints go through ``default`` as tagged arrays or ext types, and the receiver
    rebuilds them in ``list_hook``/``ext_hook``. References may appear: the
    broker's tables already give them identity. msgpack has one array type, so
    one of lists and tuples must be tagged: a value holding more tuples than
    lists goes *tuples-first* (``[TUPLES_FIRST, value]``, its arrays read as
    tuples and its lists tagged), any other *lists-first* (tuples tagged).
``GRAPH``
    Anything else. A Python walk numbers every container in the order a reader
    will meet it (mutable ones when they start, immutable ones when they end,
    as pickle does) and writes ``SHARED(n)`` for repeats, so shared objects and
    cycles, including cycles through tuples and copies, arrive intact.

The standard library's immutable values (``datetime``, ``date``, ``time``,
``timedelta``, ``Decimal``, exact types only) have no identity to keep: in
both modes each is one ext type with a fixed layout, a leaf like an atom.

Deciding costs a scan of the value's containers (``scan_value``), and the
receiver of a PLAIN value checks how deep it nests (``tree_depth_exceeds``).
Both walks, and the copy a tuples-first value is packed from (``tag_lists``),
have a C twin in ``_speedups.c``, used when it was built; the Python twins here
(``scan_value_walk``, ``tree_depth_walk``, ``tag_lists_walk``) are what Pyodide
and machines without a compiler run. Either way, containers the garbage collector
does not track hold only atoms and are not looked into.
"""

from __future__ import annotations

import gc
import struct
import sys
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import partial
from itertools import compress, filterfalse, repeat
from operator import is_not, lt
from sys import getrefcount
from typing import Any, Protocol, TypeVar

import msgpack
from msgpack import ExtType

from ..errors import InsecureJelly, LimitExceeded, ProtocolError, SerializationError
from .flavors import Cacheable, Copyable, CopyRegistry, Referenceable, RemoteCache, RemoteCopy
from .reference import CacheObserver, RemoteReference

try:
    from . import _speedups
except ImportError:  # built without it (Pyodide, PBNB_PURE_PYTHON=1, no compiler): Python twins
    _speedups = None  # type: ignore[assignment]

PLAIN = 0
GRAPH = 1

# What the identity scan (scan_value) finds a value to be.
SCAN_TREE = 0  # a tree: PLAIN, lists-first
SCAN_GRAPH = 1  # shared or cyclic parts, copies, caches, or unknown objects: GRAPH
SCAN_TUPLE_TREE = 2  # a tree with more tuples than lists and no reference: PLAIN, tuples-first

# Tag codes: an empty ext as the first item of an array says what the array is.
TAG_TUPLE = 1
TAG_SET = 2
TAG_FROZENSET = 3
TAG_COPY = 4  # [COPY, type_name, state]
TAG_CACHE = 5  # [CACHE, cache_id, type_name, state]: first send on a connection
TAG_TUPLE_SEEN = 6  # [TUPLE_SEEN, index, *items]: tuple defined inside its own items
TAG_FROZENSET_SEEN = 7
TAG_LIST = 8  # [LIST, *items]: a list, in a tuples-first payload
TAG_TUPLES_FIRST = 9  # [TUPLES_FIRST, value]: a PLAIN payload whose untagged arrays are tuples
# Ext codes with a payload.
EXT_BIGINT = 16  # signed big-endian bytes, for ints outside msgpack's 64-bit range
EXT_REMOTE = 17  # an object the sender exports: the receiver makes a RemoteReference
EXT_YOURS = 18  # an object the receiver exported, coming home
EXT_CACHED = 19  # a Cacheable of the sender the receiver already holds a RemoteCache for
EXT_YOUR_CACHEABLE = 20  # a RemoteCache the sender holds, coming home to its Cacheable
EXT_SHARED = 21  # GRAPH mode: the n-th container of this message again
EXT_DATETIME = 22  # calendar and clock fields, then the UTC offset when aware
EXT_DATE = 23
EXT_TIME = 24  # clock fields, then the UTC offset when aware
EXT_TIMEDELTA = 25
EXT_DECIMAL = 26  # the ASCII text str() gives, which Decimal() reads back exactly

#: The longest Decimal text either side accepts: enough for any precision
#: people compute with, and a bound on what a peer can make us parse.
MAX_DECIMAL_TEXT = 4096
#: At most this many distinct values of one message may share a hash. Ints, Decimals
#: and tuples of them hash predictably (an int is ``n mod (2**61 - 1)``), so a peer
#: could fill a dict or set with keys that all collide and make building it take
#: quadratic time; with this bound it stays linear.
MAX_SAME_HASH = 32

_ID = struct.Struct(">Q")
_DATE = struct.Struct(">HBB")  # year, month, day
_TIME = struct.Struct(">BBBIB")  # hour, minute, second, microsecond, fold
_DATETIME = struct.Struct(">HBBBBBIB")  # the date's fields, then the time's
_OFFSET = struct.Struct(">q")  # microseconds east of UTC, appended for an aware value
_TIMEDELTA = struct.Struct(">iII")  # days, seconds, microseconds as timedelta normalizes them
#: The types msgpack packs as they are (ints beyond 64 bits go as an ext).
ATOMS = frozenset({type(None), bool, int, float, str, bytes})
_PLAIN_CONTAINERS = frozenset({list, dict, tuple, set, frozenset})
_MSGPACK_INT = (-(2**63), 2**64 - 1)


class _Tag:
    """Decoded form of an empty tag ext; one instance per code."""

    __slots__ = ("code",)

    def __init__(self, code: int):
        self.code = code

    def __repr__(self) -> str:
        return f"<tag {self.code}>"


_TAGS = {code: _Tag(code) for code in range(1, 10)}
_TAG_EXT = {code: ExtType(code, b"") for code in _TAGS}
_TUPLE, _SET, _FROZENSET = _TAG_EXT[TAG_TUPLE], _TAG_EXT[TAG_SET], _TAG_EXT[TAG_FROZENSET]
_LIST, _TUPLES_FIRST = _TAG_EXT[TAG_LIST], _TAG_EXT[TAG_TUPLES_FIRST]
#: How every tuples-first payload starts: an array of two, then TUPLES_FIRST (an
#: empty ext 9). The value follows.
TUPLES_FIRST_PREFIX = b"\x92\xc7\x00\x09"
#: Containers deeper than this send lists-first (the tuples-first copy recurses).
MAX_TUPLES_FIRST_DEPTH = 100
_PLAIN_BUILDERS = {TAG_TUPLE: tuple, TAG_SET: set, TAG_FROZENSET: frozenset}
#: ``ExtType`` without its Python-level argument checks, for the exts we make
#: (always an int code and bytes): ``_ext((code, data))``.
_ext = partial(tuple.__new__, ExtType)


def _bigint(value: int) -> ExtType:
    return _ext((EXT_BIGINT, value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)))


def _offset(value: datetime | time) -> bytes:
    """Nothing for a naive value; the UTC offset in microseconds for an aware one."""
    if value.tzinfo is None:
        return b""
    offset = value.utcoffset()
    if offset is None:
        # Python calls such a value naive, but sending it so would silently drop its zone.
        raise SerializationError(
            f"cannot send a {type(value).__qualname__} whose tzinfo gives no UTC offset "
            f"(a zoneinfo zone needs a date to give one): {value!r:.60}"
        )
    return _OFFSET.pack((offset.days * 86400 + offset.seconds) * 1_000_000 + offset.microseconds)


def _pack_datetime(value: datetime) -> ExtType:
    day, clock = (value.year, value.month, value.day), (value.hour, value.minute, value.second)
    fields = _DATETIME.pack(*day, *clock, value.microsecond, value.fold)
    return _ext((EXT_DATETIME, fields + _offset(value)))


def _pack_date(value: date) -> ExtType:
    return _ext((EXT_DATE, _DATE.pack(value.year, value.month, value.day)))


def _pack_time(value: time) -> ExtType:
    fields = _TIME.pack(value.hour, value.minute, value.second, value.microsecond, value.fold)
    return _ext((EXT_TIME, fields + _offset(value)))


def _pack_timedelta(value: timedelta) -> ExtType:
    return _ext((EXT_TIMEDELTA, _TIMEDELTA.pack(value.days, value.seconds, value.microseconds)))


def _pack_decimal(value: Decimal) -> ExtType:
    text = str(value)
    if len(text) > MAX_DECIMAL_TEXT:
        raise SerializationError(
            f"cannot send a Decimal of {len(text)} characters (at most {MAX_DECIMAL_TEXT}): {text:.60}"
        )
    return _ext((EXT_DECIMAL, text.encode("ascii")))


def _fields(data: bytes, layout: struct.Struct) -> tuple:
    if len(data) != layout.size:
        raise ValueError(f"expected {layout.size} bytes, got {len(data)}")
    return layout.unpack(data)


def _split_offset(data: bytes, layout: struct.Struct) -> tuple[tuple, timezone | None]:
    """The fixed fields, and the fixed-offset zone that follows them in an aware value."""
    if len(data) == layout.size:
        return layout.unpack(data), None
    if len(data) != layout.size + _OFFSET.size:
        aware = layout.size + _OFFSET.size
        raise ValueError(f"expected {layout.size} bytes, or {aware} when aware, got {len(data)}")
    (micros,) = _OFFSET.unpack_from(data, layout.size)
    return layout.unpack_from(data), _zone(micros)


def _zone(micros: int) -> timezone:
    """The fixed-offset zone ``micros`` east of UTC; ValueError beyond a day."""
    zone = _ZONES.get(micros)
    if zone is None:
        zone = timezone(timedelta(microseconds=micros))
        if len(_ZONES) < _MAX_ZONES:
            _ZONES[micros] = zone
    return zone


# Fixed-offset zones are immutable and few: a list of aware values shares them.
_ZONES: dict[int, timezone] = {}
_MAX_ZONES = 256


def _read_datetime(data: bytes) -> datetime:
    (year, month, day, hour, minute, second, micro, fold), zone = _split_offset(data, _DATETIME)
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=zone, fold=fold)


def _read_date(data: bytes) -> date:
    return date(*_fields(data, _DATE))


def _read_time(data: bytes) -> time:
    (hour, minute, second, micro, fold), zone = _split_offset(data, _TIME)
    return time(hour, minute, second, micro, tzinfo=zone, fold=fold)


def _read_timedelta(data: bytes) -> timedelta:
    days, seconds, micros = _fields(data, _TIMEDELTA)
    if seconds >= 86400 or micros >= 1_000_000:
        # timedelta() would quietly carry them over: a sender never writes these.
        raise ValueError(f"seconds {seconds} or microseconds {micros} out of range")
    return timedelta(days, seconds, micros)


def _read_decimal(data: bytes) -> Decimal:
    if len(data) > MAX_DECIMAL_TEXT:
        raise ValueError(f"{len(data)} characters, more than {MAX_DECIMAL_TEXT}")
    text = data.decode("ascii")
    value = Decimal(text)
    # Decimal() also reads forms str() never writes (spaces, underscores, other
    # digits), and turns garbage into NaN when the context does not trap it.
    if str(value) != text:
        raise ValueError(f"not the text str() gives for a Decimal: {text!r:.60}")
    return value


#: Exact type -> its ext (a subclass, such as pandas' Timestamp, is refused).
_VALUE_PACKERS: dict[type, Callable[[Any], ExtType]] = {
    datetime: _pack_datetime,
    date: _pack_date,
    time: _pack_time,
    timedelta: _pack_timedelta,
    Decimal: _pack_decimal,
}
_VALUE_READERS = {
    EXT_DATETIME: ("datetime", _read_datetime),
    EXT_DATE: ("date", _read_date),
    EXT_TIME: ("time", _read_time),
    EXT_TIMEDELTA: ("timedelta", _read_timedelta),
    EXT_DECIMAL: ("Decimal", _read_decimal),
}
#: What ``scan_value`` never looks into: atoms, and values without identity.
_LEAVES = ATOMS | frozenset(_VALUE_PACKERS)
# Containers the collector tracks only while they hold something it tracks.
_SOMETIMES_TRACKED = frozenset({dict, tuple})


def _is_leaf_flavor(kind: type) -> bool:
    return issubclass(kind, (Referenceable, RemoteReference)) and not issubclass(kind, CacheObserver)


def scan_value_walk(root: Any, *, by_refcount: bool = True) -> int:
    """What ``root`` is for the encoder: ``SCAN_GRAPH``, ``SCAN_TUPLE_TREE`` or ``SCAN_TREE``.

    SCAN_GRAPH when it shares an object, has a cycle, or holds
    copies/caches/unknowns; else SCAN_TUPLE_TREE when it holds more tuples than
    lists (the root included) and no reference; else SCAN_TREE.

    The Python twin of ``scan_value``, a breadth-first walk with C-level
    helpers (``gc.get_referents``, ``map``). ``by_refcount=False`` is the exact
    twin of the shortcut described at ``_referenced_elsewhere``: both always
    give the same answer.
    """
    kind = type(root)
    if kind in _LEAVES:
        return SCAN_TREE
    # The root level by hand (one object cannot repeat itself).
    if kind not in _PLAIN_CONTAINERS:
        return SCAN_TREE if _is_leaf_flavor(kind) else SCAN_GRAPH
    shape = _TreeShape(kind)
    if not gc.is_tracked(root):
        shape.count_untracked([root], 1)
        return shape.layout()
    sole_parent = _SOLE_PARENT if by_refcount else None
    seen = {id(root)}
    referents = gc.get_referents(root)
    depth = 1  # of the containers whose referents these are
    while True:
        # One pass over the level's types says most: all leaves (the last level of most
        # values), all containers, or a mix that a second pass sorts out.
        kinds = set(map(type, referents))
        shape.count(referents, kinds)
        if kinds <= _LEAVES:
            return shape.layout()
        depth += 1  # of the containers among them
        if kinds <= _PLAIN_CONTAINERS:
            level = referents
        else:
            others = kinds - _LEAVES - _PLAIN_CONTAINERS
            if others and not all(map(_is_leaf_flavor, others)):
                return SCAN_GRAPH
            shape.flavors = shape.flavors or bool(others)
            if others or not kinds.isdisjoint(_SOMETIMES_TRACKED):
                level = list(compress(referents, map(_PLAIN_CONTAINERS.__contains__, map(type, referents))))
            else:  # the containers are lists and sets, which the collector always tracks
                level = list(filter(gc.is_tracked, referents))
        if level:
            shape.deepest = max(shape.deepest, depth)
        remembered = level if sole_parent is None else _referenced_elsewhere(level, sole_parent)
        if remembered:
            before = len(seen)
            seen.update(map(id, remembered))
            if len(seen) - before != len(remembered):
                return SCAN_GRAPH
        # Untracked dicts and tuples hold only atoms: nothing further down to
        # remember, but their tuples count, whatever the collector untracked.
        tracked = level if kinds.isdisjoint(_SOMETIMES_TRACKED) else list(filter(gc.is_tracked, level))
        if len(tracked) != len(level):
            untracked = [obj for obj in filterfalse(gc.is_tracked, level) if type(obj) in _SOMETIMES_TRACKED]
            shape.count_untracked(untracked, depth)
        if not tracked:
            return shape.layout()
        referents = gc.get_referents(*tracked)


class _TreeShape:
    """What ``scan_value_walk`` counts on its way: lists, tuples, references, depth."""

    __slots__ = ("deepest", "flavors", "list_levels", "lists", "tuples")

    def __init__(self, root_kind: type):
        self.lists = int(root_kind is list)
        self.tuples = int(root_kind is tuple)
        self.flavors = False
        self.deepest = 1  # the deepest container met (the root's depth is 1)
        # The levels that hold lists: counted only if tuples turn up (most values
        # hold none), as counting looks at every item again.
        self.list_levels: list[list] = []

    def count(self, level: list, kinds: set[type]) -> None:
        """Count the tuples among ``level``'s objects (of types ``kinds``), and note its lists."""
        if tuple in kinds:
            self.tuples += list(map(type, level)).count(tuple)
        if list in kinds:
            self.list_levels.append(level)

    def count_untracked(self, level: list, depth: int) -> None:
        """Count the tuples inside untracked tuples and dicts (which hold nothing else) at ``depth``."""
        while level:
            self.deepest = max(self.deepest, depth)
            referents = gc.get_referents(*level)
            self.tuples += list(map(type, referents)).count(tuple)
            level = [obj for obj in referents if type(obj) in _SOMETIMES_TRACKED]
            depth += 1

    def layout(self) -> int:
        # msgpack packs a reference's subclass of a builtin as that builtin once tuples
        # pack as they are: a value holding references stays lists-first.
        if not self.tuples or self.flavors or self.deepest > MAX_TUPLES_FIRST_DEPTH:
            return SCAN_TREE
        lists = self.lists + sum(list(map(type, level)).count(list) for level in self.list_levels)
        return SCAN_TUPLE_TREE if self.tuples > lists else SCAN_TREE


def _referenced_elsewhere(level: list, sole_parent: int) -> list:
    """The objects of ``level`` that something besides one parent's one slot refers to.

    The others need no id remembered: an object nothing else refers to is met
    once in a walk, and that parent's one slot cannot be met again unless the
    parent is (then it was remembered, or it is in ``level`` twice, and so is
    this object, whose count shows both). Values built for a message, and
    values just decoded, are mostly such objects, so the id set stays small.
    ``sole_parent`` is the count such an object shows here (see _sole_parent_count).
    """
    counts = list(map(getrefcount, level))
    if max(counts, default=0) <= sole_parent:  # the usual answer, in one more pass
        return []
    return list(compress(level, map(lt, repeat(sole_parent), counts)))


def _sole_parent_count() -> int | None:
    """What _referenced_elsewhere sees for an object only its parent holds, or None.

    None (use exact ids) where reference counts say nothing: an interpreter
    without them, or one that does not count every reference.
    """
    if not hasattr(sys, "getrefcount") or not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None
    parent: list[list] = [[]]
    level = gc.get_referents(parent)
    for count in range(1, 16):
        if not _referenced_elsewhere(level, count):
            break
    else:
        return None
    shared = [level[0], []]  # the first also held by ``level``: it must be told apart
    if _referenced_elsewhere(gc.get_referents(shared), count) != level:
        return None
    return count


_SOLE_PARENT = _sole_parent_count()


def tree_depth_walk(root: Any, max_depth: int, *, exact: bool = False) -> bool:
    """True when a decoded PLAIN tree nests deeper than ``max_depth`` containers.

    The Python twin of ``tree_depth_exceeds``.

    Within the limit it looks at the types of the containers' referents and goes
    down through the containers among them, tracked by the collector or not (a
    dict it does not track may still hold tuples); ``exact=True`` is its slow
    twin, which keeps every level whole.
    """
    if exact:
        return _tree_depth_exceeds_exactly(root, max_depth)
    if type(root) not in _PLAIN_CONTAINERS:
        return False
    if max_depth < 1:
        return True
    level = [root]
    depth = 1  # of the containers in ``level``
    while level:
        referents = gc.get_referents(*level)
        if depth >= max_depth:  # any container one level down is one too many
            return not _PLAIN_CONTAINERS.isdisjoint(map(type, referents))
        # Only containers nest: a RemoteReference's referents lead into the broker
        # and the rest of the heap, which must never be walked.
        level = list(compress(referents, map(_PLAIN_CONTAINERS.__contains__, map(type, referents))))
        depth += 1
    return False


def _tree_depth_exceeds_exactly(root: Any, max_depth: int) -> bool:
    level = [root] if type(root) in _PLAIN_CONTAINERS else []
    depth = 1
    while level:
        if depth > max_depth:
            return True
        referents = gc.get_referents(*level)
        level = list(compress(referents, map(_PLAIN_CONTAINERS.__contains__, map(type, referents))))
        depth += 1
    return False


def tag_lists_walk(root: Any, list_tag: Any, max_depth: int) -> Any:
    """A copy of the tree ``root`` with each list made a tuple ``(list_tag, *items)``.

    The Python twin of ``tag_lists``: what a tuples-first payload packs, whose
    arrays are tuples unless tagged. Parts holding no list are shared, not
    copied. ValueError when containers nest deeper than ``max_depth``.
    """
    kind = type(root)
    if (kind is not list and kind is not tuple and kind is not dict) or not gc.is_tracked(root):
        return root  # an atom or leaf, a set (whose members hold no list), or atoms only
    if max_depth == 0:
        raise ValueError("too deep for the tuples-first layout")
    depth = max_depth - 1
    if kind is dict:
        copies = {key: tag_lists_walk(value, list_tag, depth) for key, value in root.items()}
        changed = {key: copied for key, copied in copies.items() if copied is not root[key]}
        return {**root, **changed} if changed else root
    items = [tag_lists_walk(item, list_tag, depth) for item in root]
    if kind is list:
        return (list_tag, *items)
    return tuple(items) if any(map(is_not, items, root)) else root


#: scan_value(root): the scan ``Encoder.encode`` runs, in C when it was built.
scan_value: Callable[[Any], int]
#: tag_lists(root, list_tag, max_depth): the tuples-first copy, in C when it was built.
tag_lists: Callable[[Any, Any, int], Any]
#: tree_depth_exceeds(root, max_depth): the receiver's depth check, in C when it was built.
tree_depth_exceeds: Callable[[Any, int], bool]
if _speedups is None:
    scan_value, tag_lists, tree_depth_exceeds = scan_value_walk, tag_lists_walk, tree_depth_walk
else:
    scan_value = partial(_speedups.scan_value, _LEAVES, _is_leaf_flavor)
    tag_lists, tree_depth_exceeds = _speedups.tag_lists, _speedups.tree_depth_exceeds


def needs_graph(root: Any) -> bool:
    """True when ``root`` shares an object, has a cycle, or holds copies/caches/unknowns."""
    return scan_value(root) == SCAN_GRAPH


_Copied = TypeVar("_Copied")


class Tables(Protocol):
    """What the codec needs from one connection's id tables (``tables.ReferenceTables``).

    The encoder calls the ``send_*`` methods and ``export`` for what is not
    sent by value; the decoder calls the ``receive_*`` methods. Each counts
    one send or arrival in a journal the broker commits or rolls back.
    """

    registry: CopyRegistry

    def export(self, obj: Referenceable, perspective: Any) -> int: ...
    def send_home(self, ref: RemoteReference) -> ExtType: ...
    def send_cacheable(self, cacheable: Any, perspective: Any) -> tuple[int, Any]: ...
    def send_cache_home(self, cache: RemoteCache) -> ExtType: ...
    def receive_reference(self, remote_id: int) -> RemoteReference: ...
    def receive_home(self, export_id: int) -> Any: ...
    def receive_cache(self, cache_id: int, cls: type[RemoteCache]) -> Any: ...
    def receive_cached(self, cache_id: int) -> Any: ...
    def receive_home_cacheable(self, cache_id: int) -> Any: ...


class Encoder:
    """Turns values into payload bytes for one broker.

    ``tables`` (the connection's ``ReferenceTables``) assigns export and cache
    ids and journals them, so a failed encode leaves no trace once the broker
    rolls the message back.
    """

    def __init__(self, tables: Tables, max_depth: int, *, speedups: bool = True):
        """``speedups=False`` runs the Python twins even where the C ones were built."""
        self._tables = tables
        self._max_depth = max_depth
        self._perspective: Any = None
        default: Callable[[Any], Any] = self._default
        self._scan: Callable[[Any], int] = scan_value_walk
        self._tag_lists: Callable[[Any, Any, int], Any] = tag_lists_walk
        if speedups and _speedups is not None:
            default = _speedups.PlainDefault(_TUPLE, ExtType, EXT_DATETIME, self._default)
            self._scan, self._tag_lists = scan_value, tag_lists
        self._packer = msgpack.Packer(default=default, strict_types=True, use_bin_type=True)
        # Tuples-first: msgpack packs tuples (and lists, which tag_lists has made
        # tagged tuples) as they are; sets, big ints and the rest still go to default.
        self._tuples_packer = msgpack.Packer(default=default, strict_types=False, use_bin_type=True)
        self._raw_packer = msgpack.Packer(strict_types=False, use_bin_type=True)
        #: Pack a value known to be a PLAIN tree of builtins and atoms, touching
        #: no table (the broker's shortcut for atoms and atoms-only calls).
        #: Raises ValueError for what ``encode`` would refuse.
        self.pack_tree = self._packer.pack

    def encode(self, value: Any, perspective: Any) -> tuple[int, bytes]:
        """Return (mode, payload) for ``value`` as seen by ``perspective``."""
        self._perspective = perspective
        try:
            scanned = self._scan(value)
            if scanned == SCAN_GRAPH:
                tree = _GraphWriter(self._tables, perspective, self._max_depth).write(value, 0)
                return GRAPH, self._raw_packer.pack(tree)
            if scanned == SCAN_TUPLE_TREE:
                try:
                    tagged = self._tag_lists(value, _LIST, MAX_TUPLES_FIRST_DEPTH)
                    return PLAIN, self._tuples_packer.pack((_TUPLES_FIRST, tagged))
                except ValueError:
                    pass  # too deep, or a bad str: the lists-first layout says which
            try:
                return PLAIN, self._packer.pack(value)
            except UnicodeEncodeError as exc:
                raise SerializationError(f"cannot send a str that is not valid Unicode: {exc}") from None
            except ValueError as exc:
                raise SerializationError(f"value nests too deeply to send: {exc}") from None
        finally:
            self._perspective = None

    def _default(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is tuple:
            return [_TUPLE, *obj]
        if kind is int:
            return _bigint(obj)
        if kind is set:
            return [_SET, *obj]
        if kind is frozenset:
            return [_FROZENSET, *obj]
        pack_value = _VALUE_PACKERS.get(kind)
        if pack_value is not None:
            return pack_value(obj)
        if isinstance(obj, Referenceable):
            return _ext((EXT_REMOTE, _ID.pack(self._tables.export(obj, self._perspective))))
        if isinstance(obj, RemoteReference):
            return self._tables.send_home(obj)
        raise _refused(obj)


def _refused(obj: Any) -> InsecureJelly:
    """The error for an object no rule sends: PB's InsecureJelly, raised before anything leaves."""
    kind = type(obj)
    return InsecureJelly(
        f"cannot send a {kind.__module__}.{kind.__qualname__}: {obj!r:.60} "
        "(send values, or make it a pbnb.Copyable or Referenceable)"
    )


def _hashable(written: Any) -> Any:
    """A written dict key as something a dict accepts: tagged arrays become tuples."""
    kind = type(written)
    if kind is list:
        return tuple(map(_hashable, written))
    if kind is dict:
        raise SerializationError("a dict key whose state is a dict cannot be sent")
    return written


class _GraphWriter:
    """One GRAPH-mode message: numbers containers so repeats become SHARED refs."""

    def __init__(self, tables: Tables, perspective: Any, max_depth: int):
        self._tables = tables
        self._perspective = perspective
        self._max_depth = max_depth
        self._index: dict[int, int] = {}
        # Objects made during the walk (copy states) must outlive it, or their
        # id() could be reused by a later object and wrongly match.
        self._alive: list[Any] = []

    def _number(self, obj: Any) -> None:
        # Count numbered objects only: _alive also holds copy states, which the
        # reader does not number.
        self._index[id(obj)] = len(self._index)
        self._alive.append(obj)

    def write(self, obj: Any, depth: int) -> Any:
        kind = type(obj)
        if kind in ATOMS:
            if kind is int and not (_MSGPACK_INT[0] <= obj <= _MSGPACK_INT[1]):
                return _bigint(obj)
            return obj
        pack_value = _VALUE_PACKERS.get(kind)
        if pack_value is not None:  # a leaf too: never numbered, no depth
            return pack_value(obj)
        seen = self._index.get(id(obj))
        if seen is not None:
            return _ext((EXT_SHARED, _ID.pack(seen)))
        if depth >= self._max_depth:
            raise SerializationError(f"value nests deeper than {self._max_depth} containers")
        depth += 1
        write = self.write
        if kind is list:
            self._number(obj)
            return [write(item, depth) for item in obj]
        if kind is dict:
            self._number(obj)
            return {_hashable(write(k, depth)): write(v, depth) for k, v in obj.items()}
        if kind is set:
            self._number(obj)
            return [_SET, *(write(item, depth) for item in obj)]
        if kind is tuple or kind is frozenset:
            items = [write(item, depth) for item in obj]
            seen = self._index.get(id(obj))
            if seen is not None:  # defined by a cycle inside its own items
                code = TAG_TUPLE_SEEN if kind is tuple else TAG_FROZENSET_SEEN
                return [_TAG_EXT[code], seen, *items]
            self._number(obj)
            return [_TUPLE if kind is tuple else _FROZENSET, *items]
        if isinstance(obj, Referenceable):
            return _ext((EXT_REMOTE, _ID.pack(self._tables.export(obj, self._perspective))))
        if isinstance(obj, RemoteReference):
            return self._tables.send_home(obj)
        if isinstance(obj, RemoteCache):
            return self._tables.send_cache_home(obj)
        if isinstance(obj, Cacheable):
            cache_id, state = self._tables.send_cacheable(obj, self._perspective)
            if state is None:
                return _ext((EXT_CACHED, _ID.pack(cache_id)))
            self._alive.append(state)
            type_name = obj.getTypeToCopyFor(self._perspective)
            return [_TAG_EXT[TAG_CACHE], cache_id, type_name, write(state, depth)]
        if isinstance(obj, Copyable):
            self._number(obj)
            type_name = obj.getTypeToCopyFor(self._perspective)
            state = obj.getStateToCopyFor(self._perspective)
            self._alive.append(state)
            return [_TAG_EXT[TAG_COPY], type_name, write(state, depth)]
        allowed_name = self._tables.registry.instance_name(kind)
        if allowed_name is not None:  # a plain class this side allowed (allowInstancesOf)
            self._number(obj)
            state = dict(vars(obj))
            self._alive.append(state)
            return [_TAG_EXT[TAG_COPY], allowed_name, write(state, depth)]
        raise _refused(obj)


class _HashGuard:
    """Counts the distinct values per hash in one message; refuses a flood of collisions.

    Only what the decoder builds is counted (big ints, Decimals, tuples, frozensets):
    atoms cannot be made to collide much (at most a few dozen ints or floats share a
    hash), and strings and bytes hash with a per-process salt.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        # hash -> the first value with it, or a list once several distinct ones share it.
        # Keyed by hash values, which never collide with each other.
        self._seen: dict[int, Any] = {}

    def add(self, value: Any) -> None:
        try:
            key = hash(value)
        except TypeError:  # unhashable: cannot be a key or a set member
            return
        seen = self._seen
        first = seen.get(key, _UNSEEN)
        if first is _UNSEEN:
            seen[key] = value
        elif type(first) is _Same:
            if value not in first:  # equal values are one key, however often they occur
                if len(first) >= MAX_SAME_HASH:
                    raise LimitExceeded(
                        f"more than {MAX_SAME_HASH} distinct keys with one hash in a message (hash flooding)"
                    )
                first.append(value)
        elif first is not value and first != value:
            seen[key] = _Same((first, value))

    def add_all(self, values: list) -> None:
        """``add`` each of ``values``: in one go when their hashes are all new to the message."""
        try:
            hashes = list(map(hash, values))
        except TypeError:  # an unhashable one: ``add`` passes it over
            hashes = []
        seen = self._seen
        if len(hashes) == len(values) == len(set(hashes)) and seen.keys().isdisjoint(hashes):
            seen.update(zip(hashes, values, strict=True))
            return
        for value in values:
            self.add(value)


class _Same(list):
    """Distinct values of one message that share a hash."""

    __slots__ = ()


_UNSEEN = object()
_SALTED = frozenset({str, bytes})  # types whose hash takes a secret per-process salt


def _may_collide(built: tuple) -> bool:
    """Whether a peer could make many distinct tuples like this one share a hash.

    Only when more than one item is not a str or bytes: strings hash with a
    secret salt, so with at most one item of another type, two tuples of one
    shape share a hash only when that item's hashes are equal, which a single
    value (an atom, or a value the guard counts) allows a few dozen times at most.
    """
    chosen = 0
    for item in built:
        if type(item) not in _SALTED:
            chosen += 1
            if chosen > 1:
                return True
    return False


_IDLE_GUARD = _HashGuard()  # what a Decoder holds between decodes; no hook runs then
# Keys a PLAIN message may build before they are guarded: so many colliding keys
# cost a dict at most a few thousand comparisons.
_FREE_CANDIDATES = 64


class Decoder:
    """Turns payload bytes back into values for one broker."""

    def __init__(
        self,
        tables: Tables,
        registry: CopyRegistry,
        max_depth: int,
        max_len: int,
        max_string: int = 2**31 - 1,
        *,
        speedups: bool = True,
    ):
        """``speedups=False`` runs the Python twins even where the C ones were built."""
        self._tables = tables
        self._registry = registry
        self._max_depth = max_depth
        self._limits = {
            "max_str_len": max_string,
            "max_bin_len": max_string,
            "max_array_len": max_len,
            "max_map_len": max_len,
            "max_ext_len": 2**31 - 1,  # big ints; the frame limit bounds them
        }
        # Built once: merging keyword dicts on every decode costs as much as
        # unpacking a small call.
        common = {**self._limits, "strict_map_key": False}
        self._guard = _IDLE_GUARD
        self._candidates: list[Any] = []
        hooks: Any = self  # whose ext_hook and list_hook a PLAIN payload is read with
        self._depth_exceeds: Callable[[Any, int], bool] = tree_depth_walk
        #: A fresh hash-flooding guard, for one message.
        self.new_guard: Callable[[], Any] = _HashGuard
        if speedups and _speedups is not None:
            self.new_guard = partial(_speedups.HashGuard, MAX_SAME_HASH, LimitExceeded)
            # Tags, tuples and datetimes in C, the rest handed to the methods below.
            hooks = _speedups.PlainHooks(
                _TAGS,
                _TAGS[TAG_TUPLE],
                _TAGS[TAG_LIST],
                self._candidates,
                _FREE_CANDIDATES,
                self._guard_candidates,
                self.ext_hook,
                self.list_hook,
                EXT_DATETIME,
                _zone,
            )
            self._depth_exceeds = tree_depth_exceeds
        self._plain_options = {**common, "ext_hook": hooks.ext_hook, "list_hook": hooks.list_hook}
        self._tuples_first_options = {
            **common,
            "use_list": False,
            "ext_hook": hooks.ext_hook,
            "list_hook": hooks.tuple_hook,
        }
        # Maps arrive as lists of pairs: msgpack must not build dicts of raw keys (tuples of
        # colliding ints would flood them); the reader builds each from guarded values.
        self._graph_options = {**common, "use_list": False, "object_pairs_hook": _RawMap}

    def decode(self, mode: int, payload: bytes | bytearray | memoryview) -> Any:
        """Decode a payload; raise ProtocolError, LimitExceeded or InsecureJelly.

        The full path: every ext resolved, every key guarded, every limit
        checked. ``Broker.decode_payload`` holds its fast twin, for PLAIN
        payloads without ext.
        """
        if mode == PLAIN:
            # The hooks collect the keys they build, and guard them once there are more
            # than a few: up to that many, even keys that all collide cost little.
            try:
                if payload[:4] == TUPLES_FIRST_PREFIX:
                    value = self._unpack(memoryview(payload)[4:], self._tuples_first_options)
                else:
                    value = self._unpack(payload, self._plain_options)
            finally:
                self._guard = _IDLE_GUARD  # both hold the message's values: let them go with it
                self._candidates.clear()
            if len(payload) > self._max_depth and self._depth_exceeds(value, self._max_depth):
                raise LimitExceeded(f"value nests deeper than {self._max_depth} containers")
            return value
        if mode == GRAPH:
            raw = self._unpack(payload, self._graph_options)
            return _GraphReader(self, self._tables).read(raw, 0)
        raise ProtocolError(f"unknown payload mode {mode!r}")

    def _unpack(self, payload: bytes | bytearray | memoryview, options: dict[str, Any]) -> Any:
        try:
            return msgpack.unpackb(payload, **options)
        except (InsecureJelly, LimitExceeded, ProtocolError):
            raise
        except msgpack.StackError:  # msgpack's own bound, about 1,000 levels, comes before ours
            raise LimitExceeded(f"value nests deeper than {self._max_depth} containers") from None
        except ValueError as exc:
            if "exceeds max" in str(exc):
                raise LimitExceeded(str(exc)) from None
            raise ProtocolError(f"malformed payload: {exc}") from None
        except Exception as exc:
            raise ProtocolError(f"malformed payload: {type(exc).__name__}: {exc}") from None

    def ext_hook(self, code: int, data: bytes) -> Any:
        """A PLAIN payload's ext: a tag, or the value the ext stands for."""
        tag = _TAGS.get(code)
        if tag is not None:
            return tag
        value = self.resolve_ext(code, data)
        if code == EXT_BIGINT or code == EXT_DECIMAL:
            self._count_candidate(value)
        return value

    def _guard_candidates(self) -> None:
        # Past a few, every key a PLAIN message builds goes through the guard.
        if self._guard is _IDLE_GUARD:
            self._guard = self.new_guard()
        self._guard.add_all(self._candidates)
        self._candidates.clear()

    def resolve_ext(self, code: int, data: bytes) -> Any:
        """Resolve the ext types that mean the same in both modes."""
        if code == EXT_BIGINT:
            return int.from_bytes(data, "big", signed=True)
        if code == EXT_REMOTE:
            return self._tables.receive_reference(_unpack_id(data))
        if code == EXT_YOURS:
            return self._tables.receive_home(_unpack_id(data))
        if code == EXT_CACHED:
            return self._tables.receive_cached(_unpack_id(data))
        if code == EXT_YOUR_CACHEABLE:
            return self._tables.receive_home_cacheable(_unpack_id(data))
        reader = _VALUE_READERS.get(code)
        if reader is not None:
            name, read = reader
            try:
                return read(data)
            except (ValueError, ArithmeticError) as exc:  # bad length, out-of-range fields, bad text
                raise ProtocolError(f"malformed {name} (ext {code}): {exc}") from None
        raise ProtocolError(f"unexpected ext type {code} in this payload")

    def list_hook(self, items: list) -> Any:
        """A lists-first PLAIN payload's array: the list itself, or what its tag says to build."""
        if items and type(items[0]) is _Tag:
            builder = _PLAIN_BUILDERS.get(items[0].code)
            if builder is None:
                raise ProtocolError(f"tag {items[0].code} is not valid in this PLAIN payload")
            try:
                built = builder(items[1:])
            except TypeError as exc:
                raise ProtocolError(f"bad set member: {exc}") from None
            # A tuple or frozenset may become a key or a member.
            if builder is frozenset or (builder is tuple and _may_collide(built)):
                self._count_candidate(built)
            return built
        return items

    def tuple_hook(self, items: tuple) -> Any:
        """A tuples-first PLAIN payload's array: the tuple itself, a tagged list, or as list_hook."""
        if items and type(items[0]) is _Tag:
            if items[0] is _TAGS[TAG_LIST]:
                return list(items[1:])
            return self.list_hook(list(items))
        if _may_collide(items):
            self._count_candidate(items)
        return items

    def _count_candidate(self, built: Any) -> None:
        candidates = self._candidates
        candidates.append(built)
        if len(candidates) > _FREE_CANDIDATES:
            self._guard_candidates()

    def copy_class(self, type_name: Any, base: type[_Copied]) -> type[_Copied]:
        if not isinstance(type_name, str):
            raise ProtocolError(f"copy type name must be a string, got {type_name!r:.60}")
        cls = self._registry.lookup(type_name)
        if cls is not None and base is RemoteCopy and self._registry.accepts_instances(cls):
            return cls
        if cls is None or not issubclass(cls, base):
            raise InsecureJelly(
                f"refused a copy of {type_name!r}: the receiving side has no {base.__name__} class "
                "registered for it (see setUnjellyableForClass)"
            )
        return cls


class _RawMap(list):
    """A GRAPH payload's map, as msgpack read it: a list of (key, value) pairs."""

    __slots__ = ()


def refuse_ext(code: int, data: bytes) -> Any:
    """An ``ext_hook`` for a hook-free decode that only payloads without ext pass."""
    raise ProtocolError("ext type in a payload decoded without hooks")


def _unpack_id(data: bytes) -> int:
    if len(data) != 8:
        raise ProtocolError(f"object id must be 8 bytes, got {len(data)}")
    return _ID.unpack(data)[0]


class _GraphReader:
    """Reads one GRAPH-mode message, numbering containers as the writer did."""

    def __init__(self, decoder: Decoder, tables: Tables):
        self._decoder = decoder
        self._tables = tables
        self._objects: list[Any] = []
        self._max_depth = decoder._max_depth
        self._guard = decoder.new_guard()

    def read(self, raw: Any, depth: int) -> Any:
        kind = type(raw)
        if kind in ATOMS:
            return raw
        if depth >= self._max_depth:
            raise LimitExceeded(f"value nests deeper than {self._max_depth} containers")
        depth += 1
        read = self.read
        if kind is _RawMap:
            result: dict = {}
            self._objects.append(result)
            try:
                for raw_key, value in raw:
                    key = read(raw_key, depth)  # before the value, in the writer's order
                    result[key] = read(value, depth)
            except InsecureJelly:  # a TypeError too, but no fault of the key's
                raise
            except TypeError as exc:
                raise ProtocolError(f"unhashable dict key: {exc}") from None
            return result
        if kind is ExtType:
            if raw.code == EXT_SHARED:
                index = _unpack_id(raw.data)
                if index >= len(self._objects):
                    raise ProtocolError(f"shared reference {index} points forward")
                return self._objects[index]
            value = self._decoder.resolve_ext(raw.code, raw.data)
            if raw.code == EXT_BIGINT or raw.code == EXT_DECIMAL:
                self._guard.add(value)
            return value
        if kind is not tuple:
            raise ProtocolError(f"unexpected {kind.__name__} in payload")
        head = raw[0] if raw else None
        if head is None or type(head) is not ExtType or head.code not in _TAGS:
            result_list: list = []
            self._objects.append(result_list)
            result_list.extend(read(item, depth) for item in raw)
            return result_list
        return self._read_tagged(head.code, raw, depth)

    def _read_tagged(self, code: int, raw: tuple, depth: int) -> Any:
        read = self.read
        try:
            if code == TAG_SET:
                result: set = set()
                self._objects.append(result)
                result.update(read(item, depth) for item in raw[1:])
                return result
            if code in (TAG_TUPLE, TAG_FROZENSET):
                built = (tuple if code == TAG_TUPLE else frozenset)(read(item, depth) for item in raw[1:])
                self._objects.append(built)
                self._guard.add(built)  # it may become a key or a member
                return built
            if code in (TAG_TUPLE_SEEN, TAG_FROZENSET_SEEN):
                index = raw[1]
                for item in raw[2:]:
                    read(item, depth)
                if not isinstance(index, int) or not 0 <= index < len(self._objects):
                    raise ProtocolError(f"bad seen-index {index!r}")
                return self._objects[index]
        except InsecureJelly:  # a TypeError too, but no fault of the set's
            raise
        except TypeError as exc:
            raise ProtocolError(f"bad set member: {exc}") from None
        if code == TAG_COPY and len(raw) == 3:
            cls = self._decoder.copy_class(raw[1], RemoteCopy)
            obj = cls.__new__(cls)
            self._objects.append(obj)
            state = read(raw[2], depth)
            if isinstance(obj, RemoteCopy):
                obj.setCopyableState(state)
            elif type(state) is dict and all(type(key) is str for key in state):  # allowInstancesOf
                obj.__dict__.update(state)
            else:
                raise ProtocolError(f"the state of a {raw[1]} instance must be a dict with str keys")
            return obj
        if code == TAG_CACHE and len(raw) == 4:
            cache_class = self._decoder.copy_class(raw[2], RemoteCache)
            if not isinstance(raw[1], int):
                raise ProtocolError(f"bad cache id {raw[1]!r}")
            obj = self._tables.receive_cache(raw[1], cache_class)
            obj.setCopyableState(read(raw[3], depth))
            return obj
        raise ProtocolError(f"malformed tagged array (tag {code}, {len(raw)} items)")
