"""Observer bookkeeping for Cacheables: who watches, and telling all of them at once.

``ObservedCacheable`` records each observer, with the perspective its copy was
made for, when a peer receives its first copy; it forgets the observer in
``stoppedObserving`` and broadcasts changes with ``notify``. Every broadcast is
fire-and-forget: each call is queued on its own connection and none is
awaited, so a slow or dead peer never holds up the others.

Fields named in ``observed_fields`` are broadcast when assigned (``observe_set``)
or several at once with ``update()`` (``observe_update``); ``ObservedRemoteCache``
applies both on the receiving side.

``WritableCacheable`` lets the observing peers write back: each copy's state
carries a small Referenceable, the field writer, made for that one observer.
The owner applies a peer's write and broadcasts it to every *other* observer
(the writer's own copy never gets its change echoed back, which would make a
dragged slider jump back to older values).

Like the flavors, this module never imports the broker: it only talks to
observers, through ``callRemoteNoAnswer`` or, for arguments that every
connection would encode alike, a call packed once for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ..errors import DeadReferenceError, ReadOnlyField
from .flavors import Cacheable, Referenceable, RemoteCache
from .serialize import PLAIN, Encoder, needs_graph
from .wire import Kind, Limits, PackedCall

#: What ``notify_each``'s function returns for one perspective: the positional
#: and keyword arguments of that observer's call, or None to skip it.
CallArguments = tuple[tuple[Any, ...], Mapping[str, Any]] | None

#: The state key under which a WritableCacheable's copy receives its field writer.
WRITER_KEY = "_pb_writer"


class ObservedCacheable(Cacheable):
    """A Cacheable that tracks its observers and broadcasts changes to them.

    Override ``getStateToCacheFor(perspective)`` to choose the state each peer
    starts from; by default it is the ``observed_fields`` if any are declared,
    else ``getStateToCopyFor(perspective)``. Call ``notify("name", ...)`` to run
    ``observe_name(...)`` on every peer's copy.
    """

    #: Fields whose assignment is broadcast as ``observe_set(name, value)``.
    observed_fields: ClassVar[tuple[str, ...]] = ()
    _pb_field_set: ClassVar[frozenset[str]] = frozenset()

    # A slot lives outside __dict__, so the bookkeeping never leaks into the copied state.
    __slots__ = ("_pb_watchers",)
    _pb_watchers: dict[Any, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._pb_field_set = frozenset(cls.observed_fields)

    def _watchers(self) -> dict[Any, Any]:
        try:
            return self._pb_watchers
        except AttributeError:  # subclasses need not call our __init__
            watchers: dict[Any, Any] = {}
            object.__setattr__(self, "_pb_watchers", watchers)
            return watchers

    @property
    def observers(self) -> dict[Any, Any]:
        """A snapshot of the current observers, each mapped to its perspective."""
        return dict(self._watchers())

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        """Record ``observer`` and return ``getStateToCacheFor(perspective)``."""
        self._watchers()[observer] = perspective
        return self.getStateToCacheFor(perspective)

    def getStateToCacheFor(self, perspective: Any) -> Any:
        """The state a new copy for ``perspective`` starts from."""
        if self.observed_fields:
            return {name: getattr(self, name) for name in self.observed_fields}
        return self.getStateToCopyFor(perspective)

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        """Forget ``observer``: its peer dropped the copy or disconnected."""
        self._watchers().pop(observer, None)

    def notify(self, _name: str, /, *args: Any, **kwargs: Any) -> int:
        """Run ``observe_<_name>(*args, **kwargs)`` on every copy; return how many were told.

        Plain arguments (no references, copies or shared objects) are packed
        once for all observers; anything else is encoded for each connection.
        """
        return self.send_change(_name, args, kwargs)

    def send_change(self, name: str, args: tuple, kwargs: dict[str, Any], skip: Any = None) -> int:
        """Run ``observe_<name>(*args, **kwargs)`` on every copy but ``skip``'s; return how many were told.

        Every change passes here: a field assignment, ``update()``, ``notify()``
        and a peer's write (which skips the writer's own copy). Override it to
        route changes elsewhere first: ``pbnb.backplane.SharedCacheable`` appends
        them to a log in Redis, and sends each back out with ``send_packed``
        once the log has put it in order.
        """
        if not self._watchers():
            return 0
        payload = _pack_for_everyone(args, kwargs)
        if payload is None:
            return self._broadcast(name, None, lambda perspective: (args, kwargs), skip)
        return self._broadcast(name, payload, None, skip)

    def send_packed(self, name: str, payload: bytes, skip: Any = None) -> int:
        """Run ``observe_<name>`` on every copy but ``skip``'s, its arguments packed already.

        ``payload`` is ``[args, kwargs]`` as one msgpack array of plain data
        (no references, copies, tuples or ext types: the bytes ``notify`` would
        send), written unchanged into each observer's frame. Returns how many
        observers were told.
        """
        return self._broadcast(name, payload, None, skip)

    def notify_each(self, name: str, arguments_for: Callable[[Any], CallArguments]) -> int:
        """Like ``notify``, with arguments chosen per observer's perspective.

        ``arguments_for(perspective)`` returns ``(args, kwargs)``, or None to
        leave that observer out.
        """
        return self._broadcast(name, None, arguments_for, None)

    def _broadcast(
        self,
        name: str,
        payload: bytes | None,
        arguments_for: Callable[[Any], CallArguments] | None,
        skip: Any,
    ) -> int:
        """Send ``name`` to all but ``skip``: ``payload`` packed once, or arguments per perspective.

        Returns how many observers were told. Observers whose connection is
        gone are dropped. If one send fails (say, a peer with a smaller frame
        limit), the others still go out and the first such error is raised
        afterwards.
        """
        watchers = self._watchers()
        # A snapshot (sends may drop observers), each with its perspective: a dict, so
        # the packed case walks its keys and builds no pair per observer.
        observers = dict(watchers) if skip is None else {o: p for o, p in watchers.items() if o is not skip}
        untold = 0  # counted instead of those told: the loop's common case does no sum
        failure: Exception | None = None
        # The header's bytes around each observer's id, packed once with the payload.
        packed = None if payload is None else PackedCall(Kind.OBSERVE, name, payload, PLAIN)
        # One loop with the packed case written inline: with a thousand
        # observers, a helper call per observer is a noticeable share of a broadcast.
        for observer in observers:
            if observer._broker.disconnected:
                del watchers[observer]
                untold += 1
                continue
            try:
                if packed is not None:
                    observer._broker.invoker.call_packed(observer, name, packed)
                else:
                    call = arguments_for(observers[observer])  # type: ignore[misc]
                    if call is None:
                        untold += 1
                        continue
                    args, kwargs = call
                    observer.callRemoteNoAnswer(name, *args, **kwargs)
            except DeadReferenceError:
                untold += 1
                watchers.pop(observer, None)
            except Exception as exc:
                untold += 1
                failure = failure or exc
        if failure is not None:
            raise failure
        return len(observers) - untold

    def update(self, **fields: Any) -> int:
        """Assign several observed fields and broadcast them as one ``observe_update``."""
        unknown = sorted(set(fields) - self._pb_field_set)
        if unknown:
            raise AttributeError(
                f"{type(self).__qualname__}.update() got {unknown}, which are not in observed_fields"
            )
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        return self.notify("update", fields)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in self._pb_field_set:
            self.notify("set", name, value)


class WritableCacheable(ObservedCacheable):
    """An ObservedCacheable whose ``writable_fields`` the observing peers may set.

    Each copy's state is the ``observed_fields`` dict plus a field writer under
    ``WRITER_KEY`` (``pbnb.notebook.TraitCache`` uses it for traits tagged
    ``to_owner``). Override ``accept_write(name, value)`` to check or convert a
    peer's value (raise ``pbnb.Error`` to refuse it); the value it returns is
    assigned and broadcast like any ``observe_set``.
    """

    #: Fields a peer may set; each must also be in ``observed_fields``.
    writable_fields: ClassVar[tuple[str, ...]] = ()

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        """Record ``observer``; its state carries a field writer made for it."""
        state = super().getStateToCacheAndObserveFor(perspective, observer)
        if not isinstance(state, dict):
            raise TypeError(f"{type(self).__qualname__} must cache a dict state to accept writes")
        return {**state, WRITER_KEY: FieldWriter(self, observer)}

    def accept_write(self, name: str, value: Any) -> Any:
        """Check a peer's new value for ``name``; return the value to assign."""
        return value

    def write_from_peer(self, name: str, value: Any, origin: Any) -> int:
        """Apply a peer's write and broadcast it; return how many observers were told.

        ``origin`` (the writer's observer) is told too only if ``accept_write``
        changed the value: it already shows what it sent.
        """
        if name not in self.writable_fields or name not in self.observed_fields:
            raise ReadOnlyField(f"{type(self).__qualname__}.{name} cannot be set by a peer")
        accepted = self.accept_write(name, value)
        object.__setattr__(self, name, accepted)  # not __setattr__: that would tell the origin too
        return self.send_change("set", (name, accepted), {}, origin if same_value(accepted, value) else None)


