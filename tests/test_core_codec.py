"""The serializer alone: PLAIN vs GRAPH, exact types, identity, cycles, limits, bad input.

Behaviours 3 and 4 of pb-behaviours.md, without any connection.
"""

from __future__ import annotations

import decimal
import math
import struct
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import msgpack
import pytest

from pbnb import (
    Copyable,
    CopyRegistry,
    InsecureJelly,
    LimitExceeded,
    ProtocolError,
    RemoteCopy,
    SerializationError,
)
from pbnb.core import serialize
from pbnb.core.broker import Broker
from pbnb.core.serialize import GRAPH, PLAIN, Decoder, Encoder


class Point(Copyable):
    def __init__(self, x, y=None):
        self.x = x
        self.y = y

    def __hash__(self):
        return 1  # lets a Point live in a set or a frozenset while its state points back


class RemotePoint(RemoteCopy):
    def __init__(self):
        raise AssertionError("a RemoteCopy is built without __init__")

    def __hash__(self):
        return 1


@pytest.fixture
def registry():
    registry = CopyRegistry()
    registry.register(Point, RemotePoint)
    return registry


class Codec:
    """An encoder and decoder sharing one broker's tables, as a connection would."""

    def __init__(self, registry: CopyRegistry, max_depth: int = 200, max_len: int = 1000):
        self.tables = Broker()._tables
        self.encoder = Encoder(self.tables, max_depth)
        self.decoder = Decoder(self.tables, registry, max_depth, max_len)

    def encode(self, value):
        self.tables.begin()
        return self.encoder.encode(value, None)

    def decode(self, mode, payload: bytes):
        self.tables.begin()
        return self.decoder.decode(mode, memoryview(payload))

    def round_trip(self, value):
        mode, payload = self.encode(value)
        return mode, self.decode(mode, payload)


@pytest.fixture
def codec(registry):
    return Codec(registry)


def assert_same(sent, got):
    """Equal, and of exactly the same types all the way down."""
    assert type(got) is type(sent), f"{got!r} is a {type(got).__name__}, sent a {type(sent).__name__}"
    if isinstance(sent, Decimal):
        assert str(got) == str(sent)  # NaNs never compare equal, and sNaN refuses to compare
    elif isinstance(sent, datetime | time):
        # == compares aware values as instants: check the offset and fold themselves too.
        assert (got.utcoffset(), got.fold, got.replace(tzinfo=None)) == (
            sent.utcoffset(),
            sent.fold,
            sent.replace(tzinfo=None),
        )
        assert type(got.tzinfo) is (type(None) if sent.tzinfo is None else timezone)
    elif isinstance(sent, float) and math.isnan(sent):
        assert math.isnan(got)
    elif isinstance(sent, float):
        assert math.copysign(1, got) == math.copysign(1, sent) and got == sent
    elif isinstance(sent, list | tuple):
        assert len(got) == len(sent)
        for a, b in zip(sent, got, strict=True):
            assert_same(a, b)
    elif isinstance(sent, dict):
        assert list(got) == list(sent)
        for key_sent, key_got in zip(sent, got, strict=True):
            assert_same(key_sent, key_got)
            assert_same(sent[key_sent], got[key_got])
    else:
        assert got == sent


NEPAL = timezone(timedelta(hours=5, minutes=45))
MINUS_HALF_HOUR = timezone(-timedelta(minutes=30))
DECIMAL_TEXTS = """0 -0 0E-10 1.000 -3.14159 1E+999999 1E+999999999999999999 -1.5E-999999999999999999
    NaN -NaN NaN123 sNaN -sNaN42 Infinity -Infinity 12345678901234567890123456789012345678901234567890.5
""".split()

BIG_INTS = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 2**1000, -(2**1000) + 7]

