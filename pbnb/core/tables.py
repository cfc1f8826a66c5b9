"""The id tables of one connection, and the counting rules that keep them exact.

Every table is named and commented in ``ReferenceTables.__init__``. Ours are
numbered by us (exports, caches we own); theirs are numbered by the peer and
only ever echoed back (imports, caches we hold). The encoder and decoder call
the public methods here (the ``serialize.Tables`` protocol) while a message is
being written or read; each change is journalled so that ``rollback()`` can
undo a message that did not go through.

A Broker owns one ReferenceTables. The tables make handles (RemoteReference,
CacheObserver) that belong to that broker, and use it to queue frames
(DECREF, DECACHE), report events and hold events back while a cache's state
is awaited.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from ..errors import DeadReferenceError, LimitExceeded, ProtocolError, SerializationError
from . import events as ev
from . import serialize
from .carried import MARKERS, carried_references
from .flavors import Referenceable, RemoteCache, Viewable, ViewPoint
from .reference import CacheObserver, RemoteReference
from .wire import Kind, Limits, Payload

if TYPE_CHECKING:
    from .broker import Broker


def _may_carry_references(data: bytes | bytearray) -> bool:
    # A one-byte search runs at memory speed (memchr), longer needles several times
    # slower: look for the markers' first bytes before the markers.
    return any(marker[:1] in data and marker in data for marker in MARKERS)


class _Export:
    __slots__ = ("count", "key", "obj", "perspective")

    def __init__(self, obj: Any, key: Any, perspective: Any):
        self.obj = obj
        self.key = key  # in _export_ids
        self.perspective = perspective  # the one it was sent to: calls on it act for it
        self.count = 0

    def undo(self, tables: ReferenceTables) -> None:
        """Take back one send journalled for a message that did not go through."""
        self.count -= 1
        if self.count == 0:
            tables.drop_export(self, notify=False)


#: What ``_pb_perspective`` is given to learn whether an export acts for a fixed perspective.
_UNBOUND = object()


class _Import:
    """Our handle on one peer object: the handle itself is weak, the count is ours."""

    __slots__ = ("count", "remote_id", "weak")

    def __init__(self, remote_id: int):
        self.remote_id = remote_id
        self.weak: weakref.ref | None = None
        self.count = 0

    def undo(self, tables: ReferenceTables) -> None:
        """Take back one arrival journalled for a message that was refused."""
        self.count -= 1


class _WeakEntry(weakref.ref):
    __slots__ = ("entry",)
    entry: _Import


class _CacheExport:
    __slots__ = ("cacheable", "count", "observer", "perspective")

    def __init__(self, cacheable: Any, perspective: Any, observer: CacheObserver):
        self.cacheable = cacheable
        self.perspective = perspective
        self.observer = observer
        self.count = 0

    def undo(self, tables: ReferenceTables) -> None:
        self.count -= 1
        if self.count == 0:
            tables.drop_cache_export(self)


class _CacheImport(_Import):
    __slots__ = ("awaiting_state", "cls", "obj_id")

    def __init__(self, remote_id: int, cls: type[RemoteCache], obj_id: int):
        super().__init__(remote_id)
        self.cls = cls
        self.obj_id = obj_id
        self.awaiting_state = False

    def undo(self, tables: ReferenceTables) -> None:
        self.count -= 1
        if self.count == 0 and tables.cache_imports.get(self.remote_id) is self:
            del tables.cache_imports[self.remote_id]
            tables.cache_import_ids.pop(self.obj_id, None)
            tables.awaited_states.discard(self.remote_id)


#: One change to the tables, undone if its message does not go through.
_Journalled = _Export | _Import | _CacheExport


class ReferenceTables:
    """Exports, imports and caches of one connection, counted per send."""

    def __init__(self, owner: Broker, limits: Limits) -> None:
        self.owner = owner
        self.limits = limits
        self.registry = owner.registry  # the copy allow-list, for the encoder
        # Set by the driver (through the broker): called when a handle dies.
        self.on_collected: Callable[[], None] | None = None
        # export id -> object we sent the peer as a reference, with its send count
        self.exports: dict[int, _Export] = {}
        # id(exported object) -> export id; (id(object), id(perspective)) for a
        # plain Referenceable sent under a login. The _Export keeps both alive.
        self._export_ids: dict[Any, int] = {}
        # (id(viewable), id(perspective)) -> its exported ViewPoint
        self.viewpoints: dict[tuple[int, int], Any] = {}
        self._next_export_id = 1
        # peer's export id -> our RemoteReference (weak) and how many times we got it
        self.imports: dict[int, _Import] = {}
        # imports whose handle died; their counts go back in the next DECREF/DECACHE
        self.collected: list[_Import] = []
        # cache id -> Cacheable we sent, with the perspective and observer it was sent for
        self.cache_exports: dict[int, _CacheExport] = {}
        # their observers (kept with them), to tell a live one by itself: a broadcast asks per observer
        self.observers: set[CacheObserver] = set()
        # id(cacheable) -> cache id
        self._cache_export_ids: dict[int, int] = {}
        self._next_cache_id = 1
        # peer's cache id -> our RemoteCache (weak) and how many times we got it
        self.cache_imports: dict[int, _CacheImport] = {}
        # id(RemoteCache) -> peer's cache id, to send a RemoteCache home
        self.cache_import_ids: dict[int, int] = {}
        # peer's cache id -> RemoteCache class, for caches we dropped whose
        # DECACHE the owner has not answered yet
        self.cache_tombstones: dict[int, type[RemoteCache]] = {}
        # observers of copies the peer let go of whose CacheReleased is queued,
        # and those whose CacheReleased went out with the latest batch of events
        # (the driver is acting on it; the broker's next next_events() call ends that)
        self.leaving: set[CacheObserver] = set()
        self.leaving_dispatched: set[CacheObserver] = set()
        # cache ids whose CACHE_STATE we wait for; events are held meanwhile
        self.awaited_states: set[int] = set()
        # undo log of the message being encoded or decoded (empty outside one)
        self._journal: list[_Journalled] = []

    def begin(self) -> None:
        """Start journalling the changes of one message."""
        self._journal = []

    def commit(self) -> None:
        """The message went through: keep its changes."""
        self._journal = []

    def rollback(self) -> None:
        """The message did not go through: undo its changes, latest first."""
        journal, self._journal = self._journal, []
        for entry in reversed(journal):
            entry.undo(self)

    def return_references(self, payload: Payload) -> None:
        """Give back the references a refused message carried (see module docstring).

        The bytes are read rather than decoded where that is cheaper
        (``carried.py``): no value is built, and values with no reference in
        them are stepped over at the speed of msgpack's skipper. Nothing runs
        when no reference can be in the bytes. A payload that is not one
        msgpack value within the limits gives nothing back: the references
        stay counted on the sender's side, which sent them.
        """
        # `in` finds no bytes in a memoryview: look in the buffer under it (a superset:
        # a false hit only costs the scan), or in a copy if that buffer cannot be searched.
        haystack = payload.obj if isinstance(payload, memoryview) else payload
        if not isinstance(haystack, (bytes, bytearray)):
            haystack = bytes(payload)
        if not _may_carry_references(haystack):
            return
        counts = carried_references(bytes(payload), self.limits)
        for (code, remote_id), count in (counts or {}).items():
            kind = Kind.DECREF if code == serialize.EXT_REMOTE else Kind.DECACHE
            self.owner._send([kind, remote_id, count])

    # ---------------------------------------------------- tables: sending side

    def _export_key(self, obj: Referenceable, perspective: Any) -> tuple[Referenceable, Any]:
        """What goes out when ``obj`` is sent to ``perspective``, and its key in ``_export_ids``."""
        target: Referenceable
        if isinstance(obj, Viewable):
            view_key = (id(obj), id(perspective))
            viewpoint = self.viewpoints.get(view_key)
            if viewpoint is None:
                viewpoint = self.viewpoints[view_key] = obj._pb_exported_for(perspective)
            target = viewpoint
        else:
            target = obj
        if perspective is not None and target._pb_perspective(_UNBOUND) is _UNBOUND:
            # It acts for whoever it is sent to (a plain Referenceable, unlike an
            # Avatar or a view): one export per perspective, so an object a user
            # reached keeps acting for that user whoever logs in later.
            return target, (id(target), id(perspective))
        return target, id(target)

    def exported(self, obj: Referenceable, perspective: Any) -> _Export | None:
        """The export entry ``obj`` has as sent to ``perspective``, if it was sent."""
        _, key = self._export_key(obj, perspective)
        export_id = self._export_ids.get(key)
        return None if export_id is None else self.exports[export_id]

    def export(self, obj: Referenceable, perspective: Any) -> int:
        """Count one send of ``obj`` and return its export id (called by the encoder)."""
        target, key = self._export_key(obj, perspective)
        export_id = self._export_ids.get(key)
        if export_id is None:
            if len(self.exports) >= self.limits.max_references:
                raise LimitExceeded(
                    f"this connection already holds {len(self.exports)} references (max_references)"
                )
            export_id = self._next_export_id
            self._next_export_id += 1
            entry = self.exports[export_id] = _Export(target, key, perspective)
            self._export_ids[key] = export_id
        else:
            entry = self.exports[export_id]
        entry.count += 1
        self._journal.append(entry)
        return export_id

    def drop_export(self, entry: _Export, *, notify: bool) -> None:
        export_id = self._export_ids.pop(entry.key, None)
        if export_id is not None:
            del self.exports[export_id]
        if isinstance(entry.obj, ViewPoint):
            self.viewpoints.pop((id(entry.obj.viewable), id(entry.obj.perspective)), None)
        if notify:
            self.owner._emit(ev.ObjectReleased(entry.obj))

    def send_home(self, ref: RemoteReference) -> msgpack.ExtType:
        """Encode a RemoteReference (or observer) that names one of the peer's objects."""
        if ref._broker is not self.owner:
            raise SerializationError(
                f"{ref!r} belongs to another connection; pbnb does not forward references between peers"
            )
        if self.owner.disconnected:
            raise DeadReferenceError(f"{ref!r} is dead: its connection is gone")
        if isinstance(ref, CacheObserver):
            entry = self.cache_exports.get(ref._id)
            if entry is None or entry.observer is not ref:
                raise DeadReferenceError(f"the peer no longer holds cache {ref._id}")
            return self._count_cache_send(ref._id, entry)
        return msgpack.ExtType(serialize.EXT_YOURS, ref._id.to_bytes(8, "big"))

    def send_cacheable(self, cacheable: Any, perspective: Any) -> tuple[int, Any]:
        """Count one send of ``cacheable``; return (cache id, state on first send else None)."""
        cache_id = self._cache_export_ids.get(id(cacheable))
        if cache_id is not None:
            entry = self.cache_exports[cache_id]
            entry.count += 1
            self._journal.append(entry)
            return cache_id, None
        if len(self.cache_exports) >= self.limits.max_caches:
            raise LimitExceeded(
                f"this connection already holds {len(self.cache_exports)} caches (max_caches)"
            )
        cache_id = self._next_cache_id
        self._next_cache_id += 1
        entry = _CacheExport(cacheable, perspective, CacheObserver(self.owner, cache_id))
        self.cache_exports[cache_id] = entry
        self.observers.add(entry.observer)
        self._cache_export_ids[id(cacheable)] = cache_id
        entry.count = 1
        self._journal.append(entry)
        state = cacheable.getStateToCacheAndObserveFor(perspective, entry.observer)
        return cache_id, state

    def _count_cache_send(self, cache_id: int, entry: _CacheExport) -> msgpack.ExtType:
        entry.count += 1
        self._journal.append(entry)
        return msgpack.ExtType(serialize.EXT_CACHED, cache_id.to_bytes(8, "big"))

    def send_cache_home(self, cache: RemoteCache) -> msgpack.ExtType:
        """Encode a RemoteCache we hold: it arrives as the peer's own Cacheable."""
        cache_id = self.cache_import_ids.get(id(cache))
        entry = self.cache_imports.get(cache_id) if cache_id is not None else None
        if cache_id is None or entry is None or entry.weak is None or entry.weak() is not cache:
            raise SerializationError(f"{cache!r} is not a cache held over this connection")
        return msgpack.ExtType(serialize.EXT_YOUR_CACHEABLE, cache_id.to_bytes(8, "big"))

    def drop_cache_export(self, entry: _CacheExport) -> None:
        cache_id = self._cache_export_ids.pop(id(entry.cacheable), None)
        if cache_id is not None:
            del self.cache_exports[cache_id]
        self.observers.discard(entry.observer)
        self.release_observer(entry)

    def release_observer(self, entry: _CacheExport) -> None:
        """The peer let go of ``entry``'s copy: queue the owner's ``stoppedObserving``.

        Until the driver has acted on that event, the owner may still update the
        observer (from a call that came in the same read, say): such updates are
        dropped quietly rather than refused (``observer_leaving``).
        """
        self.leaving.add(entry.observer)
        self.owner._emit(ev.CacheReleased(entry.cacheable, entry.perspective, entry.observer))

    def observer_leaving(self, observer: CacheObserver) -> bool:
        """Whether the peer let go of ``observer``'s copy and stoppedObserving may not have run yet."""
        return observer in self.leaving or observer in self.leaving_dispatched

    # -------------------------------------------------- tables: receiving side

    def receive_reference(self, remote_id: int) -> RemoteReference:
        """Count one arrival of the peer's object ``remote_id``; return its handle."""
        entry = self.imports.get(remote_id)
        ref = entry.weak() if entry is not None and entry.weak is not None else None
        if entry is None or ref is None:
            if len(self.imports) >= self.limits.max_references:
                raise LimitExceeded(
                    f"peer sent more than {self.limits.max_references} live references (max_references)"
                )
            entry = self.imports[remote_id] = _Import(remote_id)
            ref = RemoteReference(self.owner, remote_id)
            entry.weak = self._watch(ref, entry)
        entry.count += 1
        self._journal.append(entry)
        return ref

    def _watch(self, handle: Any, entry: _Import) -> weakref.ref:
        weak = _WeakEntry(handle, self._handle_died)
        weak.entry = entry
        return weak

    def _handle_died(self, weak: _WeakEntry) -> None:
        # Runs inside the garbage collector, maybe on another thread: record only.
        self.collected.append(weak.entry)
        if self.on_collected is not None:
            self.on_collected()

    def receive_home(self, export_id: int) -> Any:
        """Resolve one of our own exports that the peer sent back."""
        entry = self.exports.get(export_id)
        if entry is None:
            raise ProtocolError(f"peer sent back object {export_id}, which this side does not export")
        return entry.obj._pb_original()

    def receive_cache(self, cache_id: int, cls: type[RemoteCache]) -> Any:
        """First arrival of a cache: make its RemoteCache (without __init__)."""
        entry = self.cache_imports.get(cache_id)
        obj = entry.weak() if entry is not None and entry.weak is not None else None
        if obj is not None:
            raise ProtocolError(f"peer defined cache {cache_id} twice")
        if len(self.cache_imports) >= self.limits.max_caches:
            raise LimitExceeded(
                f"this connection already holds {len(self.cache_imports)} caches (max_caches)"
            )
        return self._new_cache_import(cache_id, cls)

    def _new_cache_import(self, cache_id: int, cls: type[RemoteCache]) -> Any:
        obj = cls.__new__(cls)
        entry = self.cache_imports[cache_id] = _CacheImport(cache_id, cls, id(obj))
        entry.weak = self._watch(obj, entry)
        entry.count = 1
        self.cache_import_ids[id(obj)] = cache_id
        self._journal.append(entry)
        return obj

    def receive_cached(self, cache_id: int) -> Any:
        """A later arrival of a cache; see the module docstring for the orphan case."""
        entry = self.cache_imports.get(cache_id)
        obj = entry.weak() if entry is not None and entry.weak is not None else None
        if entry is not None and obj is not None:
            entry.count += 1
            self._journal.append(entry)
            return obj
        cls = self.cache_tombstones.get(cache_id) or (entry.cls if entry is not None else None)
        if cls is None:
            raise ProtocolError(f"peer referred to cache {cache_id}, which this side never received")
        obj = self._new_cache_import(cache_id, cls)
        self.cache_imports[cache_id].awaiting_state = True
        self.awaited_states.add(cache_id)
        self.owner._hold_events()
        return obj

    def receive_home_cacheable(self, cache_id: int) -> Any:
        """Resolve a RemoteCache the peer sent back: our own Cacheable."""
        entry = self.cache_exports.get(cache_id)
        if entry is None:
            raise ProtocolError(f"peer sent back cache {cache_id}, which this side does not have")
        return entry.cacheable

    def flush_collected(self) -> list[int]:
        """Send DECREF/DECACHE for handles that died; return the peer's ids of the references gone."""
        gone = []
        while self.collected:
            entry = self.collected.pop()
            is_cache = isinstance(entry, _CacheImport)
            table = self.cache_imports if is_cache else self.imports
            if table.get(entry.remote_id) is entry:
                del table[entry.remote_id]
                if isinstance(entry, _CacheImport):
                    self.cache_tombstones[entry.remote_id] = entry.cls
                    if self.cache_import_ids.get(entry.obj_id) == entry.remote_id:
                        del self.cache_import_ids[entry.obj_id]
                else:
                    gone.append(entry.remote_id)
            if entry.count > 0 and not self.owner.disconnected:
                self.owner._send([Kind.DECACHE if is_cache else Kind.DECREF, entry.remote_id, entry.count])
                entry.count = 0
        return gone

    def release_all(self) -> None:
        """The connection is gone: drop every export and cache (with their events), forget the rest."""
        self._journal = []
        for entry in list(self.exports.values()):
            self.drop_export(entry, notify=True)
        for cache in list(self.cache_exports.values()):
            self.drop_cache_export(cache)
        self.imports.clear()
        self.cache_imports.clear()
        self.cache_import_ids.clear()
        self.cache_tombstones.clear()
        self.collected.clear()
        self.viewpoints.clear()

    def sizes(self) -> dict[str, int]:
        """How many entries each id table holds."""
        return {
            "exports": len(self.exports),
            "imports": len(self.imports),
            "cache_exports": len(self.cache_exports),
            "cache_imports": len(self.cache_imports),
        }
