"""RemoteReference: the local handle for an object that lives on the peer.

A RemoteReference belongs to one broker and names one export id there. The
broker hands out at most one live RemoteReference per remote object, so two
handles for the same object are the same handle; equality and hashing go by
(broker, id) all the same. Calls go through ``broker.invoker``, the driver
(an ``Invoker``), so this module stays free of I/O.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from .wire import Kind, PackedCall

if TYPE_CHECKING:
    from .broker import Broker


class Invoker(Protocol):
    """What a driver provides so that ``RemoteReference.callRemote`` works.

    The driver owns the I/O: each method queues the call on ``ref.broker``
    (``Broker.call``, ``call_packed``, ``request_description``) with a token
    it settles when the answer arrives, and sees that the bytes are sent.
    ``pbnb.aio.connection.Connection`` is the asyncio one; ``tests/pair.py`` has a
    synchronous one.
    """

    def call(self, ref: RemoteReference, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Start a call; return what the caller awaits (or inspects)."""

    def call_no_answer(
        self, ref: RemoteReference, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Send a call whose answer nobody wants."""

    def call_packed(self, ref: CacheObserver, name: str, payload: bytes | PackedCall) -> None:
        """Send a no-answer call whose ``[args, kwargs]`` is already packed (a broadcast)."""

    def describe(self, ref: RemoteReference) -> Any:
        """Ask the peer to describe ``ref``; return what the caller awaits."""


class Undriven:
    """The invoker of a broker no driver has taken yet: every call says so."""

    def _refuse(self, *args: Any) -> Any:
        raise RuntimeError("this broker has no driver yet: set broker.invoker (see reference.Invoker)")

    call = call_no_answer = call_packed = describe = _refuse


class RemoteReference:
    """A reference to an object on the other side of a connection."""

    __slots__ = ("__weakref__", "_broker", "_disconnect_callbacks", "_id")
    _kind = Kind.CALL

    def __init__(self, broker: Broker, export_id: int):
        self._broker = broker
        self._id = export_id
        self._disconnect_callbacks: list[Callable[[RemoteReference], Any]] | None = None

    def callRemote(self, _name: str, /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Call ``remote_<name>`` (or the flavor's prefix) on the remote object."""
        return self._broker.invoker.call(self, _name, args, kwargs)

    def callRemoteNoAnswer(self, _name: str, /, *args: Any, **kwargs: Any) -> None:
        """Call a remote method without asking for an answer (fire and forget)."""
        self._broker.invoker.call_no_answer(self, _name, args, kwargs)

    @property
    def broker(self) -> Broker:
        """The connection's protocol state this reference belongs to (its ``peer_name``, ``invoker``)."""
        return self._broker

    @property
    def export_id(self) -> int:
        """The number the peer gave this object on this connection (shown in displays)."""
        return self._id

    @property
    def remote(self) -> _MethodProxy:
        """Attribute-style calls: ``await ref.remote.hello("ada")``."""
        return _MethodProxy(self)

    def describe(self) -> Awaitable[dict[str, Any]]:
        """Ask the peer what this object offers.

        The answer is ``{"type": class name, "methods": [{"name", "signature",
        "doc", "is_async"}, ...]}``; the names also feed ``ref.remote`` completion.
        """
        return self._broker.invoker.describe(self)

    @property
    def description(self) -> dict[str, Any] | None:
        """The answer of this reference's last ``describe()``, or None if it was never described."""
        return self._broker.description_of(self)

    def notifyOnDisconnect(self, callback: Callable[[RemoteReference], Any]) -> None:
        """Call ``callback(self)`` once when this reference's connection is lost."""
        if self._disconnect_callbacks is None:
            self._disconnect_callbacks = []
        self._disconnect_callbacks.append(callback)

    def dontNotifyOnDisconnect(self, callback: Callable[[RemoteReference], Any]) -> None:
        """Remove a callback added with notifyOnDisconnect (no error if absent)."""
        if self._disconnect_callbacks and callback in self._disconnect_callbacks:
            self._disconnect_callbacks.remove(callback)

    @property
    def connected(self) -> bool:
        """Whether the connection this reference travels over is still up."""
        return not self._broker.disconnected

    def _fire_disconnect(self) -> list[tuple[Callable[..., Any], BaseException]]:
        callbacks, self._disconnect_callbacks = self._disconnect_callbacks or [], None
        failures: list[tuple[Callable[..., Any], BaseException]] = []
        for callback in callbacks:
            try:
                callback(self)
            except Exception as exc:  # one bad callback must not stop the others
                failures.append((callback, exc))
        return failures

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteReference) or type(other) is not type(self):
            return NotImplemented
        return other._broker is self._broker and other._id == self._id

    def __hash__(self) -> int:
        return hash((id(self._broker), self._id, self._kind))

    def __repr__(self) -> str:
        state = "" if self.connected else " disconnected"
        return f"<{type(self).__name__} {self._id} at {self._broker.peer_name}{state}>"