VALUES = {
    "none": None,
    "bools": [True, False],
    "ints": [0, 1, -1, 255, -129],
    "big ints": BIG_INTS,
    "floats": [0.5, -0.0, math.inf, -math.inf, math.nan, 1e308],
    "str": "héllo \x00 wörld",
    "bytes": b"\x00\xff" * 40,
    "bool is not int": {"t": True, "one": 1, "f": 0.0},
    "tuple in list": [(1, "a"), (), ((2,),)],
    "set": {1, "two", (3, 4), frozenset({5})},
    "frozenset": frozenset({1, (2, 3)}),
    "empty containers": [(), set(), frozenset(), {}, [], "", b""],
    "dict with int keys": {1: "a", -5: "b", 2**70: "big"},
    "dict with tuple keys": {(1, 2): "a", ((1,), frozenset({2})): "b", (): "empty"},
    "dict with frozenset keys": {frozenset({1, 2}): 1, frozenset(): 0},
    "dict with odd keys": {None: 0, True: 1, 2.5: 2, b"k": 3, "s": 4},
    "nested": {"a": [{"b": ({"c": [1, 2.0, None]},)}]},
    "datetimes": [
        datetime.min,
        datetime.max,
        datetime(2024, 2, 29, 23, 59, 59, 999999),
        datetime(2024, 10, 27, 2, 30, fold=1),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=NEPAL),
        datetime.max.replace(tzinfo=MINUS_HALF_HOUR),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))),
    ],
    "dates": [date.min, date.max, date(2024, 2, 29)],
    "times": [
        time.min,
        time.max,
        time(12, 30, fold=1),
        time(23, 59, 59, 999999, tzinfo=NEPAL),
        time(0, 0, tzinfo=MINUS_HALF_HOUR),
        time(6, tzinfo=timezone(-timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))),
    ],
    "timedeltas": [
        timedelta(0),
        timedelta.min,
        timedelta.max,
        timedelta(microseconds=-1),
        timedelta(days=-3, hours=5, microseconds=999999),
        timedelta(days=999999999, seconds=86399),
    ],
    "decimals": [Decimal(text) for text in DECIMAL_TEXTS],
    "values as keys and members": {
        date(2024, 1, 1): {datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 9, tzinfo=NEPAL)},
        datetime(2024, 1, 1): frozenset({time(9), timedelta(hours=9)}),
        (Decimal("1.10"), time(9, tzinfo=MINUS_HALF_HOUR)): [Decimal("Infinity")],
        timedelta(-1): {Decimal("-0")},
    },
}


@pytest.mark.parametrize("name", VALUES)
def test_plain_values_round_trip_with_exact_types(codec, name):
    """Behaviour 3: every basic value arrives with its type, in PLAIN mode."""
    value = VALUES[name]
    mode, got = codec.round_trip(value)
    assert mode == PLAIN
    assert_same(value, got)


@pytest.mark.parametrize("name", VALUES)
def test_the_same_values_round_trip_in_graph_mode(codec, name):
    """A shared object elsewhere in the message switches to GRAPH; values keep their types."""
    shared = ["shared"]
    value = VALUES[name]
    mode, got = codec.round_trip([value, shared, shared])
    assert mode == GRAPH
    assert_same(value, got[0])
    assert got[1] is got[2]


def test_big_ints_beyond_64_bits(codec):
    """Behaviour 3: ints of any size, at and beyond msgpack's 64-bit edges."""
    for value in [*BIG_INTS, 10**400, -(10**400)]:
        _, got = codec.round_trip(value)
        assert got == value and type(got) is int


def test_dict_keys_shared_with_values_keep_identity(codec):
    key = (1, 2)
    value = [key]
    _, got = codec.round_trip({key: value, "again": value})
    (got_key,) = [k for k in got if k != "again"]
    assert got[got_key] is got["again"]
    assert got[got_key][0] is got_key


def test_trees_use_plain_mode_and_sharing_uses_graph_mode(codec, registry):
    assert codec.encode([{"a": 1}, {"a": 1}])[0] == PLAIN
    flat = {"a": 1}
    assert codec.encode([flat, flat])[0] == GRAPH
    loop: list = []
    loop.append(loop)
    assert codec.encode(loop)[0] == GRAPH
    assert codec.encode([Point(1)])[0] == GRAPH


def test_an_object_twice_arrives_as_one_object_twice(codec):
    """Behaviour 4: identity within one message, for every kind of container."""
    items = [[1], {"k": 2}, (3, [4]), {5}, frozenset({6}), (7,)]
    _, got = codec.round_trip([*items, *items])
    for i, item in enumerate(items):
        assert_same(item, got[i])
        assert got[i] is got[i + len(items)]


def test_list_and_dict_containing_themselves(codec):
    """Behaviour 4: a list or dict that contains itself arrives as such."""
    loop: list = [1]
    loop.append(loop)
    _, got = codec.round_trip(loop)
    assert got[0] == 1 and got[1] is got
    table: dict = {"n": 1}
    table["me"] = table
    _, got = codec.round_trip(table)
    assert got["me"] is got and got["n"] == 1


