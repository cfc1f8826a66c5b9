"""The flavors: how a local object behaves when it is sent to a peer.

* ``Referenceable`` (and ``Root``): sent as a reference; the peer calls its
  ``remote_`` methods.
* ``Viewable``: sent as a reference bound to the receiving perspective; its
  ``view_`` methods get that perspective first.
* ``Avatar``: what a login hands out; its ``perspective_`` methods run on behalf
  of the logged-in user.
* ``Copyable``: sent by value; the receiver rebuilds it as the ``RemoteCopy``
  class registered for it.
* ``Cacheable``: sent by value once per connection, then kept up to date through
  an observer; the receiver holds a ``RemoteCache`` whose ``observe_`` methods
  the owner calls.

This module never imports the broker: it only states what each flavor offers,
through a few ``_pb_`` hooks the broker calls.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable


def _callable_attribute(obj: Any, name: str) -> Callable[..., Any] | None:
    """The named method of ``obj``, or None when it is missing or not callable."""
    method = getattr(obj, name, None)
    return method if callable(method) else None


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Referenceable:
    """An object the peer can call through a RemoteReference (``remote_`` methods)."""

    remote_prefix: ClassVar[str] = "remote_"

    def _pb_method(self, name: str, perspective: Any) -> Callable[..., Any] | None:
        # _callable_attribute written out: this runs for every call received.
        method = getattr(self, self.remote_prefix + name, None)
        return method if callable(method) else None

    def _pb_perspective(self, default: Any) -> Any:
        """The perspective that calls on this object run under."""
        return default

    def _pb_exported_for(self, perspective: Any) -> Referenceable:
        """The object actually entered in the export table for this perspective."""
        return self

    def _pb_original(self) -> Any:
        """What a reference to this export resolves to when it comes back."""
        return self


@runtime_checkable
class IPBRoot(Protocol):
    """What ``pb.serve`` can serve: something that gives each connection its root object.

    ``rootObject(connection)`` runs once per connection (``connection`` is the
    driver's, e.g. ``pbnb.aio.connection.Connection``) and returns the Referenceable the
    peer gets from ``getRootObject()``. A ``Root`` returns itself; a
    ``pbnb.cred.Portal`` returns a login root made for that connection.
    """

    def rootObject(self, connection: Any) -> Referenceable:
        """The root object for ``connection``."""
        ...


class Root(Referenceable):
    """The object a server hands to every client that asks for its root.

    Override ``rootObject(connection)`` to hand each connection another object.
    """

    def rootObject(self, connection: Any) -> Referenceable:
        """The root object for ``connection``: this one."""
        return self


class Avatar(Referenceable):
    """A user's perspective: the object a login returns (``perspective_`` methods).

    Calls on an avatar, and everything sent in their answers, run under that
    avatar's perspective.
    """

    remote_prefix: ClassVar[str] = "perspective_"

    def _pb_perspective(self, default: Any) -> Any:
        return self


class Viewable(Referenceable):
    """A Referenceable whose ``view_`` methods receive the caller's perspective first.

    The perspective is the one the reference was sent under, fixed by the side
    that owns the object, so a peer cannot forge it.
    """

    remote_prefix: ClassVar[str] = "view_"

    def _pb_exported_for(self, perspective: Any) -> Referenceable:
        return ViewPoint(self, perspective)


class ViewPoint(Referenceable):
    """A Viewable seen from one perspective; made by the broker, one per pair."""

    __slots__ = ("perspective", "viewable")

    def __init__(self, viewable: Viewable, perspective: Any):
        self.viewable = viewable
        self.perspective = perspective

    def _pb_method(self, name: str, perspective: Any) -> Callable[..., Any] | None:
        method = _callable_attribute(self.viewable, "view_" + name)
        if method is None:
            return None
        bound_perspective = self.perspective

        def call_with_perspective(*args: Any, **kwargs: Any) -> Any:
            return method(bound_perspective, *args, **kwargs)

        call_with_perspective.__wrapped__ = method  # type: ignore[attr-defined]
        return call_with_perspective

    def _pb_perspective(self, default: Any) -> Any:
        return self.perspective

    def _pb_original(self) -> Any:
        return self.viewable

    def _pb_describe_target(self) -> Any:
        return self.viewable

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ViewPoint)
            and other.viewable is self.viewable
            and other.perspective is self.perspective
        )

    def __hash__(self) -> int:
        return hash((id(self.viewable), id(self.perspective)))


class Copyable:
    """An object sent by value: the receiver gets the RemoteCopy registered for it."""

    def getTypeToCopyFor(self, perspective: Any) -> str:
        """The type name the receiver looks up in its registry."""
        return _qualified_name(type(self))

    def getStateToCopyFor(self, perspective: Any) -> Any:
        """The state to send to ``perspective``; by default ``getStateToCopy()``."""
        return self.getStateToCopy()

    def getStateToCopy(self) -> Any:
        """The state to send; by default a copy of ``__dict__`` (and ``args`` for exceptions)."""
        state = dict(self.__dict__)
        if isinstance(self, BaseException):
            state["__args__"] = self.args
        return state


class RemoteCopy:
    """The receiving side of a Copyable: built without ``__init__``, then given its state."""

    def setCopyableState(self, state: Any) -> None:
        """Take the state the owner sent; by default it becomes ``__dict__``."""
        if not isinstance(state, dict):
            raise TypeError(
                f"{type(self).__qualname__} got a {type(state).__name__} state; "
                "override setCopyableState to accept it"
            )
        state = dict(state)
        if isinstance(self, BaseException) and "__args__" in state:
            BaseException.__setattr__(self, "args", tuple(state.pop("__args__")))
        self.__dict__.update(state)


class Cacheable(Copyable):
    """An object copied to each peer once, then updated through observers.

    Override ``getStateToCacheAndObserveFor`` to record the observer and return
    the state, and ``stoppedObserving`` to forget it; ``pbnb.ObservedCacheable``
    does that bookkeeping for you.
    """

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        """Record ``observer`` and return the state for ``perspective``."""
        return self.getStateToCopyFor(perspective)

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        """The peer let go of its copy (or disconnected): forget ``observer``."""


class RemoteCache(RemoteCopy):
    """The receiving side of a Cacheable; the owner calls its ``observe_`` methods."""

    def connectionLost(self) -> None:
        """The connection this copy came over is gone: its owner will send no more changes.

        Override it to show that the copy is stale; it runs once, on the loop's thread.
        """

    def _pb_method(self, name: str, perspective: Any) -> Callable[..., Any] | None:
        # Written out: this runs for every update.
        method = getattr(self, _OBSERVE_NAMES.get(name) or _observe_name(name), None)
        return method if callable(method) else None


# "observe_" + name, interned, for the names updates have used: a string made anew
# for each update would have its hash computed and miss the type's attribute cache.
_OBSERVE_NAMES: dict[str, str] = {}
_KEPT_NAMES = 1024  # enough for any class; a peer sending made-up names cannot grow it beyond


def _observe_name(name: str) -> str:
    attribute = "observe_" + name
    if len(_OBSERVE_NAMES) < _KEPT_NAMES:
        attribute = _OBSERVE_NAMES[name] = sys.intern(attribute)
    return attribute


class CopyRegistry:
    """Which type names a side accepts as copies, and the class each becomes.

    This is the security allow-list: a copy of a type that is not registered is
    refused with ``InsecureJelly``. It also lists the plain classes this side
    agreed to send and receive by their ``__dict__`` (``allowInstancesOf``).
    """

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}
        self._instances: dict[type, str] = {}  # plain class -> the name it travels under

    def register(self, class_or_name: type | str, remote_class: type) -> None:
        """Accept copies of ``class_or_name`` and rebuild them as ``remote_class``."""
        if not (isinstance(remote_class, type) and issubclass(remote_class, RemoteCopy)):
            raise TypeError(f"{remote_class!r} must be a RemoteCopy or RemoteCache subclass")
        name = class_or_name if isinstance(class_or_name, str) else _qualified_name(class_or_name)
        self._classes[name] = remote_class

    def allowInstancesOf(self, *classes: type) -> None:
        """Send and accept plain instances of ``classes`` by their ``__dict__``.

        Twisted's ``jelly.globalSecurity.allowInstancesOf``, made explicit: an
        instance of exactly one of these classes (not a subclass) travels as a
        copy under its qualified name, and one arriving is rebuilt as the same
        class, without ``__init__``, its ``__dict__`` updated from what was sent.
        Both sides must allow the class: the sender to send it, the receiver to
        accept it. Prefer ``Copyable``/``RemoteCopy``, which say what is sent.
        """
        for cls in classes:
            if not isinstance(cls, type) or issubclass(cls, (Referenceable, Copyable, RemoteCopy)):
                raise TypeError(f"{cls!r} must be a plain class (flavors say how they travel themselves)")
            if cls.__module__ == "builtins" or "__dict__" not in dir(cls):
                raise TypeError(f"instances of {cls.__qualname__} have no __dict__ to send")
            name = _qualified_name(cls)
            self._instances[cls] = name
            self._classes[name] = cls

    def unregister(self, class_or_name: type | str) -> None:
        """Stop accepting copies of ``class_or_name`` (and sending it, if it was a plain class)."""
        name = class_or_name if isinstance(class_or_name, str) else _qualified_name(class_or_name)
        cls = self._classes.pop(name, None)
        self._instances.pop(cls, None)  # type: ignore[arg-type]

    def lookup(self, name: str) -> type | None:
        """The class registered for ``name``, or None if copies of it are refused."""
        return self._classes.get(name)

    def instance_name(self, cls: type) -> str | None:
        """The name plain instances of ``cls`` are sent under, or None if they may not be sent."""
        return self._instances.get(cls)

    def accepts_instances(self, cls: type) -> bool:
        """Whether ``cls`` is a plain class whose instances this side accepts."""
        return cls in self._instances


default_registry = CopyRegistry()


def setUnjellyableForClass(class_or_name: type | str, remote_class: type) -> None:
    """Allow copies of ``class_or_name`` to arrive, rebuilt as ``remote_class``."""
    default_registry.register(class_or_name, remote_class)


def allowInstancesOf(*classes: type) -> None:
    """Send and accept plain instances of ``classes`` (see ``CopyRegistry.allowInstancesOf``)."""
    default_registry.allowInstancesOf(*classes)


class _Annotation:
    """Shows a string annotation (``from __future__ import annotations``) without quotes."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _unquoted(annotation: Any) -> Any:
    return _Annotation(annotation) if isinstance(annotation, str) else annotation


def remote_method(obj: Referenceable, name: str) -> Callable[..., Any] | None:
    """The method a peer's call of ``name`` runs on ``obj`` (its flavor's prefix), or None."""
    return obj._pb_method(name, None) if isinstance(name, str) and name.isidentifier() else None


def describe_methods(obj: Any) -> list[dict[str, Any]]:
    """Describe the remotely callable methods of an exported object.

    Only names with the object's own dispatch prefix are listed, so nothing
    private leaks; signatures drop the perspective argument of ``view_`` methods.
    """
    target = obj._pb_describe_target() if isinstance(obj, ViewPoint) else obj
    prefix = "view_" if isinstance(obj, ViewPoint) else getattr(obj, "remote_prefix", "remote_")
    described = []
    for attr in sorted(dir(type(target))):
        if not attr.startswith(prefix) or len(attr) == len(prefix):
            continue
        method = getattr(target, attr, None)
        if not callable(method):
            continue
        try:
            signature = inspect.signature(method)
            params = [p.replace(annotation=_unquoted(p.annotation)) for p in signature.parameters.values()]
            if prefix == "view_" and params:
                params = params[1:]
            returns = _unquoted(signature.return_annotation)
            text = str(signature.replace(parameters=params, return_annotation=returns))
        except (TypeError, ValueError):
            text = "(...)"
        doc = inspect.getdoc(method) or ""
        described.append(
            {
                "name": attr[len(prefix) :],
                "signature": text,
                "doc": doc.strip().splitlines()[0] if doc.strip() else "",
                "docstring": doc.strip(),
                "is_async": inspect.iscoroutinefunction(method),
            }
        )
    return described


def survives_disconnect(method: Any) -> Any:
    """Mark a remote method (a coroutine) whose work must finish even if its caller leaves.

    When a connection ends, the remote coroutines its peer started are cancelled,
    since their answers could go nowhere; one marked with this decorator runs on,
    and its result is dropped. A generator's stream is closed all the same: it
    has nowhere to send its items.
    """
    method._pb_survives_disconnect = True
    return method