class CacheObserver(RemoteReference):
    """The owner's handle on one peer's RemoteCache: ``callRemote`` runs ``observe_`` methods."""

    __slots__ = ()
    _kind = Kind.OBSERVE

    # The broker makes one observer per copy the peer builds, and a copy rebuilt
    # after the drop race gets a new one under the same cache id: identity is
    # what tells them apart.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def callRemotePacked(self, _name: str, payload: bytes, /) -> None:
        """Run ``observe_<_name>`` on the copy, without an answer, with arguments packed once for many.

        ``payload`` is ``[args, kwargs]`` as PLAIN msgpack naming nothing of
        any connection's tables (``ObservedCacheable.notify`` makes it).
        """
        self._broker.invoker.call_packed(self, _name, payload)


class _MethodProxy:
    __slots__ = ("_ref",)

    def __init__(self, ref: RemoteReference):
        self._ref = ref

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("__"):
            raise AttributeError(name)
        ref = self._ref

        def call(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            return ref.callRemote(name, *args, **kwargs)

        call.__name__ = call.__qualname__ = name
        _document(call, ref, name)
        return call

    def __dir__(self) -> list[str]:
        return list(self._ref._broker.known_methods(self._ref))


def _document(call: Any, ref: RemoteReference, name: str) -> None:
    """Give ``call`` the remote method's signature and docstring, for help and the inspector."""
    broker = ref._broker
    call.__signature__ = _ANY_ARGUMENTS
    if broker.description_of(ref) is None:
        call.__doc__ = f"Calls {name!r} on the peer (not described yet: ref.describe() asks what it offers)."
        return
    method = broker.method_description(ref, name)
    if method is None:
        offered = ", ".join(broker.known_methods(ref)) or "none"
        call.__doc__ = f"The peer's object has no remote method {name!r} (it offers: {offered})."
        return
    kind = "async remote method" if method.get("is_async") else "remote method"
    head = f"{kind} {name}{method['signature']} on the peer; await the call for its result."
    body = method.get("docstring") or method.get("doc") or ""
    call.__doc__ = f"{head}\n\n{body}" if body else head
    signature = _signature(method["signature"])
    if signature is not None:
        call.__signature__ = signature


_ANY_ARGUMENTS = inspect.Signature(
    [
        inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
        inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
    ]
)


class _Text:
    """An annotation or default shown exactly as the peer wrote it."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _signature(text: str) -> inspect.Signature | None:
    """An inspect.Signature from the peer's signature text, names and defaults kept as text."""
    try:
        tree = ast.parse(f"def _f{text}: pass").body[0]
    except SyntaxError:
        return None
    assert isinstance(tree, ast.FunctionDef)
    spec = tree.args

    def annotation(node: ast.expr | None) -> Any:
        return inspect.Parameter.empty if node is None else _Text(ast.unparse(node))

    params = []
    positional = [*spec.posonlyargs, *spec.args]
    defaults = [None] * (len(positional) - len(spec.defaults)) + list(spec.defaults)
    for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if index < len(spec.posonlyargs)
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        params.append(_parameter(arg, kind, default, annotation))
    if spec.vararg:
        params.append(_parameter(spec.vararg, inspect.Parameter.VAR_POSITIONAL, None, annotation))
    for arg, default in zip(spec.kwonlyargs, spec.kw_defaults, strict=True):
        params.append(_parameter(arg, inspect.Parameter.KEYWORD_ONLY, default, annotation))
    if spec.kwarg:
        params.append(_parameter(spec.kwarg, inspect.Parameter.VAR_KEYWORD, None, annotation))
    try:
        return inspect.Signature(params, return_annotation=annotation(tree.returns))
    except ValueError:
        return None


def _parameter(arg: ast.arg, kind: Any, default: ast.expr | None, annotation: Any) -> inspect.Parameter:
    value = inspect.Parameter.empty if default is None else _Text(ast.unparse(default))
    return inspect.Parameter(arg.arg, kind, default=value, annotation=annotation(arg.annotation))