def test_cycle_through_a_tuple(codec):
    """Behaviour 4: the tuple is the same object wherever the cycle reaches it."""
    inner: list = []
    outer = (inner, "x")
    inner.append(outer)
    _, got = codec.round_trip([outer, inner])
    assert type(got[0]) is tuple
    assert got[0][0] is got[1]
    assert got[1][0] is got[0]


def test_cycle_through_copies(codec):
    """Behaviour 4: a copy whose state points back at itself, and two copies pointing at each other."""
    a = Point(1)
    b = Point(2, a)
    a.y = b
    a.me = a
    _, got = codec.round_trip([a, b])
    ra, rb = got
    assert type(ra) is RemotePoint and type(rb) is RemotePoint
    assert ra.y is rb and rb.y is ra and ra.me is ra
    assert (ra.x, rb.x) == (1, 2)


def test_cycle_through_a_set_and_a_frozenset(codec):
    """Behaviour 4: sets hold hashable copies whose state points back at the set."""
    member = Point("in a set")
    holder = {member}
    member.y = holder
    _, got = codec.round_trip(holder)
    (got_member,) = got
    assert type(got) is set and got_member.y is got

    member = Point("in a frozenset")
    frozen = frozenset({member})
    member.y = frozen
    _, got = codec.round_trip([frozen, member])
    assert type(got[0]) is frozenset and got[1] in got[0]
    assert got[1].y is got[0]


def test_objects_after_a_copy_keep_their_identity(codec):
    """Copy states are kept alive during the walk but are not numbered like containers."""
    x, y = [5], [6]
    _, got = codec.round_trip([Point(1), x, y, x, y])
    assert got[1] is got[3] and got[2] is got[4]
    assert got[1] == [5] and got[2] == [6]


def test_dict_keys_after_copies_in_graph_mode(codec):
    point = Point(0)
    _, got = codec.round_trip({(1, 2): point, frozenset({3}): point, 4: [point]})
    assert got[(1, 2)] is got[frozenset({3})] is got[4][0]


def test_copies_are_built_without_init(codec):
    """Behaviour 14 (codec level): RemotePoint.__init__ would raise."""
    _, got = codec.round_trip(Point(3, "y"))
    assert type(got) is RemotePoint and (got.x, got.y) == (3, "y")


def test_depth_limit_when_sending(registry):
    codec = Codec(registry, max_depth=10)
    deep: list = []
    for _ in range(20):
        deep = [deep]
    shared: list = []
    with pytest.raises(SerializationError, match="deeper than 10"):
        codec.encode([deep, shared, shared])  # GRAPH mode walks in Python
    very_deep: list = []
    for _ in range(2000):
        very_deep = [very_deep]
    with pytest.raises(SerializationError, match="nests too deeply"):
        codec.encode(very_deep)


def test_depth_limit_when_receiving(registry):
    """A payload nested deeper than the receiver's limit is refused, in both modes."""
    sender, receiver = Codec(registry), Codec(registry, max_depth=10)
    deep: list = ["bottom"]
    for _ in range(20):
        deep = [deep]
    mode, payload = sender.encode(deep)
    assert mode == PLAIN
    with pytest.raises(LimitExceeded, match="deeper than 10"):
        receiver.decode(mode, payload)
    shared: list = []
    mode, payload = sender.encode([deep, shared, shared])
    assert mode == GRAPH
    with pytest.raises(LimitExceeded, match="deeper than 10"):
        receiver.decode(mode, payload)
    # At the limit it still goes through.
    ok: list = []
    for _ in range(9):
        ok = [ok]
    assert receiver.decode(*sender.encode(ok)) == ok


@pytest.mark.parametrize("value", [list(range(101)), dict.fromkeys(range(101)), set(range(101))])
def test_length_limit_when_receiving(registry, value):
    sender, receiver = Codec(registry), Codec(registry, max_len=100)
    with pytest.raises(LimitExceeded):
        receiver.decode(*sender.encode(value))
    assert receiver.decode(*sender.encode(list(range(100)))) == list(range(100))


class Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [object(), Opaque(), len, lambda: 1, 1j, bytearray(b"x"), range(3), [1, {"k": Opaque()}]],
    ids=["object", "class", "builtin", "lambda", "complex", "bytearray", "range", "nested"],
)
def test_unsupported_types_give_serialization_error(codec, value):
    with pytest.raises(SerializationError, match="cannot send"):
        codec.encode(value)
    shared: list = []
    with pytest.raises(SerializationError, match="cannot send"):
        codec.encode([value, shared, shared])


