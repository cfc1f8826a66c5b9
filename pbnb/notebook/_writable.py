"""The owner's half of a two-way cache: an ObservedCacheable its peers may write to.

Each copy's state carries a small Referenceable, the field writer, made for
that one observer. A peer's ``TraitCache`` calls ``set`` on it when a trait
marked ``to_owner`` changes locally; the owner applies the change and tells
every *other* observer, so the writer's own copy never gets its change echoed
back (which would make a dragged slider jump back to older values).

This module needs neither IPython nor traitlets: a plain server imports it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.flavors import Referenceable
from ..core.observing import ObservedCacheable
from ..errors import DeadReferenceError, Error

#: The state key under which a copy receives its field writer.
WRITER_KEY = "_pb_writer"


class ReadOnlyField(Error):
    """A peer tried to set a field its owner does not let peers write."""


class WritableCacheable(ObservedCacheable):
    """An ObservedCacheable whose ``writable_fields`` the observing peers may set.

    Override ``accept_write(name, value)`` to check or convert a peer's value
    (raise ``pbnb.Error`` to refuse it); the value it returns is assigned.
    """

    #: Fields a peer may set; each must also be in ``observed_fields``.
    writable_fields: ClassVar[tuple[str, ...]] = ()

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        state = super().getStateToCacheAndObserveFor(perspective, observer)
        if not isinstance(state, dict):
            raise TypeError(f"{type(self).__qualname__} must cache a dict state to accept writes")
        return {**state, WRITER_KEY: FieldWriter(self, observer)}

    def accept_write(self, name: str, value: Any) -> Any:
        """Check a peer's new value for ``name``; return the value to assign."""
        return value

    def write_from_peer(self, name: str, value: Any, origin: Any) -> None:
        """Apply a peer's write; tell every other observer (and ``origin`` if the value changed)."""
        if name not in self.writable_fields or name not in self.observed_fields:
            raise ReadOnlyField(f"{type(self).__qualname__}.{name} cannot be set by a peer")
        accepted = self.accept_write(name, value)
        object.__setattr__(self, name, accepted)  # no broadcast to all: the origin may have it already
        # The origin needs the value only if accept_write changed it.
        skip = origin if _same(accepted, value) else None
        for observer, perspective in self.observers.items():
            if observer == skip:
                continue
            try:
                observer.callRemoteNoAnswer("set", name, accepted)
            except DeadReferenceError:
                self.stoppedObserving(perspective, observer)


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # an odd __eq__: assume they differ and send the value
        return False


class FieldWriter(Referenceable):
    """What one observer's copy calls to change a writable field on the owner."""

    def __init__(self, cacheable: WritableCacheable, observer: Any):
        self.cacheable = cacheable
        self.observer = observer

    def remote_set(self, name: str, value: Any) -> None:
        """Set ``name`` to ``value`` on the owner."""
        self.cacheable.write_from_peer(name, value, self.observer)
