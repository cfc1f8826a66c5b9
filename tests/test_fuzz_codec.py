"""Property tests: every value the codec accepts round-trips, identity and cycles kept.

Values travel through two sans-IO brokers (``tests/pair.py``): as the argument
of a call to an echo method and back as its answer, so each example crosses the
wire twice, once in each direction.
"""

from __future__ import annotations

import contextlib
import copy
import gc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pair import ConnectionPair

import pbnb as pb
from pbnb.core import _speedups, serialize  # _speedups: built by `pip install -e .` (setup.py)
from pbnb.core.flavors import CopyRegistry
from pbnb.core.serialize import PLAIN, Decoder, Encoder


class Echo(pb.Root):
    def remote_echo(self, value: Any) -> Any:
        return value


def round_trip(value: Any, *, byte_by_byte: bool = False) -> Any:
    pair = ConnectionPair(server_root=Echo(), byte_by_byte=byte_by_byte).handshake()
    root = pair.root()
    result = pair.call(root, "echo", value).result()
    sizes = pair.server.table_sizes()
    assert sizes["inbound_calls"] == 0 and sizes["imports"] == 0
    return result


# --------------------------------------------------------------- strategies

# Fixed offsets only, which is what any aware value arrives with.
almost_a_day = timedelta(hours=24, microseconds=-1)
zones = st.none() | st.timedeltas(-almost_a_day, almost_a_day).map(timezone)


def with_fold(value: Any, fold: int) -> Any:
    return value.replace(fold=fold)


library_values = (
    st.builds(with_fold, st.datetimes(timezones=zones), st.integers(0, 1))
    | st.dates()
    | st.builds(with_fold, st.times(timezones=zones), st.integers(0, 1))
    | st.timedeltas()
    | st.decimals(allow_nan=False)
)
# Leaves of trees only: sNaN does not hash, and a NaN key or member would equal nothing.
nans = st.sampled_from([Decimal(text) for text in ("NaN", "-NaN", "NaN12", "sNaN", "-sNaN7")])
atoms = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | library_values
)
hashables = st.recursive(
    atoms,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)