def same_value(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are of one type and equal: then an observer showing ``a`` needs no ``b``.

    A value whose ``__eq__`` raises counts as different (it is sent again).
    """
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


class _PerConnection(Exception):
    """The arguments name something only a connection's own tables can encode."""


class _NoTables:
    def __getattr__(self, name: str) -> Any:
        raise _PerConnection(name)


_SHARED_ENCODER = Encoder(_NoTables(), Limits().max_depth)


def _pack_for_everyone(args: tuple, kwargs: dict[str, Any]) -> bytes | None:
    """``[args, kwargs]`` packed once for every connection, or None if each needs its own encoding."""
    value = [list(args), kwargs]
    if needs_graph(value):
        return None  # copies and shared objects depend on the connection and perspective
    try:
        mode, payload = _SHARED_ENCODER.encode(value, None)
    except _PerConnection:
        return None  # references are numbered per connection
    return payload if mode == PLAIN else None


def _public_name(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and not name.startswith("_")


class ObservedRemoteCache(RemoteCache):
    """The receiving side of an ObservedCacheable: applies ``observe_set``/``observe_update``.

    Declare ``observed_fields`` to accept changes to those names only; without
    it, any public attribute name is accepted. Override ``changed(fields)`` to
    react after each change has been applied.
    """

    observed_fields: ClassVar[tuple[str, ...]] = ()

    def observe_set(self, name: str, value: Any) -> None:
        """The owner assigned one field."""
        # The quick twin of _apply for one accepted field (every assignment on the owner).
        accepted = self.observed_fields
        if name in accepted if accepted else _public_name(name):
            self.__dict__[name] = value
            self.changed({name: value})
        else:
            self._apply({name: value})  # raises, saying why

    def observe_update(self, fields: dict[str, Any]) -> None:
        """The owner assigned several fields at once."""
        self._apply(fields)

    def _apply(self, fields: dict[str, Any]) -> None:
        if not isinstance(fields, dict):
            kind = type(fields).__name__
            raise TypeError(f"{type(self).__qualname__} expects a dict of changes, got {kind}")
        accepted = self.observed_fields
        for name in fields:
            allowed = name in accepted if accepted else _public_name(name)
            if not allowed:
                raise AttributeError(f"{type(self).__qualname__} does not accept a remote change to {name!r}")
        self.__dict__.update(fields)
        self.changed(fields)

    def changed(self, fields: dict[str, Any]) -> None:
        """Called after ``fields`` (name -> new value) were applied; does nothing by default."""