def test_serialization_error_is_a_type_error(codec):
    with pytest.raises(TypeError):
        codec.encode(object())


def ext(code: int, data: bytes = b"") -> msgpack.ExtType:
    return msgpack.ExtType(code, data)


def pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def shared_ref(index: int) -> msgpack.ExtType:
    return ext(serialize.EXT_SHARED, index.to_bytes(8, "big"))


MALFORMED = {
    "reserved byte": (PLAIN, b"\xc1"),
    "truncated array": (PLAIN, b"\x92\x01"),
    "trailing bytes": (PLAIN, b"\x01\x02"),
    "empty payload": (PLAIN, b""),
    "unknown mode": (7, pack(1)),
    "unknown ext": (PLAIN, pack(ext(99, b"x"))),
    "short object id": (PLAIN, pack(ext(serialize.EXT_REMOTE, b"\x01"))),
    "copy tag in plain": (PLAIN, pack([ext(serialize.TAG_COPY), "x", {}])),
    "unhashable set member": (GRAPH, pack([ext(serialize.TAG_SET), [1]])),
    "unhashable plain set member": (PLAIN, pack([ext(serialize.TAG_SET), {"a": 1}])),
    "shared points forward": (GRAPH, pack([shared_ref(5)])),
    "bad seen index": (GRAPH, pack([ext(serialize.TAG_TUPLE_SEEN), 9, 1])),
    "malformed copy": (GRAPH, pack([ext(serialize.TAG_COPY), "only a name"])),
    "copy name not a string": (GRAPH, pack([ext(serialize.TAG_COPY), 5, {}])),
    "unknown export coming home": (PLAIN, pack(ext(serialize.EXT_YOURS, (42).to_bytes(8, "big")))),
    "unknown cache": (PLAIN, pack(ext(serialize.EXT_CACHED, (42).to_bytes(8, "big")))),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_payloads_give_protocol_error(codec, name):
    mode, payload = MALFORMED[name]
    with pytest.raises(ProtocolError):
        codec.decode(mode, payload)


def test_unregistered_copy_is_insecure_jelly(codec):
    """Behaviour 16 (codec level): the allow-list refuses unknown type names."""
    payload = pack([ext(serialize.TAG_COPY), "os.system", {"cmd": "rm -rf /"}])
    with pytest.raises(InsecureJelly, match=r"os\.system"):
        codec.decode(GRAPH, payload)


def test_a_plain_class_registered_by_mistake_is_refused():
    with pytest.raises(TypeError, match="RemoteCopy"):
        CopyRegistry().register(Point, dict)


def test_a_copy_with_a_dict_state_cannot_key_a_dict(codec):
    """msgpack cannot hash a map inside a map key: the sender says so instead of failing obscurely."""
    with pytest.raises(SerializationError, match="dict key"):
        codec.encode({Point(1): "value"})


@pytest.mark.parametrize("value", ["\ud800", ["ok", "\udfff"]], ids=["alone", "nested"])
def test_a_str_that_is_not_valid_unicode_is_refused_saying_so(codec, value):
    with pytest.raises(SerializationError, match="not valid Unicode"):
        codec.encode(value)


# ------------------------------------------------------------ library values

WHEN = datetime(2024, 2, 29, 13, 45, 6, 789, tzinfo=NEPAL)
LIBRARY_VALUES = [WHEN, WHEN.date(), WHEN.timetz(), timedelta(-2, 5, 6), Decimal("-1.50")]


def test_library_values_keep_a_message_plain_even_when_repeated(codec):
    """They have no identity: the same datetime object twice is no reason for GRAPH mode."""
    assert codec.encode(LIBRARY_VALUES)[0] == PLAIN
    assert codec.encode([WHEN, WHEN, {"at": WHEN}, (WHEN,), {WHEN}])[0] == PLAIN
    for value in LIBRARY_VALUES:
        assert codec.encode(value)[0] == PLAIN
        assert not serialize.needs_graph(value)


def test_library_values_take_one_fixed_size_ext_each(codec):
    """The layouts of docs/protocol.md, built by hand from the table there."""
    expected = {
        serialize.EXT_DATETIME: struct.pack(">HBBBBBIBq", 2024, 2, 29, 13, 45, 6, 789, 0, 20700 * 10**6),
        serialize.EXT_DATE: struct.pack(">HBB", 2024, 2, 29),
        serialize.EXT_TIME: struct.pack(">BBBIBq", 13, 45, 6, 789, 0, 20700 * 10**6),
        serialize.EXT_TIMEDELTA: struct.pack(">iII", -2, 5, 6),
        serialize.EXT_DECIMAL: b"-1.50",
    }
    hand_made = pack([ext(code, data) for code, data in expected.items()])
    assert codec.encode(LIBRARY_VALUES) == (PLAIN, hand_made)
    naive = struct.pack(">HBBBBBIB", 2024, 10, 27, 2, 30, 0, 0, 1)
    assert_same(datetime(2024, 10, 27, 2, 30, fold=1), codec.decode(PLAIN, pack(ext(22, naive))))


def test_a_zoneinfo_datetime_arrives_with_the_fixed_offset_it_had_then(codec):
    paris = ZoneInfo("Europe/Paris")
    summer, winter = datetime(2024, 7, 1, 12, tzinfo=paris), datetime(2024, 1, 1, 12, tzinfo=paris)
    second_half_past_two = datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=paris)  # clocks went back
    _, got = codec.round_trip([summer, winter, second_half_past_two])
    assert [value.tzinfo for value in got] == [timezone(timedelta(hours=h)) for h in (2, 1, 1)]
    # The same instants (compared as timestamps: PEP 495 makes an ambiguous time unequal across zones).
    assert [value.timestamp() for value in got] == [summer.timestamp(), winter.timestamp(), 1729992600.0]
    assert got[2].fold == 1