trees = st.recursive(
    atoms | nans,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(hashables, inner, max_size=5)
        | st.sets(hashables, max_size=5)
        | st.frozensets(hashables, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def graphs(draw: st.DrawFn) -> Any:
    """A tree, then some of its mutable containers shared elsewhere and made cyclic."""
    tree = draw(trees)
    containers = [obj for obj in walk(tree) if type(obj) in (list, dict)]
    holder: list = [tree]
    if containers:
        for _ in range(draw(st.integers(0, 4))):
            target = draw(st.sampled_from(containers))
            source = draw(st.sampled_from([*containers, holder]))
            if type(source) is list:
                source.append(target)  # shared, and a cycle when target contains source
            else:
                source[draw(st.text(max_size=3))] = target
    return holder


def walk(value: Any) -> list:
    seen: dict[int, Any] = {}
    stack = [value]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or type(obj) not in (list, tuple, dict, set, frozenset):
            continue
        seen[id(obj)] = obj
        stack.extend(obj.values() if type(obj) is dict else obj)
        if type(obj) is dict:
            stack.extend(obj)
    return list(seen.values())


# ------------------------------------------------------------- comparison


def canonical(value: Any) -> Any:
    """An order-free description of a hashable value, for comparing set members."""
    kind = type(value)
    if kind in (set, frozenset):
        return (kind.__name__, sorted(map(canonical, value)))
    if kind is tuple:
        return ("tuple", [canonical(item) for item in value])
    return (kind.__name__, repr(value))


def assert_same_graph(sent: Any, got: Any, pairs: dict[int, Any] | None = None) -> None:
    """``got`` has the shape, types and values of ``sent``, sharing exactly where it shares."""
    pairs = {} if pairs is None else pairs
    assert type(got) is type(sent), (sent, got)
    if type(sent) not in (list, dict, tuple, set, frozenset):
        assert repr(got) == repr(sent)
        return
    if id(sent) in pairs:
        if type(sent) in (list, dict, set):  # immutable containers may be rebuilt
            assert pairs[id(sent)] is got, "a shared object arrived as two objects"
        return
    pairs[id(sent)] = got
    if type(sent) in (set, frozenset):
        assert canonical(got) == canonical(sent)
    elif type(sent) is dict:
        assert len(got) == len(sent)
        sent_keys = sorted(sent, key=canonical)
        got_keys = sorted(got, key=canonical)
        for sent_key, got_key in zip(sent_keys, got_keys, strict=True):
            assert canonical(sent_key) == canonical(got_key)
            assert_same_graph(sent[sent_key], got[got_key], pairs)
    else:
        assert len(got) == len(sent)
        for sent_item, got_item in zip(sent, got, strict=True):
            assert_same_graph(sent_item, got_item, pairs)


def identity_classes(value: Any) -> list[int]:
    """For each mutable container met in a walk, the index of its first meeting."""
    order: dict[int, int] = {}
    result = []
    for obj in walk_ordered(value):
        result.append(order.setdefault(id(obj), len(order)))
    return result


def walk_ordered(value: Any) -> list:
    met, stack, seen = [], [value], set()
    while stack:
        obj = stack.pop()
        if type(obj) not in (list, dict):
            continue
        met.append(obj)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        stack.extend(reversed(list(obj.values()) if type(obj) is dict else obj))
    return met


# ------------------------------------------------------------------ tests

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Hundreds of examples each: on a busy machine a test can take minutes, which is no failure.
pytestmark = pytest.mark.timeout(900)


@pytest.mark.slow
@SETTINGS
@given(trees)
def test_trees_round_trip(value):
    assert_same_graph(value, round_trip(value))


@pytest.mark.slow
@SETTINGS
@given(graphs())
def test_shared_and_cyclic_graphs_round_trip_with_identity(value):
    got = round_trip(value)
    assert_same_graph(value, got)
    assert identity_classes(got) == identity_classes(value)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(graphs())
def test_graphs_round_trip_fed_one_byte_at_a_time(value):
    got = round_trip(value, byte_by_byte=True)
    assert_same_graph(value, got)
    assert identity_classes(got) == identity_classes(value)


def test_a_self_containing_tuple_through_a_list_round_trips():
    inner: list = []
    outer = (inner, 1)
    inner.append(outer)
    got = round_trip(outer)
    assert got[0][0] is got


class Same(pb.Root):
    def remote_same(self, value: list) -> list:
        return [value[0] is value[1] is value[2]["k"], value]


def test_one_referenceable_three_times_in_a_plain_message_arrives_as_one_reference():
    """The scan leaves references to the tables (PLAIN), which still give them identity."""
    mine = pb.Referenceable()
    sent = [mine, mine, {"k": mine}]
    assert serialize.scan_value(sent) == serialize.SCAN_TREE
    assert serialize.scan_value_walk(sent, by_refcount=False) == serialize.SCAN_TREE
    pair = ConnectionPair(server_root=Same()).handshake()
    same, back = pair.call(pair.root(), "same", sent).result()
    assert same and back[0] is mine and back[1] is mine and back[2]["k"] is mine
    assert pair.server.table_sizes()["imports"] == 0 and pair.client.table_sizes()["exports"] == 0


# ------------------------------------------- fast paths against their slow twins


@st.composite
def held_graphs(draw: st.DrawFn) -> tuple[Any, list]:
    """A graph, and some of its containers also held from outside (as a caller's variables are)."""
    value = draw(graphs())
    containers = walk(value)
    outside = draw(st.lists(st.sampled_from(containers), max_size=3)) if containers else []
    return value, outside


@settings(SETTINGS, max_examples=150)
@given(held_graphs())
def test_the_refcount_shortcut_of_the_scan_agrees_with_exact_ids(value_and_holders):
    value, _outside = value_and_holders
    fresh = copy.deepcopy(value)  # the same shape, all fresh
    with settled_tracking():
        fast = serialize.scan_value_walk(value)
        assert fast == serialize.scan_value_walk(value, by_refcount=False)
        assert fast == serialize.scan_value_walk(fresh)


@contextlib.contextmanager
def settled_tracking() -> Iterator[None]:
    """No collection while walks are compared: one may untrack an atom-only tuple or dict.

    The walks do not look inside untracked containers, so the same empty tuple met
    twice counts as a repeat only while the tuples around it are tracked. A collection
    first gives a value and its deep copy the same tracking.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Unknown:
    """A class no rule sends: a value holding one needs the GRAPH writer (which refuses it)."""


#: What a value may hold besides builtins: leaves of every kind, and things that are not.
odd_leaves = st.sampled_from(
    [pb.Referenceable(), Unknown(), pb.Copyable(), datetime(2026, 1, 2), Decimal("1.5"), timedelta(3), 2**70]
)


@settings(SETTINGS, max_examples=300)
@given(held_graphs(), st.lists(odd_leaves, max_size=2), st.booleans())
def test_the_c_scan_agrees_with_the_python_walk(value_and_holders, extras, top):
    """Same answer on trees, shared and cyclic graphs, parts held from outside, odd leaves."""
    value, _outside = value_and_holders
    for extra in extras:
        containers = [obj for obj in walk(value) if type(obj) is list]
        containers[len(containers) // 2].append(extra)
    root = extras[0] if top and extras else value
    with settled_tracking():
        expected = serialize.scan_value_walk(root, by_refcount=False)
        assert _speedups.scan_value(serialize._LEAVES, serialize._is_leaf_flavor, root) == expected
        assert serialize.scan_value(root) == expected
        assert serialize.needs_graph(root) == (expected == serialize.SCAN_GRAPH)


def test_the_scan_counts_lists_and_tuples_and_keeps_references_lists_first():
    cases = [
        ((1, 2), serialize.SCAN_TUPLE_TREE),  # the root counts
        ([(1, 2)], serialize.SCAN_TREE),  # one each: lists-first, the usual layout
        ([(1, 2), (3, [4])], serialize.SCAN_TREE),
        ([(1, 2), (3, 4), {"k": (5,)}], serialize.SCAN_TUPLE_TREE),
        ({(1, 2): 1, (3, 4): frozenset({(5, 6)})}, serialize.SCAN_TUPLE_TREE),  # keys, not set members
        ([(1, 2), (3, 4), pb.Referenceable()], serialize.SCAN_TREE),
        ([(1, 2), (3, 4), datetime(2026, 1, 2)], serialize.SCAN_TUPLE_TREE),
        (nested_tuples(serialize.MAX_TUPLES_FIRST_DEPTH), serialize.SCAN_TUPLE_TREE),
        (nested_tuples(serialize.MAX_TUPLES_FIRST_DEPTH + 1), serialize.SCAN_TREE),  # tag_lists recurses
        ([nested_tuples(serialize.MAX_TUPLES_FIRST_DEPTH - 1), ()], serialize.SCAN_TUPLE_TREE),
        ([nested_tuples(serialize.MAX_TUPLES_FIRST_DEPTH), ()], serialize.SCAN_TREE),
    ]
    for value, expected in cases:
        with settled_tracking():
            assert serialize.scan_value_walk(value) == expected, value
            assert _speedups.scan_value(serialize._LEAVES, serialize._is_leaf_flavor, value) == expected


def nested_tuples(depth: int) -> tuple:
    value: tuple = (1, "a")
    for _ in range(depth - 1):
        value = (value, 2)
    return value


@settings(SETTINGS, max_examples=300)
@given(trees, st.integers(0, 6))
def test_the_c_tag_lists_copies_as_the_python_one(value, max_depth):
    """The same tagged copy (types, values, lists made tagged tuples), or the same refusal."""
    with settled_tracking():
        slow = outcome(lambda: serialize.tag_lists_walk(value, serialize._LIST, max_depth))
        fast = outcome(lambda: _speedups.tag_lists(value, serialize._LIST, max_depth))
    assert fast[0] == slow[0] and (fast[0] != "value" or same_tree(fast[1], slow[1])), (fast, slow)
    if slow[0] == "value":
        assert_same_graph(value, untagged(slow[1]))
        assert not any(type(obj) is list for obj in walk(slow[1]))


def same_tree(a: Any, b: Any) -> bool:
    try:
        assert_same_graph(a, b)
    except AssertionError:
        return False
    return True


def untagged(value: Any) -> Any:
    """A tagged copy back to the value it was made from."""
    kind = type(value)
    if kind is tuple and value and value[0] is serialize._LIST:
        return [untagged(item) for item in value[1:]]
    if kind is tuple:
        return tuple(map(untagged, value))
    if kind is dict:
        return {key: untagged(item) for key, item in value.items()}
    return value


def test_tag_lists_shares_what_holds_no_list_and_copies_the_path_to_each_list():
    inner, atoms_only = {"a": [1]}, (1, "x")
    value = (atoms_only, {"k": (2, 3)}, inner)
    for tag_lists in (serialize.tag_lists_walk, _speedups.tag_lists):
        copied = tag_lists(value, serialize._LIST, 10)
        assert copied[0] is atoms_only and copied[1] is value[1]
        assert copied[2] == {"a": (serialize._LIST, 1)} and inner == {"a": [1]}  # the original untouched
        with pytest.raises(ValueError, match="too deep"):
            tag_lists([[[1]]], serialize._LIST, 2)


SPEEDUPS_PARAM = pytest.mark.parametrize("speedups", [True, False], ids=["C", "Python"])


@settings(SETTINGS, max_examples=150)
@given(trees, st.integers(1, 7))
def test_the_depth_check_agrees_with_its_exact_twin(value, max_depth):
    mode, payload = Encoder(None, 1000).encode([value], None)
    assume(mode == PLAIN)
    decoded = Decoder(None, CopyRegistry(), 1000, 10**6).decode(PLAIN, payload)
    expected = serialize.tree_depth_walk(decoded, max_depth, exact=True)
    assert serialize.tree_depth_walk(decoded, max_depth) == expected
    assert _speedups.tree_depth_exceeds(decoded, max_depth) == expected
    assert serialize.tree_depth_exceeds(decoded, max_depth) == expected
    assert expected == (depth(decoded) > max_depth)


@SPEEDUPS_PARAM
def test_a_tuple_of_atoms_in_a_dict_counts_for_the_depth(speedups):
    """Neither the dict nor the decoded tuple is tracked by the collector: it still counts."""
    decoder = Decoder(None, CopyRegistry(), 2, 10**6, speedups=speedups)
    for value in ([{"k": (1, 2)}], [{"k": ()}], ({"k": ((1,),)},)):
        mode, payload = Encoder(None, 1000).encode(value, None)
        with pytest.raises(pb.LimitExceeded, match="deeper than 2"):
            decoder.decode(mode, payload)
    assert decoder.decode(*Encoder(None, 1000).encode([{"k": 1}], None)) == [{"k": 1}]


def depth(value: Any) -> int:
    if type(value) not in (list, tuple, dict, set, frozenset):
        return 0
    items = [*value.keys(), *value.values()] if type(value) is dict else value
    return 1 + max(map(depth, items), default=0)


def test_the_refcount_shortcut_is_taken_here():
    """On CPython it must engage, or it is a slow path that merely agrees."""
    assert serialize._SOLE_PARENT is not None
    fresh = [[1, 2], {"a": [3]}, (4, [5])]
    assert serialize._referenced_elsewhere(gc.get_referents(fresh), serialize._SOLE_PARENT) == []
    held = fresh[1]
    assert serialize._referenced_elsewhere(gc.get_referents(fresh), serialize._SOLE_PARENT) == [held]


# Ints equal modulo 2**61 - 1 share a hash: enough of them to flood the guard.
colliding = st.integers(0, 40).map(lambda k: k * (2**61 - 1) + 5)
unhashables = st.just([1]) | st.just(Decimal("sNaN"))
guarded_values = colliding | st.integers(-3, 3) | st.tuples(st.integers(0, 3), colliding) | unhashables
guarded = st.lists(guarded_values, max_size=80)


@settings(SETTINGS, max_examples=200)
@given(st.lists(guarded, max_size=4))
def test_the_hash_guard_takes_a_batch_as_it_takes_each_value(batches):
    """add_all (one go when every hash is new) leaves what add leaves, and refuses alike.

    The C twin (its own table, not comparable) refuses the same batch with the same words.
    """
    fast, slow = serialize._HashGuard(), serialize._HashGuard()
    twin = _speedups.HashGuard(serialize.MAX_SAME_HASH, pb.LimitExceeded)
    for batch in batches:
        outcomes = []
        for add in (fast.add_all, lambda values: [slow.add(value) for value in values], twin.add_all):
            try:
                add(batch)
                outcomes.append(None)
            except pb.LimitExceeded as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1] == outcomes[2]
        if outcomes[0] is not None:
            return
        assert {k: list(v) if type(v) is serialize._Same else v for k, v in fast._seen.items()} == {
            k: list(v) if type(v) is serialize._Same else v for k, v in slow._seen.items()
        }


@given(st.integers(0, 127), st.binary(max_size=20))
def test_the_unchecked_ext_is_the_ext_msgpack_packs(code, data):
    made = serialize._ext((code, data))
    assert type(made) is msgpack.ExtType and made == msgpack.ExtType(code, data)
    assert msgpack.packb(made) == msgpack.packb(msgpack.ExtType(code, data))


def outcome(work: Any) -> tuple[str, Any]:
    """What ``work()`` gives, or the type and text of what it raises, for comparing twins."""
    try:
        return "value", work()
    except Exception as exc:
        return type(exc).__name__, str(exc)


def reencoded(result: tuple[str, Any]) -> tuple[str, Any]:
    """A decode's outcome with its value as the Python encoder's bytes (NaN-proof, types kept)."""
    kind, value = result
    if kind != "value":
        return result
    return kind, Encoder(None, 1000, speedups=False).encode(value, None)


class NoOffset(tzinfo):
    """A zone that gives no UTC offset: such a datetime is refused, not sent naive."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None


#: Naive and aware datetimes: fixed offsets (to the microsecond), folds, a zone without one.
zones = (
    st.none()
    | st.timezones()
    | st.just(NoOffset())
    | st.integers(-86399999999, 86399999999).map(lambda micros: timezone(timedelta(microseconds=micros)))
)
datetimes = st.datetimes(timezones=zones, allow_imaginary=True).map(
    lambda when: when.replace(fold=1) if when.second % 2 else when
)


@settings(SETTINGS, max_examples=300)
@given(
    st.lists(trees | st.lists(st.tuples(atoms, atoms)) | st.lists(datetimes, max_size=5), max_size=4),
    odd_leaves | st.none(),
)
def test_the_c_default_packs_as_the_python_one(value, extra):
    """Same mode and bytes, or the same refusal, with the C default and without it."""
    if extra is not None:
        value.append(extra)
    fast = outcome(lambda: Encoder(None, 1000).encode(value, None))
    assert fast == outcome(lambda: Encoder(None, 1000, speedups=False).encode(value, None))


def has_offset(when: datetime) -> bool:
    return when.tzinfo is None or when.utcoffset() is not None


def payloads() -> st.SearchStrategy[bytes]:
    """PLAIN payloads of trees (tuples, sets, big ints, guarded keys), some cut or corrupted."""
    values = st.lists(trees | guarded | st.lists(datetimes.filter(has_offset), max_size=3), max_size=3)
    encoded = values.map(lambda value: Encoder(None, 1000).encode(value, None))
    plain = encoded.filter(lambda encoding: encoding[0] == PLAIN).map(lambda encoding: encoding[1])

    def damage(payload: bytes, where: int, byte: int, cut: bool) -> bytes:
        where %= len(payload)
        return payload[:where] if cut else payload[:where] + bytes([byte]) + payload[where + 1 :]

    damaged = st.builds(damage, plain, st.integers(0, 10**6), st.integers(0, 255), st.booleans())
    return plain | damaged | st.binary(max_size=40)


@settings(SETTINGS, max_examples=400)
@given(payloads(), st.integers(1, 8))
def test_the_c_hooks_decode_as_the_python_ones(payload, max_depth):
    """Same value, or the same error, for valid, damaged and random payloads."""
    fast = Decoder(None, CopyRegistry(), max_depth, 10**6)
    slow = Decoder(None, CopyRegistry(), max_depth, 10**6, speedups=False)
    expected = reencoded(outcome(lambda: slow.decode(PLAIN, payload)))
    assert reencoded(outcome(lambda: fast.decode(PLAIN, payload))) == expected
    assert fast._candidates == [] and fast._guard is serialize._IDLE_GUARD  # nothing kept after


SPEEDUPS = SPEEDUPS_PARAM
# Eight ints within msgpack's range share each hash.
SAME_HASH = [5 + j * (2**61 - 1) for j in range(8)]


@SPEEDUPS
@pytest.mark.parametrize("tuples_first", [True, False], ids=["tuples-first", "lists-first"])
def test_a_flood_of_colliding_tuple_keys_is_refused_by_both_twins(speedups, tuples_first):
    # Triples of them give 512 keys that all collide, packed as plain tuples (no big
    # int ext to set the guard off sooner). A list per key keeps the layout lists-first.
    keys = [(a, b, c) for a in SAME_HASH for b in SAME_HASH for c in SAME_HASH]
    value = {key: 1 if tuples_first else [] for key in keys}
    mode, payload = Encoder(None, 1000, speedups=False).encode(value, None)
    assert (payload[:4] == serialize.TUPLES_FIRST_PREFIX) is tuples_first
    decoder = Decoder(None, CopyRegistry(), 1000, 10**6, speedups=speedups)
    with pytest.raises(pb.LimitExceeded, match="hash flooding"):
        decoder.decode(mode, payload)
    assert decoder._candidates == []


@SPEEDUPS
def test_tuples_with_one_chosen_item_among_strings_are_not_counted_and_cannot_flood(speedups):
    """Strings hash with a secret salt: only the one int's few equals collide."""
    decoder = Decoder(None, CopyRegistry(), 1000, 10**6, speedups=speedups)
    few = {(a, "x", b"y"): 1 for a in SAME_HASH}  # all eight share a hash
    mode, payload = Encoder(None, 1000).encode(few, None)
    assert decoder.decode(mode, payload) == few
    # Two chosen items are counted, even beside a string: 64 keys collide on each string.
    many = {(a, b, text): 1 for a in SAME_HASH for b in SAME_HASH for text in ("x", "y")}
    mode, payload = Encoder(None, 1000).encode(many, None)
    with pytest.raises(pb.LimitExceeded, match="hash flooding"):
        decoder.decode(mode, payload)


@pytest.mark.parametrize("encode_speedups", [True, False], ids=["C encoder", "Python encoder"])
@SPEEDUPS
def test_a_value_holding_more_tuples_than_lists_goes_tuples_first(encode_speedups, speedups):
    value = {
        "rows": [(1, "a", [2, (3,)]), (4, "b", []), ((), (5.5, None))],
        (6, 7): {(8, "c"), frozenset({(9,)})},
        "when": (datetime(2026, 1, 2, tzinfo=UTC), 2**70, Decimal("1.5")),
    }
    mode, payload = Encoder(None, 1000, speedups=encode_speedups).encode(value, None)
    assert mode == PLAIN and payload[:4] == serialize.TUPLES_FIRST_PREFIX
    got = Decoder(None, CopyRegistry(), 1000, 10**6, speedups=speedups).decode(mode, payload)
    assert_same_graph(value, got)
    assert got == value


@SPEEDUPS
def test_a_tuples_first_payload_refuses_tags_it_cannot_hold(speedups):
    decoder = Decoder(None, CopyRegistry(), 1000, 10**6, speedups=speedups)
    tag = serialize._TAG_EXT
    lists_first_list = msgpack.packb([tag[serialize.TAG_LIST], 1])
    with pytest.raises(pb.ProtocolError, match="tag 8 is not valid"):
        decoder.decode(PLAIN, lists_first_list)
    nested_prefix = serialize.TUPLES_FIRST_PREFIX + msgpack.packb([tag[serialize.TAG_TUPLES_FIRST], 1])
    with pytest.raises(pb.ProtocolError, match="tag 9 is not valid"):
        decoder.decode(PLAIN, nested_prefix)
    tagged_tuple = serialize.TUPLES_FIRST_PREFIX + msgpack.packb([tag[serialize.TAG_TUPLE], 1])
    assert decoder.decode(PLAIN, tagged_tuple) == (1,)  # a tuple tagged needlessly is still one


def test_the_tuples_first_prefix_is_what_msgpack_packs():
    assert msgpack.packb((serialize._TUPLES_FIRST, None))[:-1] == serialize.TUPLES_FIRST_PREFIX
