"""The values every peer sends, so that all peers measure exactly the same work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

#: Calls kept in flight by the pipelined workload.
WINDOW = 1000

#: The argument of a small call (echoed back).
SMALL = 42


def make_dicts() -> list[dict]:
    """A list of 200 small, flat dicts: the shape of a typical table row payload."""
    return [{"id": i, "name": f"row {i}", "score": i * 0.5, "active": i % 2 == 0} for i in range(200)]


DICTS = make_dicts()


def make_nested_dicts() -> list[dict]:
    """200 dicts that each hold a 3-item list: rows with tags, the commonest nesting."""
    return [{"id": i, "name": f"row {i}", "tags": ["new", f"t{i % 7}", i]} for i in range(200)]


def make_lists() -> list[list[int]]:
    """500 small lists of ints: a matrix, a batch of vectors."""
    return [[i, i + 1, i + 2] for i in range(500)]


def make_tree() -> dict:
    """A dict three levels deep: 10 groups of 10 items of 4 fields."""
    return {
        f"group {a}": {f"item {b}": {"a": a, "b": b, "label": f"{a}.{b}", "ok": True} for b in range(10)}
        for a in range(10)
    }


def make_tuples() -> list[tuple]:
    """500 small tuples (they must arrive as tuples, which plain msgpack cannot do)."""
    return [(i, f"n{i}") for i in range(500)]


def make_datetimes() -> list[datetime]:
    """200 aware datetimes (UTC), minutes apart, with microseconds: a time series' stamps."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [start + timedelta(minutes=7 * i, microseconds=i) for i in range(200)]


NESTED = make_nested_dicts()
LISTS = make_lists()
TREE = make_tree()
TUPLES = make_tuples()
DATETIMES = make_datetimes()

#: One MiB of bytes.
MIB = bytes(range(256)) * 4096

#: echo workload -> the value echoed (sent as the single argument, expected back).
ECHOES: dict[str, object] = {
    "dicts": DICTS,
    "nested": NESTED,
    "lists": LISTS,
    "tree": TREE,
    "tuples": TUPLES,
    "datetimes": DATETIMES,
    "mib": MIB,
}

#: workload name -> (calls per unit of work, what one unit is)
WORKLOADS = {
    "sequential": (1, "small call, awaited before the next"),
    "pipelined": (WINDOW, f"{WINDOW} small calls in flight, then all awaited"),
    "dicts": (1, "echo of a list of 200 small dicts"),
    "nested": (1, "echo of a list of 200 dicts that each hold a 3-item list"),
    "lists": (1, "echo of a list of 500 small lists of ints"),
    "tree": (1, "echo of a dict tree three levels deep (10 x 10 x 4 fields)"),
    "tuples": (1, "echo of a list of 500 small tuples"),
    "datetimes": (1, "echo of a list of 200 aware datetimes"),
    "mib": (1, "echo of 1 MiB of bytes"),
}


def same(a: Any, b: Any) -> bool:
    """Whether ``a`` equals ``b`` with the same exact types all the way down.

    Stricter than ``==``: a tuple is not a list, and a proxy that compares equal
    (an RPyC netref) is not the value.
    """
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def tuples_as_lists(value: Any) -> Any:
    """``value`` with every tuple made a list: what a transport with one array type gives back."""
    if type(value) in (list, tuple):
        return [tuples_as_lists(item) for item in value]
    if type(value) is dict:
        return {key: tuples_as_lists(item) for key, item in value.items()}
    return value


def check_echo(workload: str, echoed: object, *, carries_tuples: bool = True) -> str | None:
    """Raise unless ``echoed`` is exactly what ``workload`` sent; say what a peer could not carry.

    A peer that cannot carry tuples (``carries_tuples=False``) must give back the
    same items with its lists in their place, and the answer is the note saying so.
    """
    sent = ECHOES[workload]
    expected = sent if carries_tuples else tuples_as_lists(sent)
    if not same(echoed, expected):
        raise AssertionError(f"echo of {workload} came back different: {echoed!r:.80}")
    return None if same(expected, sent) else "tuples arrived as lists"
