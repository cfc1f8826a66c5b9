"""One connection's protocol state, without I/O.

Feed bytes from the peer to ``receive_data()`` and act on the events it
returns; send whatever ``data_to_send()`` returns. Calls, answers and
decrefs queue outgoing bytes the same way. Nothing here touches a socket, a
clock or an event loop, so two brokers joined by passing bytes are a complete
test bench.

State rules, all of them:

* Each side numbers the objects it exports; the peer only ever echoes those
  numbers back. Export ids, cache ids and request ids are never reused.
* An export is counted once per send. The peer counts what it received and,
  when its RemoteReference is collected, returns that count in a DECREF. The
  export is released when the count reaches zero, so a reference sent while a
  DECREF was in flight keeps the object alive.
* Caches follow the same counting with DECACHE. A cache's state cannot be
  rebuilt from an id alone, so if CACHED refs were in flight when the peer
  dropped its copy, the owner answers the DECACHE with CACHE_STATE (the old
  copy's observation ends, the new copy gets a new observer) and the peer
  holds back every event from the moment it met the orphan ref until the
  state arrives; otherwise the owner answers UNCACHED.
* Encoding and decoding a message is a transaction: export, import and cache
  counts change only if the whole message goes through. A message the
  receiver refuses is scanned for the references it carried, which go
  straight back as DECREF/DECACHE, so refusals leak nothing.
* After ``connection_lost()`` every pending call fails with PBConnectionLost,
  every export and cache is released, and every later call raises
  DeadReferenceError.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable
from typing import Any

import msgpack

from ..errors import (
    DeadReferenceError,
    InsecureJelly,
    LimitExceeded,
    NoSuchMethod,
    PBConnectionLost,
    PBError,
    PipelineError,
    ProtocolError,
    RemoteError,
    SerializationError,
    ServerFull,
)
from . import events as ev
from . import serialize
from .failure import MAX_TYPE_NAME, base_names, clip, qualified_type, read_bases, rebuild_error, text_of
from .flavors import (
    Copyable,
    CopyRegistry,
    default_registry,
    describe_methods,
)
from .pipelining import BROKEN_PROMISE, Forward, HeldAnswers, Promises, WaitingCall, is_reference
from .progress import Progress, received
from .reference import CacheObserver, Invoker, RemoteReference, Undriven
from .serialize import Decoder, Encoder
from .streaming import BATCH_BYTES, STREAMED, Batch, Receiving, Streams, Window, batch_size, item_size
from .tables import ReferenceTables
from .wire import (
    MIN_FRAME,
    NO_ANSWER,
    PREAMBLE,
    RECEIVABLE,
    BinFrame,
    ConnectionState,
    FrameHandler,
    FrameReader,
    Kind,
    Limits,
    PackedCall,
    Payload,
    encode_bin_frame,
    encode_frame,
    feed_frames,
)

_NIL = msgpack.packb(None)
_PLAIN = serialize.PLAIN
_ATOMS = serialize.ATOMS
_unpackb = msgpack.unpackb
_no_ext = serialize.refuse_ext
_tree_depth_exceeds = serialize.tree_depth_exceeds
_CallReceived = ev.CallReceived
_CALL_FIELDS = tuple(field.name for field in dataclasses.fields(ev.CallReceived))
#: Cancelled calls whose answer we still expect (the peer sends one, saying it stopped).
#: Beyond this many the oldest are forgotten, so a peer that never answers cannot grow it.
MAX_CANCELLED = 10_000
# Room for every ERROR or GOODBYE header item but the type and message texts
# (kind, request id, traceback, mode, the nil payload, length prefixes).
_ERROR_OVERHEAD = 32
# Room for every PROGRESS header item but the message (two float64, a request id, prefixes).
_PROGRESS_OVERHEAD = 48
# Where the payload's mode sits in an ERROR header.
_ERROR_MODE = 5
_NO_SUCH_METHOD = f"{NoSuchMethod.__module__}.{NoSuchMethod.__qualname__}"
_SERVER_FULL = f"{ServerFull.__module__}.{ServerFull.__qualname__}"
_AWAITING_PREAMBLE = ConnectionState.AWAITING_PREAMBLE
_CLOSING = ConnectionState.CLOSING
_CLOSED = ConnectionState.CLOSED
# Plain ints for the kinds met on every call: an IntEnum member costs an
# attribute lookup through its metaclass (50 ns) each time it is named.
_CALL = int(Kind.CALL)
_ANSWER = int(Kind.ANSWER)
_PIPELINE = int(Kind.PIPELINE)
_ITEM = int(Kind.ITEM)
# Room in a frame for an ITEM header, so that an item that fits a batch fits a frame alone.
_ITEM_OVERHEAD = 64
# Bytes values longer than this are framed with one copy (wire.encode_bin_frame).
_LARGE_BYTES = 1 << 20
# Request ids in one FINISH frame: at most 9 bytes each, within the u16 header length.
_FINISHED_PER_FRAME = 4096


#: What ``_check_call`` returns for an observer whose copy the peer let go of
#: before the owner's stoppedObserving could run.
_COPY_LEAVING = object()


class Broker:
    """The protocol state machine of one PB connection (either end: it is symmetric)."""

    # Slots, not a __dict__: an instance dict of more than 30 keys stops sharing its
    # keys, and then every attribute and method lookup on it (dozens per message)
    # misses CPython's specialized paths. A new attribute needs its name here.
    __slots__ = (
        "__weakref__",
        "_bare_limit",
        "_batch_limit",
        "_batched",
        "_calls",
        "_cancelled",
        "_decoder",
        "_describing",
        "_descriptions",
        "_encoder",
        "_events",
        "_forgotten_below",
        "_handlers_in",
        "_held_answers",
        "_held_events",
        "_inbound",
        "_max_depth",
        "_max_inbound_calls",
        "_next_request_id",
        "_out",
        "_pack_tree",
        "_peer_max_frame",
        "_perspective",
        "_promises",
        "_quick_observe",
        "_reader",
        "_running",
        "_sound_update",
        "_split",
        "_state",
        "_streams",
        "_tables",
        "disconnected",
        "invoker",
        "limits",
        "peer_name",
        "registry",
        "root",
        "send_tracebacks",
    )

    def __init__(
        self,
        root: Any = None,
        *,
        limits: Limits | None = None,
        registry: CopyRegistry | None = None,
        send_tracebacks: bool = False,
        peer_name: str = "peer",
    ):
        self.root = root
        self.limits = limits or Limits()
        self.registry = registry or default_registry
        self.send_tracebacks = send_tracebacks
        self.peer_name = peer_name
        # The perspective our own calls go out under when they are made outside
        # any remote method of this connection (see the ``perspective`` property).
        self._perspective: Any = None
        #: The driver: what makes ``RemoteReference.callRemote`` work (see ``Invoker``).
        self.invoker: Invoker = Undriven()
        #: Whether ``state`` is CLOSED (kept as a plain flag: every call tests it).
        self.disconnected = False
        # The peer's describe() answers, by its export id: asked once, kept for displays.
        self._descriptions: dict[int, dict[str, Any]] = {}
        # request id of a DESCRIBE in flight -> the export id it describes
        self._describing: dict[int, int] = {}
        # Promise pipelining (pipelining.py): the peer's answers it may still
        # pipeline on, and our calls pipelined on the peer's answers.
        self._held_answers = HeldAnswers(self.limits.max_held_answers)
        self._promises = Promises()
        # Streams (streaming.py): credit granted to us and by us.
        self._streams = Streams(self.limits)

        limits = self.limits
        # The id tables, which the codec counts sends and arrivals in.
        self._tables = ReferenceTables(self, limits)
        self._encoder = Encoder(self._tables, limits.max_depth)
        self._pack_tree = self._encoder.pack_tree
        self._decoder = Decoder(
            self._tables, self.registry, limits.max_depth, limits.max_container_len, limits.max_string_len
        )
        # A PLAIN payload this long or shorter can break no length limit (every
        # item costs at least a byte), so decode_payload may try it without hooks.
        self._bare_limit = min(limits.max_container_len, limits.max_string_len)
        self._max_depth = limits.max_depth
        self._max_inbound_calls = limits.max_inbound_calls
        # Frames for the peer, and stream Batches still taking items (made frames by data_to_send).
        self._out: list[Any] = [PREAMBLE, encode_frame([Kind.HELLO, {"max_frame": limits.max_frame}])]
        self._batched = False  # whether _out holds a Batch
        self._split = False  # whether _out may hold a BinFrame
        # The one event queue; next_events() drains it.
        self._events: list[ev.Event] = []
        self._peer_max_frame = Limits().max_frame
        self._batch_limit = min(BATCH_BYTES, self._peer_max_frame - _ITEM_OVERHEAD)  # per peer_max_frame
        # OBSERVE's handler: _on_observe, or its C twin (every observer of a broadcast runs it).
        self._quick_observe = _observe_handler(self)
        # For each state, the handlers of the kinds RECEIVABLE then (bound once).
        self._handlers_in = {
            state: {int(kind): getattr(self, _HANDLERS[kind]) for kind in kinds}
            for state, kinds in RECEIVABLE.items()
        }
        self._reader = FrameReader(
            limits.max_frame, self._handlers_in[_AWAITING_PREAMBLE], self._illegal_kind, self._on_preamble
        )
        self._state = _AWAITING_PREAMBLE

        # Events held back while a cache's state is awaited (see the module docstring).
        self._held_events: list[ev.Event] | None = None
        # our request id -> the caller's token, until ANSWER or ERROR arrives
        self._calls: dict[int, Any] = {}
        # request ids we cancelled: their late answers are decoded and dropped
        self._cancelled: dict[int, None] = {}  # calls we cancelled, oldest first, until answered
        self._forgotten_below = 0  # request ids below this may have been cancelled and forgotten
        self._next_request_id = 1
        # peer's request ids we are running and still owe an answer
        self._inbound: set[int] = set()
        # how many of those were running before the current receive_data(): calls
        # decoded together are not running yet (quick ones are answered before the
        # next batch), so only earlier ones count towards max_inbound_calls
        self._running = 0
        # The last OBSERVE header _on_observe found sound for its quick path (see there).
        self._sound_update: list | None = None

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ConnectionState:
        """Where the connection stands; ``RECEIVABLE[state]`` is what the peer may send now."""
        return self._state

    def _enter(self, state: ConnectionState) -> None:
        """The one place the state changes."""
        self._state = state
        self._reader.handlers = self._handlers_in[state]
        if state is _CLOSING or state is _CLOSED:
            self._reader.close()
        self.disconnected = state is _CLOSED

    def _on_preamble(self) -> None:
        self._enter(ConnectionState.AWAITING_HELLO)

    def _illegal_kind(self, kind: int) -> None:
        if kind not in _KNOWN_KINDS:
            raise ProtocolError(f"unknown message kind {kind}")
        if self._state is ConnectionState.AWAITING_HELLO:
            raise ProtocolError(f"peer sent message kind {kind} ({Kind(kind).name}) before HELLO")
        raise ProtocolError(f"peer sent {Kind(kind).name} while the connection is {self._state.value}")

    @property
    def perspective(self) -> Any:
        """The perspective our own calls go out under when made outside any remote method.

        Login sets it to the latest avatar logged in on this connection (and
        back when that one logs out); None before any login. Calls from the
        peer never use it: each acts for the perspective its target was sent to.
        """
        return self._perspective

    @perspective.setter
    def perspective(self, avatar: Any) -> None:
        self._perspective = avatar

    @property
    def on_collected(self) -> Callable[[], None] | None:
        """Set by the driver: called (from any thread, maybe inside the garbage collector)
        when a RemoteReference or RemoteCache dies; it must only schedule a later call
        to ``flush_collected()``."""
        return self._tables.on_collected

    @on_collected.setter
    def on_collected(self, callback: Callable[[], None] | None) -> None:
        self._tables.on_collected = callback

    def flush_collected(self) -> None:
        """Send DECREF/DECACHE for handles that died; call from the driver's thread."""
        for remote_id in self._tables.flush_collected():
            self._descriptions.pop(remote_id, None)

    def table_sizes(self) -> dict[str, int]:
        """How many entries each id table holds (for status displays and leak tests)."""
        return {
            **self._tables.sizes(),
            "pending_calls": len(self._calls),
            "inbound_calls": len(self._inbound),
            "held_answers": len(self._held_answers.held),
            "awaited_answers": len(self._held_answers.waiting),  # running calls others wait on
            "pipelined_calls": len(self._promises.sent_on),
            "promise_outcomes": len(self._promises.outcomes),
            "streams_sending": len(self._streams.credit),  # the peer's calls we stream (or it granted)
            "stream_windows": len(self._streams.windows),  # our pending calls granted a window early
            "streams_receiving": len(self._streams.receiving),  # our calls answered by an open stream
        }

    def _hold_events(self) -> None:
        """A cache's state is awaited: hold back events until it arrives."""
        if self._held_events is None:
            self._held_events = []

    @property
    def pending_calls(self) -> int:
        """How many of our calls wait for their answer."""
        return len(self._calls)

    @property
    def receiving_large_frame(self) -> bool:
        """Whether a large frame is arriving: then ``receive_data`` copies from a view, so pass one."""
        return self._reader.receiving_large_frame

    @property
    def queued_frames(self) -> int:
        """How many frames wait in ``data_to_send()`` (a driver may write once enough are queued)."""
        return len(self._out)

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        """Return and clear the bytes queued for the peer."""
        out = self._out
        if not out:
            return b""
        if self._batched:
            self._batched = False
            out = [frame if type(frame) is not Batch else frame.frame() for frame in out]
        if self._split:
            self._split = False
            out = [part for frame in out for part in (frame if type(frame) is BinFrame else (frame,))]
        data = b"".join(out) if len(out) > 1 else out[0]
        self._out.clear()
        return data

    def buffers_to_send(self) -> list[bytes]:
        """``data_to_send()`` as buffers to write one after the other: a large bytes
        value (see ``wire.encode_bin_frame``) is one of them as it is, not copied."""
        if not self._split:
            data = self.data_to_send()
            return [data] if data else []
        self._split = False
        buffers: list[bytes] = []
        small: list[bytes] = []
        for frame in self._out:
            if type(frame) is BinFrame:
                small.append(frame.head)
                buffers.extend((b"".join(small), frame.data))
                small = []
            else:
                small.append(frame if type(frame) is not Batch else frame.frame())
        if small:
            buffers.append(b"".join(small))
        self._batched = False
        self._out.clear()
        return buffers

    def has_data_to_send(self) -> bool:
        """Whether ``data_to_send()`` has bytes for the peer."""
        return bool(self._out)

    def has_events(self) -> bool:
        """Whether ``next_events()`` has anything to do (a driver may skip calling it if not)."""
        return bool(self._events or self._tables.leaving or self._tables.leaving_dispatched)

    def next_events(self) -> list[ev.Event]:
        """Return and clear every event raised since the last call.

        There is one queue: ``receive_data()``, ``answer()``, ``fail()``,
        ``call()``, ``flush_collected()`` and ``connection_lost()`` all add to
        it, so a driver drains it after each of them (or once per loop turn).
        """
        events = self._events
        if events:
            self._events = []
        if self._tables.leaving or self._tables.leaving_dispatched:
            # The driver has acted on the batch before this one: its stoppedObserving ran.
            self._tables.leaving_dispatched, self._tables.leaving = self._tables.leaving, set()
        return events

    def _send(self, header: list, payload: bytes = b"") -> None:
        if not self.disconnected:
            self._out.append(encode_frame(header, payload, self._peer_max_frame))

    def _emit(self, event: ev.Event) -> None:
        if self._held_events is not None and not isinstance(event, ev.ConnectionFailed):
            self._held_events.append(event)
        else:
            self._events.append(event)

    # ------------------------------------------------------------- transactions

    def _frame(self, head: list, value: Any, perspective: Any, mode_at: int = -1) -> bytes | BinFrame:
        """The frame ``head`` carrying ``value``, encoded as one transaction.

        ``head[mode_at]`` holds PLAIN and is set to the payload's mode.
        Table counts change only if the whole frame is made. Raises
        SerializationError, or LimitExceeded when the frame would not fit the
        peer's frame limit; then nothing has changed.
        """
        if type(value) in _ATOMS:  # touches no table: no transaction needed
            if type(value) is bytes and len(value) > _LARGE_BYTES:
                large = encode_bin_frame(head, value, self._peer_max_frame)  # no copy, not three
                self._split = True
                return large
            try:
                payload = self._pack_tree(value)
            except ValueError:
                payload = b""  # the full path below says what was wrong
            if payload:
                return encode_frame(head, payload, self._peer_max_frame)
        self._tables.begin()
        try:
            mode, payload = self._encoder.encode(value, perspective)
            head[mode_at] = mode
            frame = encode_frame(head, payload, self._peer_max_frame)
        except BaseException:
            self._tables.rollback()
            raise
        self._tables.commit()
        return frame

    def _plain_arguments(self, args: tuple, kwargs: dict) -> bytes | None:
        """A call's ``[args, kwargs]`` packed PLAIN if they are all atoms, else None.

        Most calls carry a few atoms: those are packed at once, skipping the
        identity scan and the transaction (the quick twin of ``_frame``'s encode).
        """
        for item in args:
            if type(item) not in _ATOMS:
                return None
        for item in kwargs.values():
            if type(item) not in _ATOMS:
                return None
        try:
            return self._pack_tree([list(args), kwargs])
        except ValueError:
            return None  # the full path says what was wrong

    def encode_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], perspective: Any = None
    ) -> tuple[int, bytes]:
        """A call's arguments as ``(mode, payload)``, exactly as ``call()`` would send them.

        References and caches in them are counted as sent. For benchmarks and
        for drivers that frame calls themselves.
        """
        payload = self._plain_arguments(args, kwargs)
        if payload is not None:
            return _PLAIN, payload
        value = [list(args), kwargs]
        self._tables.begin()
        try:
            encoded = self._encoder.encode(value, perspective)
        except BaseException:
            self._tables.rollback()
            raise
        self._tables.commit()
        return encoded

    def decode_payload(self, mode: int, payload: Payload) -> Any:
        """Decode a message's payload as one transaction; refused references go straight back.

        Raises ProtocolError or InsecureJelly for a payload this side refuses.
        """
        size = len(payload)
        if mode == _PLAIN and size <= self._bare_limit:
            # The fast twin of Decoder.decode, for the common PLAIN payload without
            # ext: one unpackb without hooks (twice as fast for a small call) and no
            # transaction, as it touches no table. The payload's own size bounds every
            # length in it; a long one must still pass the depth check. Every key is an
            # atom, and atoms cannot be made to collide much (a few dozen ints share a
            # hash at most). Anything else (an ext, an error, too deep) takes the full
            # path below, from the start.
            try:
                value = _unpackb(payload, strict_map_key=False, ext_hook=_no_ext)
                if size <= self._max_depth or not _tree_depth_exceeds(value, self._max_depth):
                    return value
            except Exception:
                pass
        if not size:
            raise ProtocolError("message has no payload")
        self._tables.begin()
        try:
            value = self._decoder.decode(mode, payload)
        except BaseException as exc:
            self._tables.rollback()
            self._tables.return_references(payload)
            if isinstance(exc, Exception) and not isinstance(exc, PBError):
                # A receiver's own hook (setCopyableState, __hash__, ...) failed:
                # refuse this one message like any other undecodable one.
                raise ProtocolError(f"could not rebuild the value: {type(exc).__name__}: {exc}") from exc
            raise
        self._tables.commit()
        return value

    # -------------------------------------------------------------- our calls

    def call(
        self,
        ref: RemoteReference,
        method: str,
        args: tuple,
        kwargs: dict,
        token: Any,
        *,
        answer: bool = True,
        perspective: Any = None,
    ) -> int:
        """Queue a call of ``method`` on ``ref``; return its request id (0 if no answer).

        Raises DeadReferenceError after disconnect, SerializationError or
        LimitExceeded if the arguments cannot be sent; nothing is queued then.
        An update to a cache observer whose copy the peer has just let go of is
        not sent either, and returns 0: until the driver has acted on the
        ``CacheReleased`` event the owner could not know (an update made after
        its ``stoppedObserving`` ran raises DeadReferenceError).
        """
        if (
            self.disconnected
            or ref._broker is not self
            or type(ref) is not RemoteReference
            or type(method) is not str
            or not method.isidentifier()
        ):
            perspective = self._check_call(ref, method, perspective)
            if perspective is _COPY_LEAVING:
                return NO_ANSWER
        return self._queue_call(ref._kind, ref._id, method, args, kwargs, token, answer, perspective)

    def _queue_call(
        self,
        kind: int,
        target: int,
        method: str,
        args: tuple,
        kwargs: dict,
        token: Any,
        answer: bool,
        perspective: Any,
    ) -> int:
        """Encode ``[kind, request_id, target, method]`` with its arguments and queue it."""
        request_id = self._next_request_id if answer else NO_ANSWER
        head = [kind, request_id, target, method, _PLAIN]
        payload = self._plain_arguments(args, kwargs)
        frame: bytes | BinFrame
        if payload is not None:
            frame = encode_frame(head, payload, self._peer_max_frame)
        else:
            frame = self._frame(head, [list(args), kwargs], perspective)
        if answer:
            self._next_request_id += 1
            self._calls[request_id] = token
        self._out.append(frame)
        return request_id

    def call_on_answer(
        self,
        promise_id: int,
        method: str,
        args: tuple,
        kwargs: dict,
        token: Any,
        *,
        answer: bool = True,
        perspective: Any = None,
    ) -> int:
        """Queue a call of ``method`` on the answer to our call ``promise_id``, still pending.

        The peer runs it on that answer once it is ready (promise pipelining);
        return its request id (0 if no answer). Raises ValueError if
        ``promise_id`` is not pending (its answer arrived: call the answer
        itself), and like ``call`` otherwise; nothing is queued then.
        """
        if self.disconnected:
            raise DeadReferenceError(f"cannot call {method!r}: the connection is gone")
        if promise_id not in self._calls:
            raise ValueError(f"request {promise_id} is not pending: its answer can be called directly")
        if type(method) is not str or not method.isidentifier():
            raise ValueError(f"remote method name must be an identifier, got {method!r}")
        request_id = self._queue_call(_PIPELINE, promise_id, method, args, kwargs, token, answer, perspective)
        if request_id:
            self._promises.sent(request_id, promise_id)
        return request_id

    def is_pending(self, request_id: int) -> bool:
        """Whether our request ``request_id`` still waits for its answer (it may be pipelined on)."""
        return request_id in self._calls

    def call_packed(self, ref: RemoteReference, method: str, payload: bytes | PackedCall) -> None:
        """Queue a no-answer call whose arguments are already packed (for broadcasts).

        ``payload`` must be PLAIN ``[args, kwargs]`` that names nothing of any
        connection's tables, so one packing serves every peer; a ``PackedCall``
        of it also holds the header's bytes around the id, so each peer's frame
        is a join. Raises like ``call``.
        """
        self._out.append(self._packed_call_frame(ref, method, payload))

    def packed_call_now(self, ref: RemoteReference, method: str, payload: bytes | PackedCall) -> bytes | None:
        """The frame ``call_packed`` queues, returned instead for the driver to write at once
        when nothing waits to go before it (no frame queued, no event to act on first), as a
        broadcast does to each observer; otherwise it is queued and None returned (flush as
        usual). Raises like ``call``; nothing is queued then."""
        tables = self._tables
        if self._out or self._events or tables.leaving or tables.leaving_dispatched:
            self._out.append(self._packed_call_frame(ref, method, payload))  # behind what waits
            return None  # (has_events() is the rest of the test)
        # The common case written out (a helper call per observer costs a broadcast of
        # a thousand a tenth of its time): _packed_call_frame's test that ``ref`` is
        # our live observer (one set lookup; so the call is an OBSERVE) and ``payload``
        # was packed for this call, then the frame it keeps for this id if it made one.
        if (
            ref in tables.observers
            and type(payload) is PackedCall
            and payload.method is method
            and payload.observer_body <= self._peer_max_frame  # the rest of the test, and the limit
            and not self.disconnected
        ):
            return payload.frames.get(ref._id) or payload.frame(ref._id, self._peer_max_frame)
        return self._packed_call_frame(ref, method, payload)

    def _packed_call_frame(self, ref: RemoteReference, method: str, payload: bytes | PackedCall) -> bytes:
        cache = self._tables.cache_exports.get(ref._id)
        if (  # (our cache's observer is ours: this broker made it)
            self.disconnected
            or cache is None
            or cache.observer is not ref
            or type(method) is not str
            or not method.isidentifier()
        ):
            if self._check_call(ref, method, None) is _COPY_LEAVING:  # else it raised, or ref is sound
                raise DeadReferenceError(f"cannot call {method!r} on {ref!r}: the peer dropped that cache")
        if isinstance(payload, PackedCall):
            if payload.method == method and payload.kind == ref._kind and payload.plain == _PLAIN:
                return payload.frame(ref._id, self._peer_max_frame)
            payload = payload.payload
        return encode_frame([ref._kind, NO_ANSWER, ref._id, method, _PLAIN], payload, self._peer_max_frame)

    def _check_call(self, ref: RemoteReference, method: str, perspective: Any) -> Any:
        """Raise unless ``method`` can be called on ``ref`` now; return the perspective to encode under.

        ``_COPY_LEAVING`` instead means ``ref`` observes a copy the peer has let go
        of, and the owner may not have been told yet (its stoppedObserving is queued).
        """
        if self.disconnected:
            raise DeadReferenceError(f"cannot call {method!r} on {ref!r}: its connection is gone")
        if ref._broker is not self:
            raise SerializationError(f"{ref!r} does not belong to this connection")
        if not isinstance(method, str) or not method.isidentifier():
            raise ValueError(f"remote method name must be an identifier, got {method!r}")
        if isinstance(ref, CacheObserver):
            cache = self._tables.cache_exports.get(ref._id)
            if cache is None or cache.observer is not ref:
                if self._tables.observer_leaving(ref):
                    return _COPY_LEAVING
                raise DeadReferenceError(f"cannot call {method!r} on {ref!r}: the peer dropped that cache")
            # An update speaks to the peer the copy was made for, whoever triggers it.
            return cache.perspective
        return perspective

    def request_root(self, token: Any) -> int:
        """Ask the peer for its root object; the answer arrives as AnswerReceived."""
        return self._simple_request(Kind.ROOT, token)

    def request_description(self, ref: RemoteReference, token: Any) -> int:
        """Ask the peer to describe the methods of ``ref``'s object (kept: ``description_of``)."""
        request_id = self._simple_request(Kind.DESCRIBE, token, ref._id)
        self._describing[request_id] = ref._id
        return request_id

    def _simple_request(self, kind: Kind, token: Any, *extra: Any) -> int:
        if self.disconnected:
            raise DeadReferenceError("the connection is gone")
        request_id = self._next_request_id
        self._next_request_id += 1
        self._calls[request_id] = token
        self._send([kind, request_id, *extra])
        return request_id

    def cancel(self, request_id: int) -> None:
        """Stop waiting for ``request_id`` (a call, or a stream) and tell the peer."""
        if self._calls.pop(request_id, None) is not None:
            if self._streams.windows:
                self._streams.windows.pop(request_id, None)
            self._send_cancel(request_id)
            if self._promises.sent_on:
                self._promises.settled(request_id)
        elif self._streams.receiving.pop(request_id, None) is not None:
            self._send_cancel(request_id)

    def _send_cancel(self, request_id: int) -> None:
        """Send CANCEL; remember the request so that what the peer sent meanwhile is dropped."""
        self._cancelled[request_id] = None
        if len(self._cancelled) > MAX_CANCELLED:
            # A peer that never answers what we cancelled must not grow this forever: the
            # oldest are forgotten, and a late answer to one of them is ignored.
            forgotten = next(iter(self._cancelled))
            del self._cancelled[forgotten]
            self._forgotten_below = max(self._forgotten_below, forgotten + 1)
        self._send([Kind.CANCEL, request_id])

    def _was_cancelled(self, request_id: Any) -> bool:
        """Whether ``request_id`` is one we cancelled (or may have, and forgot): late frames are dropped."""
        return request_id in self._cancelled or (
            type(request_id) is int and request_id < self._forgotten_below
        )

    # ------------------------------------------------------------ our streams

    def stream_window(self, request_id: int, window: Window) -> None:
        """Set how far the stream answering our call ``request_id`` may run ahead of its reader.

        Call it while the call is pending when a stream is expected (``async
        for`` over it): the whole window is granted at once, so the first
        items need no round trip. On an open stream it takes effect as the
        reader goes (credit once granted is not taken back). Raises
        LimitExceeded for a window beyond this side's limits; does nothing for
        a request that is over.
        """
        window.check(self.limits)
        stream = self._streams.receiving.get(request_id)
        if stream is None:
            if request_id not in self._calls or self.disconnected:
                return
            stream = self._streams.windows.get(request_id)
            if stream is None:
                self._streams.windows[request_id] = Receiving(None, window)
                self._send([Kind.CREDIT, request_id, window.items, window.bytes])
                return
        stream.window = window
        self._top_up(request_id, stream)

    def bind_stream(self, request_id: int, token: Any) -> None:
        """Make ``token`` the one the later events of stream ``request_id`` carry (see StreamOpened)."""
        stream = self._streams.receiving.get(request_id)
        if stream is not None:
            stream.token = token

    def stream_read(self, request_id: int, items: int, size: int) -> None:
        """The consumer took ``items`` items of ``size`` payload bytes in all; credit may follow.

        ``size`` adds up the items' shares of ``StreamItems.size``. Report reads
        at least every quarter of a window, and whenever the reader has read
        all that arrived: credit goes back once half a window was read.
        """
        stream = self._streams.receiving.get(request_id)
        if stream is not None:
            grant = self._streams.read(stream, items, size)
            if grant is not None:
                self._send([Kind.CREDIT, request_id, *grant])

    def _top_up(self, request_id: int, stream: Receiving) -> None:
        grant = self._streams.top_up(stream)
        if grant is not None:
            self._send([Kind.CREDIT, request_id, *grant])

    # ---------------------------------------------------------- their streams

    def open_stream(self, request_id: int) -> bool:
        """Answer the peer's call ``request_id`` with a stream (its method is a generator).

        Items go with ``send_item`` while ``may_send_item`` says so; ``answer``
        (with None) ends the stream and ``fail`` ends it with an error. Returns
        False if the call wants no answer any more (cancelled, or asked for
        none): close the generator. Raises LimitExceeded when ``max_streams``
        streams are open: fail the call with it.
        """
        if request_id not in self._inbound or self.disconnected:
            return False
        self._streams.open(request_id)
        self._send([Kind.STREAM, request_id])
        if self._held_answers.waiting:
            self._run_waiting(request_id, None)  # a stream is no reference: calls pipelined on it fail now
        return True

    def may_send_item(self, request_id: int) -> bool:
        """Whether the stream answering ``request_id`` has credit for an item now (else: CreditGranted)."""
        credit = self._streams.credit.get(request_id)
        return credit is not None and credit.open and credit.items > 0 and credit.bytes > 0

    def send_item(self, request_id: int, value: Any, perspective: Any = None) -> bool:
        """Send ``value`` as the next item of the stream answering ``request_id``.

        Returns ``may_send_item(request_id)`` after it. Raises ValueError
        without credit, and what encoding raises (SerializationError,
        LimitExceeded); nothing is sent then, and the stream is still open
        (``fail`` it).
        """
        credit = self._streams.credit.get(request_id)
        if credit is None or not credit.open or credit.items <= 0 or credit.bytes <= 0:
            raise ValueError(f"stream {request_id} has no credit for an item (or is not open)")
        mode, payload = self._encode_item(value, perspective)
        out = self._out
        last = out[-1] if out else None
        batch_limit = self._batch_limit
        size = item_size(payload)
        if (
            type(last) is Batch
            and last.request_id == request_id
            and mode == _PLAIN
            and last.takes(payload, batch_limit)
        ):
            last.add(payload)
        elif mode == _PLAIN and size <= batch_limit:
            out.append(Batch(request_id, payload))
            self._batched = True
        else:
            out.append(encode_frame([_ITEM, request_id, mode], payload, self._peer_max_frame))
        credit.items -= 1
        credit.bytes -= size
        return credit.items > 0 and credit.bytes > 0

    def _encode_item(self, value: Any, perspective: Any) -> tuple[int, bytes]:
        """One item as ``(mode, payload)``, counted as sent; LimitExceeded if no frame could hold it."""
        if type(value) in _ATOMS or (type(value) is dict and _atoms_by_name(value)):
            # Touches no table: packed at once, no transaction (the quick twin of encode).
            try:
                payload = self._pack_tree(value)
            except ValueError:
                payload = b""  # the full path below says what was wrong
            if payload and len(payload) + _ITEM_OVERHEAD <= self._peer_max_frame:
                return _PLAIN, payload
        self._tables.begin()
        try:
            mode, payload = self._encoder.encode(value, perspective)
            if len(payload) + _ITEM_OVERHEAD > self._peer_max_frame:
                raise LimitExceeded(
                    f"stream item of {len(payload)} bytes exceeds the peer's frame limit of "
                    f"{self._peer_max_frame} bytes"
                )
        except BaseException:
            self._tables.rollback()
            raise
        self._tables.commit()
        return mode, payload

    def progress(self, request_id: int, progress: Progress) -> None:
        """Tell the peer how far its call ``request_id`` has got (nothing if it no longer waits).

        The driver rate-limits (``core.progress.Throttle``); the message is
        clipped to fit the peer's frame limit.
        """
        if request_id not in self._inbound:
            return  # answered, cancelled, asked for no answer, or connection gone
        message = progress.message
        if message is not None:
            message = clip(message, self._peer_max_frame - _PROGRESS_OVERHEAD)
        self._send([Kind.PROGRESS, request_id, progress.done, progress.total, message])

    def ping(self, token: int) -> None:
        """Queue a keepalive PING; the peer answers with a PONG (which is not an event)."""
        self._send([Kind.PING, token])

    @property
    def backlog(self) -> int:
        """Bytes received but not handled yet because ``receive_data`` reached its ``max_frames``."""
        return self._reader.backlog

    @property
    def buffered_input(self) -> int:
        """Bytes received of a frame (or the preamble) that has not arrived whole yet.

        A driver can tell from it whether some bytes completed a frame: a peer that
        trickles bytes without ever finishing a message shows no such progress.
        """
        return self._reader.buffered

    @property
    def max_frame(self) -> int:
        """The largest frame accepted from the peer (``Limits.max_frame`` unless lowered)."""
        return self._reader.max_frame

    @max_frame.setter
    def max_frame(self, size: int) -> None:
        # A Portal lowers it until a login succeeds: strangers send only small messages.
        self._reader.max_frame = min(size, self.limits.max_frame)

    # ----------------------------------------------------------- their calls

    def answer(self, request_id: int, value: Any, perspective: Any = None) -> None:
        """Send the result of the peer's call ``request_id``."""
        if request_id not in self._inbound:
            if self._held_answers.waiting:
                self._run_waiting(request_id, None)
            return  # cancelled by the peer, asked for no answer, or connection gone
        if self._streams.credit:
            self._streams.forget(request_id)
        try:
            frame = self._frame([_ANSWER, request_id, _PLAIN], value, perspective)
        except Exception as exc:
            self.fail(request_id, exc, perspective)
            return
        self._inbound.discard(request_id)
        self._out.append(frame)
        if type(value) not in _ATOMS and is_reference(value):
            held = self._hold_answer(request_id, value, perspective)
            if self._held_answers.waiting:
                self._run_waiting(request_id, held)
        elif self._held_answers.waiting:
            self._run_waiting(request_id, None)

    def fail(self, request_id: int, error: BaseException, perspective: Any = None) -> None:
        """Send an exception as the result of the peer's call ``request_id``."""
        if request_id in self._inbound:
            self._inbound.discard(request_id)
            if self._streams.credit:
                self._streams.forget(request_id)
            self._send_error(request_id, error, perspective)
        # (else cancelled by the peer, asked for no answer, or connection gone)
        if self._held_answers.waiting:
            self._run_waiting(request_id, None)

    def _send_error(self, request_id: int, error: BaseException, perspective: Any) -> None:
        if isinstance(error, RemoteError):
            remote_type, message = error.remote_type, error.message
        else:
            remote_type, message = qualified_type(error), text_of(error)
        tb = None
        if self.send_tracebacks and error.__traceback__ is not None:
            tb = "".join(traceback.format_exception(error))
        # The header must fit its u16 length whatever the texts hold.
        message, remote_type = clip(message, 16384), clip(remote_type, MAX_TYPE_NAME)
        tb = clip(tb, 32768, keep_end=True) if tb is not None else None
        head = [Kind.ERROR, request_id, remote_type, message, tb, _PLAIN, base_names(error)]
        frame = None
        if isinstance(error, Copyable):
            try:
                frame = self._frame(head, error, perspective, _ERROR_MODE)
            except Exception as exc:
                head[3] = message = f"{message} (its copy could not be sent: {exc})"
                head[_ERROR_MODE] = _PLAIN
        if frame is None:
            try:
                frame = encode_frame(head, _NIL, self._peer_max_frame)
            except LimitExceeded:
                # Too long for the peer: the texts are clipped to fit (no
                # traceback, no bases), so the caller still learns what failed
                # and the connection lives on.
                max_frame = self._peer_max_frame
                remote_type = clip(remote_type, min(MAX_TYPE_NAME, max_frame // 4))
                message = clip(message, max_frame - len(remote_type.encode()) - _ERROR_OVERHEAD)
                head = [Kind.ERROR, request_id, remote_type, message, None, _PLAIN, []]
                frame = encode_frame(head, _NIL, max_frame)
        if not self.disconnected:
            self._out.append(frame)

    def _refuse(self, request_id: int, error: BaseException, description: str) -> None:
        self._emit(ev.MessageRefused(error, description))
        if request_id != NO_ANSWER:
            self._send_error(request_id, error, None)

    # ----------------------------------------------------------------- input

    def receive_data(self, data: bytes | bytearray | memoryview, max_frames: int = 0) -> bool:
        """Take bytes from the peer; the events they complete go to ``next_events()``.

        ``data`` may be a view of a buffer the caller reuses: what the broker
        keeps, it copies. Bytes arriving while CLOSING or CLOSED are ignored.
        With ``max_frames``, at most that many messages are handled now and
        the rest wait (``backlog`` bytes) for the next call, which may bring
        no bytes: a driver serves other peers in between. Returns whether
        messages wait so.
        """
        if self._reader.closed or not (data or self._reader.backlog):
            return False
        self._running = len(self._inbound)
        try:
            waiting = feed_frames(self._reader, data, max_frames)
        except ProtocolError as exc:
            self._fail_connection(exc)
            waiting = False
        if self._promises.finished:
            self._send_finish()
        return waiting

    def _send_finish(self) -> None:
        """Tell the peer which answers we will pipeline on no more, in as few frames as fit a header."""
        finished, self._promises.finished = self._promises.finished, []
        for start in range(0, len(finished), _FINISHED_PER_FRAME):
            self._send([Kind.FINISH, finished[start : start + _FINISHED_PER_FRAME]])

    def _on_hello(self, header: list, payload: Payload) -> None:
        settings = header[1] if len(header) > 1 else None
        if not isinstance(settings, dict):
            raise ProtocolError("HELLO must carry a settings map")
        peer_max = settings.get("max_frame")
        if isinstance(peer_max, int) and peer_max > 0:
            if peer_max < MIN_FRAME:
                raise ProtocolError(f"peer announced max_frame {peer_max}; the least is {MIN_FRAME} bytes")
            self._peer_max_frame = peer_max
            self._batch_limit = min(BATCH_BYTES, peer_max - _ITEM_OVERHEAD)
        self._enter(ConnectionState.OPEN)
        self._events.append(ev.HandshakeCompleted(self._peer_max_frame))

    def _on_call(self, header: list, payload: Payload) -> None:
        kind, request_id, target_id, name, mode = header
        if type(request_id) is not int or type(target_id) is not int or request_id < 0 or target_id < 0:
            _check_ints(request_id, target_id)
        if request_id and request_id in self._inbound:  # request_id 0 (NO_ANSWER) may repeat
            raise ProtocolError(f"peer reused request id {request_id}")
        if kind == _CALL:
            entry = self._tables.exports.get(target_id)
            target = None if entry is None else entry.obj
        else:
            entry = None
            cache = self._tables.cache_imports.get(target_id)
            weak = None if cache is None or cache.awaiting_state else cache.weak
            target = None if weak is None else weak()
        if target is None:
            return self._refuse_call(kind, request_id, target_id, payload)
        self._accept_call(request_id, target, entry, name, mode, payload)

    def _on_observe(self, header: list, payload: Payload) -> None:
        """OBSERVE: the quick twin of ``_on_call`` for the update every observer of a broadcast gets.

        A no-answer update of a live copy whose arguments are ``[[atoms or
        plain data...], {}]`` (one unpackb without hooks, as decode_payload's
        bare path: it touches no table) is checked and queued in one step.
        Anything else (an answer wanted, a bad id, a copy awaiting its state, no
        such method, an ext or a bad shape, too many calls running, events held
        back) goes to ``_on_call`` from the start, which says what is wrong.
        """
        _, request_id, cache_id, name, mode = header
        if header is not self._sound_update:  # (the frame reader hands a repeated header over as itself)
            if not (
                type(cache_id) is int
                and type(request_id) is int
                and not request_id
                and mode == _PLAIN
                and type(name) is str
                and name.isidentifier()
            ):
                return self._on_call(header, payload)
            self._sound_update = header  # a no-answer PLAIN update naming a method: checked once
        cache = self._tables.cache_imports.get(cache_id)
        size = len(payload)
        if (
            cache is not None
            and size <= self._bare_limit
            and self._running < self._max_inbound_calls
            and self._held_events is None
            and not cache.awaiting_state
            and cache.weak is not None
        ):
            target = cache.weak()
            method = None if target is None else target._pb_method(name, None)
            try:  # a call's [args, kwargs] (anything but two items raises)
                args, kwargs = _unpackb(payload, strict_map_key=False, ext_hook=_no_ext)
            except Exception:
                args = kwargs = None
            # [args, {}], within the depth limit (decode_payload's bare path, with the call's shape).
            if (
                method is not None
                and type(args) is list
                and type(kwargs) is dict
                and not kwargs
                and (size <= self._max_depth or not _tree_depth_exceeds([args, kwargs], self._max_depth))
            ):
                self._events.append(_CallReceived(0, method, args, kwargs, None, target, name, self))
                return
        self._on_call(header, payload)

    def _accept_call(
        self, request_id: int, target: Any, entry: Any, name: Any, mode: Any, payload: Payload
    ) -> None:
        """Check and decode a call on ``target`` (sent as ``entry``, if an export); queue CallReceived."""
        if self._running >= self._max_inbound_calls:
            self._tables.return_references(payload)
            busy = LimitExceeded(f"peer has {self._running} calls running here (max_inbound_calls)")
            return self._refuse(request_id, busy, "call")
        method = target._pb_method(name, None) if type(name) is str and name.isidentifier() else None
        if method is None:
            self._tables.return_references(payload)
            error = NoSuchMethod(
                _NO_SUCH_METHOD, f"{type(target).__qualname__} has no remote method {name!r}"
            )
            return self._refuse(request_id, error, "call")
        try:
            args, kwargs = self.decode_payload(mode, payload)
            if type(args) is not list or type(kwargs) is not dict:
                raise ProtocolError("call arguments must be [list, dict with str keys]")
            if kwargs:
                for key in kwargs:
                    if type(key) is not str:
                        raise ProtocolError("call arguments must be [list, dict with str keys]")
        except (ProtocolError, InsecureJelly) as exc:
            exc.args = (f"{exc} [refused by the callee, receiving the arguments of {name!r}]",)
            return self._refuse(request_id, exc, f"arguments of {name!r}")
        except (ValueError, TypeError) as exc:
            return self._refuse(
                request_id, ProtocolError(f"call arguments must be [list, dict]: {exc}"), name
            )
        if request_id:
            self._inbound.add(request_id)
        # A call acts for the perspective its target was sent to (the avatar's own,
        # or a view's), never for whoever logged in last on this connection.
        perspective = None if entry is None else target._pb_perspective(entry.perspective)
        event = ev.CallReceived(request_id, method, args, kwargs, perspective, target, name, self)
        if self._held_events is None:
            self._events.append(event)
        else:
            self._emit(event)

    def _refuse_call(self, kind: int, request_id: int, target_id: int, payload: Payload) -> None:
        """Refuse a call on an object or cache this side does not hold."""
        self._tables.return_references(payload)
        if kind != _CALL and (
            target_id in self._tables.cache_tombstones or target_id in self._tables.cache_imports
        ):
            # An update racing our drop of that cache: harmless, answer it with None.
            if request_id:
                self._send([_ANSWER, request_id, _PLAIN], _NIL)
            return
        what = "object" if kind == _CALL else "cache"
        error = ProtocolError(
            f"the callee has no {what} {target_id} (released, or never sent on this connection)"
        )
        self._refuse(request_id, error, "call")

    def _on_pipeline(self, header: list, payload: Payload) -> None:
        _, request_id, promise_id, name, mode = header
        _check_ints(request_id, promise_id)
        if request_id and request_id in self._inbound:
            raise ProtocolError(f"peer reused request id {request_id}")
        held = self._held_answers.held.get(promise_id)
        if held is not None:
            target, entry = held
            return self._accept_call(request_id, target, entry, name, mode, payload)
        if promise_id in self._inbound:  # still running: the call waits for its answer
            if request_id:
                self._inbound.add(request_id)  # so that calls may be pipelined on it in turn
            waiting = WaitingCall(request_id, name, mode, bytes(payload))
            self._held_answers.waiting.setdefault(promise_id, []).append(waiting)
            return
        # Answered with no reference, failed, or cancelled: the caller knows which.
        self._tables.return_references(payload)
        if request_id:
            self._send_error(request_id, PipelineError("the answer is not a reference"), None)

    def _run_waiting(self, promise_id: int, held: tuple[Any, Any] | None) -> None:
        """The peer's call ``promise_id`` is over: run the calls pipelined on it, or fail them."""
        for call in self._held_answers.waiting.pop(promise_id, ()):
            if held is None:
                self.fail(call.request_id, PipelineError("the answer is not a reference"))
                continue
            if call.request_id:
                self._inbound.discard(call.request_id)  # _accept_call counts it again
            target, entry = held
            self._accept_call(call.request_id, target, entry, call.name, call.mode, call.payload)

    def _hold_answer(self, request_id: int, value: Any, perspective: Any) -> tuple[Any, Any] | None:
        """Keep a reference answer for calls pipelined on it; return (target, entry) if kept."""
        if type(value) is RemoteReference:
            held: tuple[Any, Any] = (Forward(value), None)
        else:
            entry = self._tables.exported(value, perspective)
            if entry is None:
                return None
            held = (entry.obj, entry)
        return held if self._held_answers.hold(request_id, *held) else None

    def _on_finish(self, header: list, payload: Payload) -> None:
        request_ids = header[1]
        if type(request_ids) is not list:
            raise ProtocolError("FINISH must carry a list of request ids")
        _check_ints(*request_ids)
        self._held_answers.finish(request_ids)

    def _on_answer(self, header: list, payload: Payload) -> None:
        _, request_id, mode = header
        token = self._calls.pop(request_id, None)
        if token is None:
            if request_id in self._streams.receiving:
                return self._end_stream(request_id, payload)
            token = self._take_call(request_id)  # raises unless we cancelled it
        elif self._streams.windows:
            self._streams.windows.pop(request_id, None)
        try:
            value = self.decode_payload(mode, payload)
        except (ProtocolError, InsecureJelly) as exc:
            exc.args = (f"{exc} [refused here, by the caller, receiving the answer]",)
            self._promises.finished.append(request_id)  # it may have been a reference the peer keeps
            if self._promises.sent_on or self._promises.dependents:
                self._settle_promises(request_id, exc)
            if token is not None:
                self._emit(ev.CallFailed(token, exc))
            return
        if type(value) not in _ATOMS and is_reference(value):
            self._promises.finished.append(request_id)  # the peer keeps it until we FINISH
        if self._promises.sent_on or self._promises.dependents:
            self._settle_promises(request_id, value)
        if self._describing:
            self._remember_description(request_id, value)
        if token is None:
            return
        if self._held_events is None:
            self._events.append(ev.AnswerReceived(token, value))
        else:
            self._emit(ev.AnswerReceived(token, value))

    def _remember_description(self, request_id: int, value: Any) -> None:
        export_id = self._describing.pop(request_id, None)
        if export_id is not None and export_id in self._tables.imports and isinstance(value, dict):
            self._descriptions[export_id] = value

    def _take_call(self, request_id: int) -> Any:
        self._describing.pop(request_id, None)
        if self._streams.windows:
            self._streams.windows.pop(request_id, None)
        token = self._calls.pop(request_id, None)
        if token is None and request_id not in self._cancelled:
            if type(request_id) is int and request_id < self._forgotten_below:
                return None  # maybe one we cancelled long ago and forgot
            raise ProtocolError(f"peer answered request {request_id}, which is not pending")
        self._cancelled.pop(request_id, None)
        return token

    def _on_error(self, header: list, payload: Payload) -> None:
        _, request_id, remote_type, message, tb, mode, *rest = header
        if not isinstance(remote_type, str) or not isinstance(message, str) or len(rest) > 1:
            raise ProtocolError("ERROR type and message must be strings")
        bases = read_bases(rest[0] if rest else None)
        stream = self._streams.receiving.pop(request_id, None) if self._streams.receiving else None
        token = self._take_call(request_id) if stream is None else stream.token
        error: BaseException | None = None
        if payload and bytes(payload[:1]) != _NIL:
            try:
                copy = self.decode_payload(mode, payload)
                if isinstance(copy, BaseException):
                    error = copy
            except (ProtocolError, InsecureJelly) as exc:
                message = f"{message} (its copy was refused: {exc})"
        if error is None:
            if remote_type == BROKEN_PROMISE and request_id in self._promises.sent_on:
                error = self._promises.broken(request_id)  # the real reason, which we know
            else:
                error = rebuild_error(remote_type, message, tb if isinstance(tb, str) else None, bases)
        if self._promises.sent_on or self._promises.dependents:
            self._settle_promises(request_id, error)
        if stream is not None:
            self._emit(ev.StreamEnded(token, error))
        elif token is not None:
            self._emit(ev.CallFailed(token, error))

    def _settle_promises(self, request_id: int, outcome: Any) -> None:
        """Our call ``request_id`` ended with ``outcome``: keep it for calls pipelined on it."""
        self._promises.resolved(request_id, outcome)
        self._promises.settled(request_id)

    # --------------------------------------------------------------- streams

    def _on_stream(self, header: list, payload: Payload) -> None:
        _, request_id = header
        token = self._calls.pop(request_id, None)
        if token is None:
            if self._was_cancelled(request_id):
                return  # our CANCEL is on its way: the peer stops
            raise ProtocolError(f"peer opened a stream for request {request_id}, which is not pending")
        self._describing.pop(request_id, None)
        if self._promises.sent_on or self._promises.dependents:
            self._settle_promises(request_id, STREAMED)  # calls pipelined on it have nothing to run on
        stream, first = self._streams.opened(request_id, token)
        if first:
            self._send([Kind.CREDIT, request_id, stream.items, stream.bytes])
        self._emit(ev.StreamOpened(token, request_id))

    def _on_credit(self, header: list, payload: Payload) -> None:
        _, request_id, items, nbytes = header
        _check_ints(request_id, items, nbytes)
        if request_id not in self._inbound:
            return  # the call is over (answered, failed, cancelled) or never came: credit is moot
        refused = self._streams.grant(request_id, items, nbytes)
        if refused is not None:
            # This stream's peer broke its rule; the connection is fine. Fail the
            # call, and have the driver stop its generator as if it was cancelled.
            self.fail(request_id, LimitExceeded(refused))
            self._emit(ev.CancelRequested(request_id))
        elif self._streams.credit[request_id].open:
            self._emit(ev.CreditGranted(request_id))

    def _on_item(self, header: list, payload: Payload) -> None:
        _, request_id, mode, *batch = header
        count = batch[0] if batch else 1
        if len(batch) > 1 or type(count) is not int or count < 1:
            raise ProtocolError(f"ITEM must carry one item or a count of at least 1, got {batch!r:.40}")
        stream = self._streams.receiving.get(request_id)
        if stream is None:
            self._tables.return_references(payload)
            if self._was_cancelled(request_id):
                return  # sent before our CANCEL arrived
            if request_id in self._calls:  # before STREAM: this call's answer is broken, not the connection
                error = ProtocolError(f"peer sent a stream item for request {request_id} before STREAM")
                self._emit(ev.CallFailed(self._calls.pop(request_id), error))
                self._send_cancel(request_id)
                return
            raise ProtocolError(f"peer sent a stream item for request {request_id}, which is no open stream")
        if stream.items < count or stream.bytes <= 0:
            self._tables.return_references(payload)
            return self._break_stream(
                request_id,
                ProtocolError(
                    f"peer sent a stream item beyond its credit (window of {stream.window.items} items, "
                    f"{stream.window.bytes} bytes)"
                ),
            )
        # A batch costs its items' payloads: the array header around them is free.
        size = batch_size(payload) if batch else item_size(payload)
        stream.items -= count
        stream.bytes -= size
        try:
            value = self.decode_payload(mode, payload)
            # A tuples-first batch's array is a tuple.
            if batch and (type(value) not in (list, tuple) or len(value) != count):
                raise ProtocolError(f"an ITEM of {count} items must carry an array of {count} items")
        except (ProtocolError, InsecureJelly) as exc:
            exc.args = (f"{exc} [refused here, by the caller, receiving a stream item]",)
            return self._break_stream(request_id, exc)
        self._emit(ev.StreamItems(stream.token, list(value) if batch else [value], size))

    def _break_stream(self, request_id: int, error: BaseException) -> None:
        """Fail our stream ``request_id`` here with ``error`` and stop it at the peer."""
        stream = self._streams.receiving.pop(request_id)
        self._emit(ev.StreamEnded(stream.token, error))
        self._send_cancel(request_id)

    def _end_stream(self, request_id: int, payload: Payload) -> None:
        """The peer's ANSWER ended our stream ``request_id`` normally."""
        stream = self._streams.receiving.pop(request_id)
        self._tables.return_references(payload)  # a generator's end carries nil; anything else is dropped
        self._emit(ev.StreamEnded(stream.token, None))

    def _on_decref(self, header: list, payload: Payload) -> None:
        kind, remote_id, count = header
        _check_ints(remote_id, count)
        if kind == Kind.DECREF:
            entry = self._tables.exports.get(remote_id)
            if entry is None or count > entry.count:
                raise ProtocolError(f"peer released object {remote_id} more times than it was sent")
            entry.count -= count
            if entry.count == 0:
                self._tables.drop_export(entry, notify=True)
            return
        cache = self._tables.cache_exports.get(remote_id)
        if cache is None or count > cache.count:
            raise ProtocolError(f"peer released cache {remote_id} more times than it was sent")
        cache.count -= count
        if cache.count == 0:
            self._tables.drop_cache_export(cache)
            self._send([Kind.UNCACHED, remote_id])
            return
        # CACHED refs were in flight: the copy the peer held is gone, and the one
        # those refs will build is a new observation with a new observer, so
        # the owner's bookkeeping stays balanced whatever order the hooks run in.
        self._tables.release_observer(cache)
        cache.observer = CacheObserver(self, remote_id)
        try:
            state = cache.cacheable.getStateToCacheAndObserveFor(cache.perspective, cache.observer)
            frame = self._frame([Kind.CACHE_STATE, remote_id, _PLAIN], state, cache.perspective)
        except Exception as exc:
            self._emit(ev.MessageRefused(exc, f"state of cache {remote_id}"))
            frame = encode_frame([Kind.CACHE_STATE, remote_id, _PLAIN], _NIL)
        self._out.append(frame)

    def _on_cache_state(self, header: list, payload: Payload) -> None:
        _, cache_id, mode = header
        entry = self._tables.cache_imports.get(cache_id)
        self._tables.cache_tombstones.pop(cache_id, None)
        obj = entry.weak() if entry is not None and entry.weak is not None else None
        try:
            state = self.decode_payload(mode, payload)
        except (ProtocolError, InsecureJelly) as exc:
            self._emit(ev.MessageRefused(exc, f"state of cache {cache_id}"))
            state = None
        if obj is not None and entry is not None and entry.awaiting_state:
            entry.awaiting_state = False
            if state is not None:
                try:
                    obj.setCopyableState(state)
                except Exception as exc:  # the receiver's own hook: report it, keep the stream
                    self._emit(ev.MessageRefused(exc, f"state of cache {cache_id}"))
        self._tables.awaited_states.discard(cache_id)
        if not self._tables.awaited_states and self._held_events is not None:
            held, self._held_events = self._held_events, None
            self._events.extend(held)

    def _on_uncached(self, header: list, payload: Payload) -> None:
        self._tables.cache_tombstones.pop(header[1], None)

    def _on_root(self, header: list, payload: Payload) -> None:
        _, request_id = header
        _check_ints(request_id)
        self._inbound.add(request_id)
        if self.root is None:
            return self.fail(request_id, ProtocolError("this side serves no root object"))
        self.answer(request_id, self.root, None)  # the root is everyone's: it acts for no one

    def _on_describe(self, header: list, payload: Payload) -> None:
        _, request_id, target_id = header
        _check_ints(request_id, target_id)
        self._inbound.add(request_id)
        entry = self._tables.exports.get(target_id)
        if entry is None:
            error = ProtocolError(
                f"the callee has no object {target_id} (released, or never sent on this connection)"
            )
            return self.fail(request_id, error)
        self.answer(
            request_id,
            {"type": type(entry.obj._pb_original()).__qualname__, "methods": describe_methods(entry.obj)},
        )

    def _on_cancel(self, header: list, payload: Payload) -> None:
        request_id = header[1]
        if request_id in self._inbound:
            self._inbound.discard(request_id)
            if self._streams.credit:
                self._streams.forget(request_id)
            if self._held_answers.waiting and self._held_answers.drop_waiting(request_id):
                self._run_waiting(request_id, None)  # it never ran: nothing to cancel
                return
            self._emit(ev.CancelRequested(request_id))

    def _on_progress(self, header: list, payload: Payload) -> None:
        _, request_id, done, total, message = header
        _check_ints(request_id)
        progress = received(done, total, message)
        token = self._calls.get(request_id)
        if token is None:
            stream = self._streams.receiving.get(request_id)  # a generator reports too
            if stream is None:
                return  # answered, cancelled or unknown: it may have crossed the answer
            token = stream.token
        self._emit(ev.ProgressReceived(token, progress))

    def _on_ping(self, header: list, payload: Payload) -> None:
        self._send([Kind.PONG, header[1]])

    def _on_pong(self, header: list, payload: Payload) -> None:
        pass  # the driver saw bytes arrive: that was the sign of life it wanted

    def _on_goodbye(self, header: list, payload: Payload) -> None:
        _, error_type, message = header
        error: PBError
        if error_type == _SERVER_FULL:  # no broken rule: the opener may try again later
            error = ServerFull(message)
        else:
            error = ProtocolError(f"peer closed the connection: {error_type}: {message}")
        self._emit(ev.ConnectionFailed(error, by_peer=True))
        self._enter(_CLOSING)

    # --------------------------------------------------------------- closing

    def _fail_connection(self, error: ProtocolError) -> None:
        """The stream is broken: tell the peer why, then report it."""
        self._enter(_CLOSING)
        self._out.append(_goodbye(error, self._peer_max_frame))
        self._events.append(ev.ConnectionFailed(error))

    def connection_lost(self, reason: BaseException | None = None) -> None:
        """The transport closed: fail pending calls, release everything (events follow)."""
        if self.disconnected:
            return
        self._enter(_CLOSED)
        if self._held_events:
            self._events.extend(self._held_events)
        self._held_events = None
        message = "connection lost" if reason is None else f"connection lost: {reason}"
        calls, self._calls = self._calls, {}
        for token in calls.values():
            error = PBConnectionLost(message)
            error.__cause__ = reason
            self._events.append(ev.CallFailed(token, error))
        for stream in self._streams.receiving.values():
            error = PBConnectionLost(message)
            error.__cause__ = reason
            self._events.append(ev.StreamEnded(stream.token, error))
        self._streams.clear()
        self._inbound.clear()
        self._held_answers.clear()
        self._promises.clear()
        for entry in list(self._tables.imports.values()):
            ref = entry.weak() if entry.weak is not None else None
            if ref is not None:
                for callback, exc in ref._fire_disconnect():
                    self._events.append(ev.CallbackFailed(callback, exc))
        for entry in list(self._tables.cache_imports.values()):
            copy = entry.weak() if entry.weak is not None else None
            if copy is not None:
                try:
                    copy.connectionLost()
                except Exception as exc:  # the receiver's own hook: report it, finish the teardown
                    self._events.append(ev.CallbackFailed(copy.connectionLost, exc))
        self._tables.release_all()
        self._descriptions.clear()
        self._describing.clear()
        self._out.clear()

    def description_of(self, ref: RemoteReference) -> dict[str, Any] | None:
        """The peer's answer to the last ``describe()`` of ``ref``, or None if never described."""
        return self._descriptions.get(ref._id)

    def known_methods(self, ref: RemoteReference) -> list[str]:
        """Method names learned from a describe() of ``ref``, for tab completion."""
        found = self._descriptions.get(ref._id)
        return [method["name"] for method in found["methods"]] if found else []

    def method_description(self, ref: RemoteReference, name: str) -> dict[str, Any] | None:
        """What describe() said of ``ref``'s method ``name``; None if not described or unknown."""
        found = self._descriptions.get(ref._id)
        for method in found["methods"] if found else ():
            if method["name"] == name:
                return method
        return None


#: The handler of each message kind the peer may send (a Broker attribute, a method but one).
#: A new kind needs a row here, its handler, and its Kind in wire.py.
_HANDLERS: dict[Kind, str] = {
    Kind.HELLO: "_on_hello",
    Kind.CALL: "_on_call",
    Kind.OBSERVE: "_quick_observe",
    Kind.ANSWER: "_on_answer",
    Kind.ERROR: "_on_error",
    Kind.DECREF: "_on_decref",
    Kind.DECACHE: "_on_decref",
    Kind.CACHE_STATE: "_on_cache_state",
    Kind.UNCACHED: "_on_uncached",
    Kind.ROOT: "_on_root",
    Kind.DESCRIBE: "_on_describe",
    Kind.CANCEL: "_on_cancel",
    Kind.PIPELINE: "_on_pipeline",
    Kind.FINISH: "_on_finish",
    Kind.PROGRESS: "_on_progress",
    Kind.STREAM: "_on_stream",
    Kind.CREDIT: "_on_credit",
    Kind.ITEM: "_on_item",
    Kind.PING: "_on_ping",
    Kind.PONG: "_on_pong",
    Kind.GOODBYE: "_on_goodbye",
}
_KNOWN_KINDS = frozenset(int(kind) for kind in Kind)

try:
    from ._receiving import QuickObserve
except ImportError:  # not built (a pure-Python wheel, as Pyodide's): the Python twin
    QuickObserve = None  # type: ignore[assignment,misc]


def _observe_handler(broker: Broker) -> FrameHandler:
    """``broker._on_observe``, or its C twin for a Broker (a subclass may override the method)."""
    if QuickObserve is None or type(broker) is not Broker:
        return broker._on_observe
    return QuickObserve(broker, _CallReceived, _CALL_FIELDS, _unpackb, _no_ext, _tree_depth_exceeds, _PLAIN)


def refusal_handshake(error: PBError) -> bytes:
    """All a side sends on a connection it will not serve: the preamble, then GOODBYE instead of HELLO.

    Without a HELLO the opener's handshake cannot complete, however the bytes
    are split, so it fails with ``error`` rather than seeming to succeed first.
    """
    return PREAMBLE + _goodbye(error, Limits().max_frame)


def _goodbye(error: BaseException, max_frame: int) -> bytes:
    # Clipped to fit any peer: it may not have announced its limit yet.
    remote_type = clip(qualified_type(error), max_frame // 4)
    message = clip(text_of(error), min(4096, max_frame - len(remote_type.encode()) - _ERROR_OVERHEAD))
    return encode_frame([Kind.GOODBYE, remote_type, message], b"", max_frame)


def _atoms_by_name(mapping: dict) -> bool:
    """Whether a dict maps str keys to atoms only (a row, a record): PLAIN, whatever the encoder."""
    for key, value in mapping.items():
        if type(key) is not str or type(value) not in _ATOMS:
            return False
    return True


def _check_ints(*values: Any) -> None:
    for value in values:
        if not isinstance(value, int) or value < 0:
            raise ProtocolError(f"expected a non-negative integer id, got {value!r:.40}")