def test_a_time_whose_zone_has_no_offset_without_a_date_is_refused(codec):
    """Sending it naive would silently drop its zone."""
    with pytest.raises(SerializationError, match="no UTC offset"):
        codec.encode(time(9, tzinfo=ZoneInfo("Europe/Paris")))


class Stamp(datetime):
    """Stands in for pandas' Timestamp: a datetime subclass with more to it."""


class Day(date):
    pass


class Clock(time):
    pass


class Span(timedelta):
    pass


class Money(Decimal):
    pass


@pytest.mark.parametrize(
    "value",
    [Stamp(2024, 1, 1), Day(2024, 1, 1), Clock(9), Span(1), Money("1.5")],
    ids=["datetime", "date", "time", "timedelta", "Decimal"],
)
def test_subclasses_of_library_values_are_refused_not_converted(codec, value):
    for message in (value, [value], {"k": (value,)}):
        with pytest.raises(SerializationError, match=f"cannot send a .*{type(value).__qualname__}"):
            codec.encode(message)
    shared: list = []
    with pytest.raises(SerializationError, match="cannot send"):
        codec.encode([value, shared, shared])


def test_a_decimal_too_long_to_send_is_refused_before_sending(codec):
    assert codec.round_trip(Decimal("7" * serialize.MAX_DECIMAL_TEXT))[1] == Decimal("7" * 4096)
    with pytest.raises(SerializationError, match="4097 characters"):
        codec.encode(Decimal("7" * (serialize.MAX_DECIMAL_TEXT + 1)))


def test_library_values_with_shared_objects_and_copies_in_graph_mode(codec):
    shared = {"opened": WHEN}
    point = Point(Decimal("0.1"), [date(2024, 1, 1), timedelta(hours=1)])
    message = [shared, point, shared, {WHEN: point, Decimal("2"): shared}, (WHEN, time.max)]
    mode, got = codec.round_trip(message)
    assert mode == GRAPH
    assert got[0] is got[2] is got[3][Decimal("2")]
    assert got[3][WHEN] is got[1]
    assert_same(shared, got[0])
    assert_same(Decimal("0.1"), got[1].x)
    assert_same([date(2024, 1, 1), timedelta(hours=1)], got[1].y)
    assert_same((WHEN, time.max), got[4])


def _datetime(*fields, fold=0, offset=None) -> bytes:
    data = struct.pack(">HBBBBBIB", *fields, fold)
    return data if offset is None else data + struct.pack(">q", offset)


def _time(*fields, fold=0, offset=None) -> bytes:
    data = struct.pack(">BBBIB", *fields, fold)
    return data if offset is None else data + struct.pack(">q", offset)


