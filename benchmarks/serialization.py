"""Serialization alone, in one process: pbnb's Encoder/Decoder against plain msgpack.

Both sides do a full round trip (encode, then decode the bytes) of the same
call arguments. pbnb's side is what a connection runs for them: the Broker's
call encoding (atoms-only shortcut, identity scan, Encoder, transaction) and
its payload decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack

from pbnb.core.broker import Broker

from .workloads import DICTS, MIB, SMALL, make_dicts


def _shared_dicts() -> list[dict]:
    rows = make_dicts()
    rows[-1] = rows[0]  # one dict twice: pbnb must keep identity (GRAPH mode)
    return rows


#: case name -> (value, whether plain msgpack can carry it faithfully)
CASES: dict[str, tuple[Any, bool]] = {
    "small call": ([[SMALL], {}], True),
    "200 dicts": ([[DICTS], {}], True),
    "1 MiB": ([[MIB], {}], True),
    "200 dicts, one shared": ([[_shared_dicts()], {}], False),
}


def _codecs() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    broker = Broker()

    def pbnb_round_trip(value: Any) -> Any:
        args, kwargs = value
        mode, payload = broker.encode_arguments(args, kwargs)
        return broker.decode_payload(mode, memoryview(payload))

    def msgpack_round_trip(value: Any) -> Any:
        return msgpack.unpackb(msgpack.packb(value))

    return pbnb_round_trip, msgpack_round_trip


def _time(round_trip: Callable[[Any], Any], value: Any, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        round_trip(value)
    return time.perf_counter() - start


def _calibrate(round_trip: Callable[[Any], Any], value: Any, budget: float) -> int:
    count = 1
    while (seconds := _time(round_trip, value, count)) < budget / 5:
        count *= 4
    return max(1, round(count * budget / seconds))


def measure(rounds: int, budget: float) -> dict[str, list[tuple[float, float]]]:
    """Return case -> one (pbnb round trips/s, msgpack round trips/s) pair per round."""
    pbnb_round_trip, msgpack_round_trip = _codecs()
    results: dict[str, list[tuple[float, float]]] = {case: [] for case in CASES}
    counts = {case: _calibrate(msgpack_round_trip, value, budget / 2) for case, (value, _) in CASES.items()}
    for case, (value, _) in CASES.items():
        if pbnb_round_trip(value) != msgpack_round_trip(value):
            raise AssertionError(f"pbnb and msgpack disagree on {case!r}")
    for _ in range(rounds):
        for case, (value, _) in CASES.items():
            count = counts[case]
            ours = count / _time(pbnb_round_trip, value, count)
            theirs = count / _time(msgpack_round_trip, value, count)
            results[case].append((ours, theirs))
    return results
