"""The values every peer sends, so that all peers measure exactly the same work."""

from __future__ import annotations

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


NESTED = make_nested_dicts()

#: One MiB of bytes.
MIB = bytes(range(256)) * 4096

#: workload name -> (calls per unit of work, what one unit is)
WORKLOADS = {
    "sequential": (1, "small call, awaited before the next"),
    "pipelined": (WINDOW, f"{WINDOW} small calls in flight, then all awaited"),
    "dicts": (1, "echo of a list of 200 small dicts"),
    "nested": (1, "echo of a list of 200 dicts that each hold a 3-item list"),
    "mib": (1, "echo of 1 MiB of bytes"),
}


def check_dicts(value: object) -> None:
    """Raise if an echoed list of dicts is not equal to what was sent (catches fake echoes)."""
    if value != DICTS:
        raise AssertionError(f"echo of the dict list came back different: {value!r:.80}")


def check_nested(value: object) -> None:
    """Raise if an echoed list of nested dicts is not equal to what was sent."""
    if value != NESTED:
        raise AssertionError(f"echo of the nested dicts came back different: {value!r:.80}")


def check_mib(value: object) -> None:
    """Raise if an echoed MiB is not what was sent."""
    if value != MIB:
        raise AssertionError(f"echo of 1 MiB came back different ({type(value).__name__})")