DAY_US = 86400 * 10**6
BAD_VALUES = {
    "datetime too short": (serialize.EXT_DATETIME, _datetime(2024, 1, 1, 0, 0, 0, 0)[:-1]),
    "datetime between lengths": (serialize.EXT_DATETIME, _datetime(2024, 1, 1, 0, 0, 0, 0) + b"\0"),
    "datetime year 0": (serialize.EXT_DATETIME, _datetime(0, 1, 1, 0, 0, 0, 0)),
    "datetime month 13": (serialize.EXT_DATETIME, _datetime(2024, 13, 1, 0, 0, 0, 0)),
    "datetime 30 February": (serialize.EXT_DATETIME, _datetime(2024, 2, 30, 0, 0, 0, 0)),
    "datetime hour 24": (serialize.EXT_DATETIME, _datetime(2024, 1, 1, 24, 0, 0, 0)),
    "datetime microsecond 10**6": (serialize.EXT_DATETIME, _datetime(2024, 1, 1, 0, 0, 0, 10**6)),
    "datetime fold 2": (serialize.EXT_DATETIME, _datetime(2024, 1, 1, 0, 0, 0, 0, fold=2)),
    "datetime offset of a day": (serialize.EXT_DATETIME, _datetime(2024, 1, 1, 0, 0, 0, 0, offset=DAY_US)),
    "date too long": (serialize.EXT_DATE, struct.pack(">HBBB", 2024, 1, 1, 0)),
    "date 31 April": (serialize.EXT_DATE, struct.pack(">HBB", 2024, 4, 31)),
    "date day 0": (serialize.EXT_DATE, struct.pack(">HBB", 2024, 4, 0)),
    "time empty": (serialize.EXT_TIME, b""),
    "time minute 60": (serialize.EXT_TIME, _time(9, 60, 0, 0)),
    "time second 60": (serialize.EXT_TIME, _time(9, 0, 60, 0)),
    "time offset minus a day": (serialize.EXT_TIME, _time(9, 0, 0, 0, offset=-DAY_US)),
    "time offset at the int64 edge": (serialize.EXT_TIME, _time(9, 0, 0, 0, offset=-(2**63))),
    "timedelta short": (serialize.EXT_TIMEDELTA, struct.pack(">iI", 1, 2)),
    "timedelta seconds of a day": (serialize.EXT_TIMEDELTA, struct.pack(">iII", 0, 86400, 0)),
    "timedelta microseconds 10**6": (serialize.EXT_TIMEDELTA, struct.pack(">iII", 0, 0, 10**6)),
    "timedelta past the largest": (serialize.EXT_TIMEDELTA, struct.pack(">iII", 10**9, 0, 0)),
    "timedelta past the smallest": (serialize.EXT_TIMEDELTA, struct.pack(">iII", -(10**9), 0, 0)),
    "decimal empty": (serialize.EXT_DECIMAL, b""),
    "decimal garbage": (serialize.EXT_DECIMAL, b"12 apples"),
    "decimal with spaces": (serialize.EXT_DECIMAL, b" 1.5"),
    "decimal with underscores": (serialize.EXT_DECIMAL, b"1_000"),
    "decimal lower-case nan": (serialize.EXT_DECIMAL, b"nan"),
    "decimal with a plus sign": (serialize.EXT_DECIMAL, b"+1"),
    "decimal in other digits": (serialize.EXT_DECIMAL, "\u0661\u0662".encode()),
    "decimal not ascii": (serialize.EXT_DECIMAL, b"1\xff"),
    "decimal exponent beyond any context": (serialize.EXT_DECIMAL, b"1E+9999999999999999999"),
    "decimal too long": (serialize.EXT_DECIMAL, b"7" * (serialize.MAX_DECIMAL_TEXT + 1)),
}


@pytest.mark.parametrize("name", BAD_VALUES)
@pytest.mark.parametrize("mode", [PLAIN, GRAPH])
def test_malformed_library_values_give_protocol_error(codec, name, mode):
    code, data = BAD_VALUES[name]
    with pytest.raises(ProtocolError, match=f"malformed .*ext {code}"):
        codec.decode(mode, pack([ext(code, data), "after"]))


def test_decimal_garbage_is_refused_even_where_the_context_would_make_it_nan(codec):
    with decimal.localcontext() as context:
        context.traps[decimal.InvalidOperation] = False
        assert Decimal("12 apples").is_nan()  # what Decimal() alone would accept
        with pytest.raises(ProtocolError, match="malformed Decimal"):
            codec.decode(PLAIN, pack(ext(serialize.EXT_DECIMAL, b"12 apples")))
