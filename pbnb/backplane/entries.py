"""The entries of a shared cache's change log: what one change looks like in Redis.

A change is a Redis stream entry whose fields are bytes:

* ``e``: the epoch (history) it belongs to;
* ``o``: its origin, ``<process token>:<counter>``; the counter grows by one
  for each change that process publishes, so a process that lost Redis in the
  middle of a write can tell which of its changes arrived;
* ``m``: the observer method it runs (``set``, ``update`` or any
  ``notify`` name);
* ``a``: ``[args, kwargs]`` packed by pbnb's codec as plain data, exactly the
  payload every observer's call carries (so it is fanned out without repacking);
* ``f:<field>``, for ``set`` and ``update``: each changed field's new value,
  packed alone, as the snapshot hash stores it.

Everything read back is decoded under the broker's default limits and checked
against the cacheable's ``observed_fields``; whatever does not fit raises
``MalformedEntry`` and is skipped by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.flavors import CopyRegistry
from ..core.observing import _pack_for_everyone
from ..core.serialize import PLAIN, Decoder
from ..core.wire import Limits
from ..errors import InsecureJelly, LimitExceeded, PBError, ProtocolError, SerializationError

#: Methods whose arguments are field assignments, kept in the snapshot.
STATE_METHODS = frozenset({"set", "update"})
FIELD_PREFIX = "f:"


class MalformedEntry(PBError):
    """An entry in a shared cache's log (or snapshot) that this process cannot apply."""


@dataclass(frozen=True, slots=True)
class Change:
    """One decoded change: the observer call and the fields it assigns."""

    method: str
    payload: bytes  # [args, kwargs], packed once for every observer
    fields: dict[str, Any]  # empty for a notification that changes no field
    origin: str

    def fields_packed(self) -> list[bytes]:
        """The ``name, value`` pairs the snapshot stores (values packed alone)."""
        return [item for name, value in self.fields.items() for item in (name.encode(), pack_value(value))]


def pack_value(value: Any) -> bytes:
    """``value`` as plain msgpack bytes; anything needing a connection raises SerializationError."""
    payload = _pack_for_everyone((value,), {})
    if payload is None:
        raise SerializationError(
            f"a shared cache carries plain data only (numbers, text, bytes, containers, dates); "
            f"not {type(value).__qualname__} or anything holding references, copies or shared objects"
        )
    # [[value], {}] packs as fixarray(2), fixarray(1), the value, fixmap(0): slicing the
    # value out, rather than packing it with a second packer, keeps one encoding.
    return payload[2:-1]


def encode(method: str, args: tuple, kwargs: dict[str, Any], allowed: frozenset[str]) -> Change:
    """Turn an observer call into a Change; refuse what no other process could apply."""
    fields = state_fields(method, args, kwargs, allowed)
    payload = _pack_for_everyone(args, kwargs)
    if payload is None:
        pack_value([args, kwargs])  # raises the SerializationError that says why
        raise AssertionError("unreachable")  # pragma: no cover
    return Change(method, payload, fields, "")


def state_fields(method: str, args: Any, kwargs: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """The fields a ``set``/``update`` call assigns (empty for other methods), checked against ``allowed``."""
    if method == "set":
        if len(args) != 2 or kwargs or not isinstance(args[0], str):
            raise TypeError("set takes a field name and a value")
        fields = {args[0]: args[1]}
    elif method == "update":
        if len(args) != 1 or kwargs or not isinstance(args[0], dict):
            raise TypeError("update takes one dict of fields")
        fields = dict(args[0])
    else:
        if not method.isidentifier() or method.startswith("_"):
            raise ValueError(f"{method!r} is not a public observer method name")
        return {}
    unknown = sorted(name for name in fields if name not in allowed)
    if unknown:
        raise AttributeError(f"{unknown} are not in observed_fields")
    return fields


class _NoReferences:
    """The decoder's tables: an entry naming a connection's object is malformed."""

    def __getattr__(self, name: str) -> Any:
        raise ProtocolError("a shared cache entry cannot hold references")


_LIMITS = Limits()
_DECODER = Decoder(
    _NoReferences(), CopyRegistry(), _LIMITS.max_depth, _LIMITS.max_container_len, _LIMITS.max_string_len
)


def _decode(data: bytes) -> Any:
    try:
        return _DECODER.decode(PLAIN, data)
    except (ProtocolError, LimitExceeded, InsecureJelly, ValueError, TypeError) as exc:
        raise MalformedEntry(f"undecodable value ({exc})") from None


def decode(fields: dict[bytes, bytes], allowed: frozenset[str]) -> Change:
    """Read one log entry written by ``encode`` (fields ``m``, ``a``, ``o``); raise MalformedEntry."""
    try:
        method = fields[b"m"].decode()
        payload = fields[b"a"]
        origin = fields[b"o"].decode()
    except (KeyError, UnicodeDecodeError):
        raise MalformedEntry(f"not a pbnb change (fields {sorted(fields)[:8]})") from None
    call = _decode(payload)
    if not (isinstance(call, list) and len(call) == 2 and isinstance(call[0], list)):
        raise MalformedEntry("the arguments are not [args, kwargs]")
    args, kwargs = call
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise MalformedEntry("the keyword arguments are not a dict of names")
    try:
        state = state_fields(method, args, kwargs, allowed)
    except (TypeError, ValueError, AttributeError) as exc:
        raise MalformedEntry(f"{method}: {exc}") from None
    return Change(method, bytes(payload), state, origin)


def decode_snapshot(flat: dict[bytes, bytes], allowed: frozenset[str]) -> dict[str, Any]:
    """The observed fields stored in a snapshot hash; fields unknown here raise MalformedEntry."""
    state: dict[str, Any] = {}
    for key, data in flat.items():
        name = key.decode(errors="replace")
        if not name.startswith(FIELD_PREFIX):
            continue
        name = name[len(FIELD_PREFIX) :]
        if name not in allowed:
            raise MalformedEntry(f"the snapshot holds {name!r}, which is not in observed_fields")
        state[name] = _decode(data)
    return state
