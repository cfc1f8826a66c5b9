"""Serialization alone, in one process: pbnb's Encoder/Decoder against plain msgpack.

Both sides do a full round trip (encode, then decode the bytes) of the same
call arguments. pbnb's side is what a connection runs for them: the Broker's
call encoding (atoms-only shortcut, identity scan, Encoder, transaction) and
its payload decoding. msgpack's side is ``packb`` then ``unpackb`` of the same
``[args, kwargs]``, or, where msgpack cannot carry the value itself, of the
nearest thing it can (noted per case).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from pbnb.core.broker import Broker
from pbnb.core.flavors import Copyable, CopyRegistry, RemoteCopy

from .workloads import (
    DICTS,
    MIB,
    SMALL,
    make_datetimes,
    make_dicts,
    make_lists,
    make_nested_dicts,
    make_tree,
    make_tuples,
    same,
)


class Point(Copyable, RemoteCopy):
    """A dataclass-like Copyable: three fields, sent by value with the default hooks."""

    def __init__(self, x: int, y: int, label: str):
        self.x, self.y, self.label = x, y, label

    def __eq__(self, other: object) -> bool:
        return type(other) is Point and vars(other) == vars(self)


def _points() -> list[Point]:
    return [Point(i, -i, f"p{i}") for i in range(200)]


def _shared_dicts() -> list[dict]:
    rows = make_dicts()
    rows[-1] = rows[0]  # one dict twice: pbnb must keep identity (GRAPH mode)
    return rows


@dataclass(frozen=True)
class Case:
    """One value to send, and what plain msgpack round-trips in its place."""

    value: Any
    #: msgpack's stand-in when it cannot carry ``value`` itself (None: the value).
    floor: Any = None
    #: The ratio pbnb aims at, or None when the comparison is only indicative.
    target: float | None = 0.8
    note: str = ""
    pack_options: dict = field(default_factory=dict)
    unpack_options: dict = field(default_factory=dict)


_POINTS = _points()
_DATETIMES = make_datetimes()

#: case name -> Case. Each value is one call's single argument.
CASES: dict[str, Case] = {
    "small call": Case(SMALL, target=0.5),
    "1 MiB": Case(MIB, target=0.5),
    "200 dicts": Case(DICTS),
    "200 dicts with a list": Case(make_nested_dicts()),
    "500 small lists": Case(make_lists()),
    "dict tree, 3 deep": Case(make_tree()),
    "500 small tuples": Case(make_tuples(), note="msgpack returns lists"),
    "200 copies": Case(_POINTS, [vars(p) for p in _POINTS], None, "msgpack sends their dicts"),
    "200 datetimes": Case(
        _DATETIMES,
        target=None,
        note="msgpack's own timestamps",
        pack_options={"datetime": True},
        unpack_options={"timestamp": 3},
    ),
    "200 dicts, one shared": Case(_shared_dicts(), target=None, note="identity kept; msgpack loses it"),
}


def _registry() -> CopyRegistry:
    registry = CopyRegistry()
    registry.register(Point, Point)
    return registry


def round_trips(case: Case) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The two round trips of ``case``, each a call without arguments."""
    broker = Broker(registry=_registry())
    args: tuple = (case.value,)
    kwargs: dict = {}
    floor = [[case.value if case.floor is None else case.floor], {}]
    packb, unpackb = msgpack.packb, msgpack.unpackb
    pack_options, unpack_options = case.pack_options, case.unpack_options

    def pbnb_round_trip() -> Any:
        mode, payload = broker.encode_arguments(args, kwargs)
        return broker.decode_payload(mode, memoryview(payload))

    def msgpack_round_trip() -> Any:
        return unpackb(packb(floor, **pack_options), **unpack_options)

    return pbnb_round_trip, msgpack_round_trip


def check(case: Case) -> None:
    """Raise unless pbnb's round trip gives back exactly what was sent (types included)."""
    pbnb_round_trip, _ = round_trips(case)
    (args, kwargs) = pbnb_round_trip()
    if kwargs != {} or len(args) != 1 or not same(args[0], case.value):
        raise AssertionError(f"pbnb's round trip changed the value: {args!r:.80}")


def _time(round_trip: Callable[[], Any], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        round_trip()
    return time.perf_counter() - start


def _calibrate(round_trip: Callable[[], Any], budget: float) -> int:
    count = 1
    while (seconds := _time(round_trip, count)) < budget / 5:
        count *= 4
    return max(1, round(count * budget / seconds))


def measure(rounds: int, budget: float, cases: list[str] | None = None) -> dict[str, list[tuple]]:
    """Return case -> one (pbnb round trips/s, msgpack round trips/s) pair per round."""
    names = cases or list(CASES)
    codecs = {name: round_trips(CASES[name]) for name in names}
    for name in names:
        check(CASES[name])
    counts = {name: _calibrate(codecs[name][1], budget / 2) for name in names}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            ours, theirs = codecs[name]
            count = counts[name]
            results[name].append((count / _time(ours, count), count / _time(theirs, count)))
    return results


def main() -> None:
    """Print the median ratio per case: ``python -m benchmarks.serialization [--rounds N] [CASE...]``."""
    import argparse
    import statistics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.2)
    parser.add_argument("cases", nargs="*", metavar="CASE", help=", ".join(CASES))
    args = parser.parse_args()
    for name, pairs in measure(args.rounds, args.budget, args.cases).items():
        ratios = sorted(ours / theirs for ours, theirs in pairs)
        print(f"{name:24s} {statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
