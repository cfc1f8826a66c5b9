"""The asyncio glue: pump bytes through a Broker and run what its events ask for.

There is no protocol logic here, and only the broker's public driver API is
used (docs/architecture.md). A ``Connection`` feeds the transport's bytes to
the broker, acts on its events, writes what it queues, runs remote methods
(plain or ``async def``) and settles the futures of calls made through
RemoteReferences: it is the broker's ``Invoker``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from time import monotonic
from typing import Any, cast

from ..core import events as ev
from ..core.broker import Broker
from ..core.failure import clip, text_of
from ..core.flavors import CopyRegistry, IPBRoot, Referenceable, remote_method
from ..core.progress import Progress
from ..core.reference import CacheObserver, RemoteReference
from ..core.streaming import Window
from ..core.wire import Limits, PackedCall
from ..errors import (
    CallCancelled,
    Error,
    LimitExceeded,
    NoSuchMethod,
    PBConnectionLost,
    PBError,
    PipelineError,
    ProtocolError,
)
from .reports import ProgressWatch
from .streams import RemoteIterator, StreamSink, not_a_stream

log = logging.getLogger("pbnb")

# Results that can never be awaited; checking their type first skips
# inspect.isawaitable's slow ABC test on nearly every answer.
_NOT_AWAITABLE = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple, set, frozenset})
# The event kinds met on every call, named once (a module attribute costs a lookup each time).
_CallReceived, _AnswerReceived, _CallFailed, _StreamItems = (
    ev.CallReceived,
    ev.AnswerReceived,
    ev.CallFailed,
    ev.StreamItems,
)
# Calls queued in one loop turn are written in groups of this many frames.
_BURST_FRAMES = 16
# A stream's generator is advanced at most this many times in one loop turn.
_STREAM_BURST = 128
# Seconds between the pings that check a half-closed peer is still there to read its answers.
_PROBE_INTERVAL = 0.5
# The most one socket read takes, as for asyncio's own transports.
_RECEIVE_BUFFER_SIZE = 256 * 1024
# Output larger than this goes to the transport in pieces of this size, the next one
# once the transport has drained the last (resume_writing): no single step of the
# event loop has asyncio copy or send a whole 80 MiB answer, so other peers are served
# in between.
_WRITE_PIECE = 1 << 20
# Messages handled in one turn of the event loop for one connection. A read can
# hold thousands (256 KiB of 20-byte calls); the rest wait, with reading paused,
# for the next turns, so other peers are served in between.
_FRAMES_PER_TURN = 128
# A read this small is copied to bytes without asking whether a large frame is arriving:
# asking costs about what copying 2 KiB does.
_SMALL_READ = 2048
_receive_buffers = threading.local()


def _receive_buffer() -> memoryview:
    """This thread's buffer for socket reads, shared by all its connections.

    A read fills it and ``buffer_updated`` copies the bytes out before
    returning, so connections driven by one event loop never hold it at the
    same time. With plain ``data_received`` the transport would ``recv`` into
    a fresh 256 KiB bytes object each time, which glibc, depending on what the
    process freed before, may serve with an mmap, a page fault and an munmap
    per message.
    """
    buffer = getattr(_receive_buffers, "buffer", None)
    if buffer is None:
        buffer = _receive_buffers.buffer = memoryview(bytearray(_RECEIVE_BUFFER_SIZE))
    return buffer


#: The perspective (avatar) the current remote call runs under, if any.
current_perspective: contextvars.ContextVar[Any] = contextvars.ContextVar("pbnb_perspective", default=None)
# The peer's call that the running code serves (its broker's invoker is the
# Connection, and current_perspective belongs to it): one value per call for
# everything a remote method may ask about, so that a call sets no more.
_serving: contextvars.ContextVar[ev.CallReceived | None] = contextvars.ContextVar(
    "pbnb_serving", default=None
)


def serving_connection() -> Connection | None:
    """The Connection whose peer's call the running code serves, if any."""
    call = _serving.get()
    return None if call is None else cast(Connection, call.broker.invoker)  # the driver serving it


def _handshake_failure(reason: BaseException | None) -> BaseException:
    # A reset and a clean close before the handshake mean the same to the opener.
    if isinstance(reason, PBError):
        return reason
    error = PBConnectionLost(f"connection closed during the handshake{f': {reason}' if reason else ''}")
    error.__cause__ = reason
    return error


def connection_of(ref: RemoteReference) -> Connection:
    """The asyncio Connection that ``ref`` travels over; TypeError if another driver runs it."""
    invoker = ref.broker.invoker
    if not isinstance(invoker, Connection):
        raise TypeError(f"{ref!r} is not driven by a pbnb.aio Connection but by {type(invoker).__qualname__}")
    return invoker


class CallFuture(asyncio.Future):
    """The awaitable a ``callRemote`` returns; cancelling it tells the peer.

    It is also a promise of its answer: ``future.callRemote(name, ...)`` and
    ``future.remote.name(...)`` call the answer before it arrives, in the same
    round trip (promise pipelining, see docs/pipelining.md).

    Once the request is queued, ``connection`` is the Connection it went out
    on, ``request_id`` its number there (0 for none), and for a call,
    ``method`` says what was called on ``ref``, or on the answer of
    ``promise`` for a pipelined call; before that (or for a call refused
    locally) they are unset.
    """

    # Filled in by Connection once the request is queued; no __init__, which
    # would cost every call a Python-level frame.
    __slots__ = (
        "_watch",
        "connection",
        "dependents",
        "method",
        "promise",
        "ref",
        "request_id",
        "stream",
    )

    connection: Connection
    method: str
    ref: RemoteReference
    request_id: int
    promise: CallFuture
    dependents: list[CallFuture]
    stream: StreamSink
    _watch: ProgressWatch

    @property
    def progress(self) -> Progress | None:
        """The latest progress the remote method reported (``pb.progress``), or None if none yet."""
        watch = getattr(self, "_watch", None)
        return None if watch is None else watch.latest

    def on_progress(self, callback: Callable[[Progress], Any]) -> None:
        """Call ``callback(progress)`` in the loop on each progress report until the answer arrives.

        A report that arrived before is handed to it soon, as ``add_done_callback``
        does for a done future. Whatever the callback raises is logged, not propagated.
        (A generator's reports go on to its ``RemoteIterator``.)
        """
        self._progress_watch().add(callback, self.get_loop())

    def _progress_watch(self) -> ProgressWatch:
        try:
            return self._watch
        except AttributeError:  # made by the first report or callback: most calls have none
            sink = getattr(self, "stream", None)  # one record for the call and its stream
            self._watch = watch = ProgressWatch() if sink is None else sink.progress_watch()
            return watch

    def _progress_received(self, progress: Progress) -> None:
        if not self.done():
            self._progress_watch().received(progress)
        elif getattr(self, "stream", None) is not None:
            self.stream.progress_received(progress)  # it answered with a stream: its iterator's now

    @property
    def description(self) -> str:
        """What was called, e.g. ``hello() on <RemoteReference 3 at 127.0.0.1:8787>``."""
        promise = getattr(self, "promise", None)
        if promise is not None:
            return f"{self.method}() on the answer of {promise.description}"
        ref = getattr(self, "ref", None)
        return "remote request" if ref is None else f"{self.method}() on {ref!r}"

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg=msg):
            return False
        connection = getattr(self, "connection", None)  # unset if the request never went out
        if connection is not None and self.request_id:
            connection.cancel_call(self.request_id)
        for dependent in getattr(self, "dependents", ()):
            dependent.cancel(msg)  # what was pipelined on this answer can never run now
        return True

    def callRemote(self, _name: str, /, *args: Any, **kwargs: Any) -> CallFuture:
        """Call ``_name`` on this call's answer, which must be a reference; do not wait for it.

        While the answer is on its way, the call goes out at once, addressed to
        it: the peer runs it as soon as the answer is ready. Awaiting the
        result gives this new call's answer; its failure is this call's own
        error when this call failed, or ``PipelineError`` when the answer is
        not a reference.
        """
        connection = getattr(self, "connection", None)
        if not self.done() and connection is not None and self.request_id:
            return connection.call_on_answer(self, _name, args, kwargs)
        return _call_on_result(self, _name, args, kwargs)

    def callRemoteNoAnswer(self, _name: str, /, *args: Any, **kwargs: Any) -> None:
        """Call ``_name`` on this call's answer without asking for an answer (fire and forget)."""
        connection = getattr(self, "connection", None)
        if not self.done() and connection is not None and self.request_id:
            connection.call_on_answer(self, _name, args, kwargs, answer=False)
        else:
            _call_on_result(self, _name, args, kwargs, answer=False)

    @property
    def remote(self) -> _PromisedMethods:
        """Attribute-style pipelined calls: ``root.remote.user("ada").remote.inbox()``."""
        return _PromisedMethods(self)

    def window(self, items: int | None = None, bytes: int | None = None) -> CallFuture:
        """Choose the window of the stream this call is expected to answer with; return this call.

        ``items`` and ``bytes`` (of payload) are how far the remote generator
        may run ahead of the reader (default 512 items and 4 MiB; each at most
        the ``Limits.max_stream_window`` and ``max_stream_window_bytes`` of
        both sides). The whole window is granted with the call, so the first
        items need no round trip: ``async for row in
        ref.callRemote("rows").window(items=64)``. Raises LimitExceeded for a
        window beyond this side's limits.
        """
        result = self.result() if self.done() and not self.cancelled() and self.exception() is None else None
        if isinstance(result, RemoteIterator):
            result.window(items, bytes)
            return self
        sink = self._stream_sink()
        if sink is not None:
            sink.window = sink.window.changed(items, bytes)
            sink.connection.stream_window(sink.request_id, sink.window)
        return self

    def __aiter__(self) -> AsyncIterator[Any]:
        """Iterate the stream this call answers with: ``async for item in ref.callRemote(...)``.

        The stream's window is granted now, with the call. A call that answers
        with something else than a stream raises TypeError when iterated.
        """
        if self.done() and not self.cancelled() and self.exception() is None:
            result = self.result()
            if isinstance(result, RemoteIterator):
                return result
        sink = self._stream_sink()
        if sink is None:
            return _not_a_stream(self)
        sink.connection.stream_window(sink.request_id, sink.window)
        return RemoteIterator(sink)

    def _stream_sink(self) -> StreamSink | None:
        """The sink of the stream this pending call may answer with, made on first use; None if done."""
        sink = getattr(self, "stream", None)
        if sink is None:
            connection = getattr(self, "connection", None)
            if connection is None or not self.request_id or self.done():
                return None
            sink = self.stream = StreamSink(
                connection, self.request_id, self.method, watch=getattr(self, "_watch", None)
            )
            self.add_done_callback(sink.call_settled)
        return sink


def _not_a_stream(future: CallFuture) -> Any:
    """What ``async for`` over a call that is settled, or never went out, iterates: its failure."""

    async def failing() -> Any:
        result = await future  # raises the call's own error
        if False:  # pragma: no cover - makes this an async generator
            yield
        raise not_a_stream(getattr(future, "method", "the call"), result)

    return failing()


class _PromisedMethods:
    __slots__ = ("_future",)

    def __init__(self, future: CallFuture):
        self._future = future

    def __getattr__(self, name: str) -> Callable[..., CallFuture]:
        if name.startswith("__"):
            raise AttributeError(name)
        future = self._future

        def call(*args: Any, **kwargs: Any) -> CallFuture:
            return future.callRemote(name, *args, **kwargs)

        call.__name__ = call.__qualname__ = name
        return call


def _call_on_result(
    promise: CallFuture, name: str, args: tuple, kwargs: dict, *, answer: bool = True
) -> CallFuture:
    """``promise.callRemote`` once its answer is known (or it never went out)."""
    loop = promise.get_loop()
    if promise.cancelled():
        failed = loop.create_future()
        failed.cancel()
        return failed  # type: ignore[return-value]
    error = promise.exception() if promise.done() else PipelineError("that call never went out")
    if error is None:
        target = promise.result()
        if isinstance(target, RemoteReference):
            if not answer:
                target.callRemoteNoAnswer(name, *args, **kwargs)
            return target.callRemote(name, *args, **kwargs)  # type: ignore[return-value]
        if isinstance(target, Referenceable):
            future = CallFuture(loop=loop)
            task = loop.create_task(_call_here(promise, target, name, args, kwargs))
            task.add_done_callback(lambda done: _settle(future, done))
            return future
        error = PipelineError(f"the answer is {type(target).__name__} {target!r:.60}, not a reference")
    failed = CallFuture(loop=loop)
    failed.set_exception(error)
    if not answer:
        failed.exception()  # nobody will look: do not warn that it was never retrieved
    return failed


async def _call_here(promise: CallFuture, target: Referenceable, name: str, args: tuple, kwargs: dict) -> Any:
    """Run a call on an answer that is one of our own objects, after the calls pipelined on it."""
    pending = [dependent for dependent in getattr(promise, "dependents", ()) if not dependent.done()]
    if pending:
        await asyncio.wait(pending)  # E-order: those were sent first
    method = remote_method(target, name)
    if method is None:
        raise NoSuchMethod(
            f"{NoSuchMethod.__module__}.{NoSuchMethod.__qualname__}",
            f"{type(target).__qualname__} has no remote method {name!r}",
        )
    result = method(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def _sink_of(token: Any) -> StreamSink:
    """The sink of a stream event's token: the sink bound to it, or the call's before it was bound."""
    return token if type(token) is StreamSink else token.stream


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future, done: asyncio.Future) -> None:
    if future.done():
        return
    if done.cancelled():
        future.cancel()
    elif done.exception() is not None:
        future.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        future.set_result(done.result())


#: Refused messages logged one by one on each connection; later ones are only
#: counted and summed up, so a peer sending bad messages in a loop cannot flood the log.
REFUSALS_LOGGED = 10
#: The fewest seconds between two summaries of one connection's (or address's) refusals.
REFUSAL_SUMMARY_INTERVAL = 10.0
#: Refused messages logged one by one per client address, over all its connections:
#: a peer that reconnects to start afresh is summed up too. The count starts over
#: once the address has sent nothing refused for ``ADDRESS_QUIET`` seconds.
ADDRESS_REFUSALS_LOGGED = 100
ADDRESS_QUIET = 60.0
#: What a log line quotes of a peer's text (a method name, an error message), in bytes.
LOGGED_TEXT = 200
# Addresses remembered for their refusals; the longest quiet is forgotten first.
_ADDRESSES_KEPT = 10_000


def _refusal_text(event: ev.MessageRefused) -> str:
    """``description: ErrorType: error`` as a summary quotes it, clipped: both may carry the peer's text."""
    error = clip(text_of(event.error), LOGGED_TEXT)
    return f"{clip(event.description, LOGGED_TEXT)}: {type(event.error).__name__}: {error}"


def _level(event: ev.MessageRefused) -> int:
    # A missing method or a call that does not fit the method is a peer's everyday
    # mistake; anything else may be malice or a bug.
    return logging.INFO if isinstance(event.error, (NoSuchMethod, TypeError)) else logging.WARNING


def _fits(event: ev.CallReceived) -> bool:
    """Whether the call's arguments fit the method's signature (asked once a call raised TypeError)."""
    method = event.method
    function, owner = getattr(method, "__func__", None), getattr(method, "__self__", None)
    try:
        if function is None:
            inspect.signature(method).bind(*event.args, **event.kwargs)
        else:
            _signature_of(function).bind(owner, *event.args, **event.kwargs)
    except TypeError:
        return False
    except ValueError:  # no signature to check (some builtins): assume the method's own fault
        return True
    return True


# The signatures of remote methods that were called with arguments that do not fit them.
_signatures: weakref.WeakKeyDictionary[Callable[..., Any], inspect.Signature] = weakref.WeakKeyDictionary()


def _signature_of(function: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature(function)``, worked out once per function: a flood asks again and again."""
    try:
        signature = _signatures.get(function)
    except TypeError:  # cannot be weakly referenced: not kept
        return inspect.signature(function)
    if signature is None:
        signature = _signatures[function] = inspect.signature(function)
    return signature


class _AddressRefusals:
    """One client address's refusals over all its connections, past its first few."""

    __slots__ = ("held", "held_warning", "last", "last_at", "logged", "reported_at", "timer")

    def __init__(self) -> None:
        self.logged = 0  # logged one by one since the address was last quiet
        self.last_at = -ADDRESS_QUIET
        self.held = 0
        self.held_warning = False
        self.last: tuple[ev.MessageRefused, str] | None = None
        self.reported_at = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def may_log(self, now: float) -> bool:
        """Count a refusal; whether it may still be logged on its own line."""
        if now - self.last_at >= ADDRESS_QUIET:
            self.logged = 0
        self.last_at = now
        self.logged += 1
        return self.logged <= ADDRESS_REFUSALS_LOGGED

    def hold(self, event: ev.MessageRefused, peer: str, loop: asyncio.AbstractEventLoop) -> None:
        self.held += 1
        self.held_warning |= _level(event) == logging.WARNING
        self.last = (event, peer)
        if self.timer is None:  # one summary per interval, even if no connection is left to close
            wait = max(0.0, REFUSAL_SUMMARY_INTERVAL - (loop.time() - self.reported_at))
            self.timer = loop.call_later(wait, self.report, loop)

    def report(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        if self.last is None:
            return
        event, peer = self.last
        now = loop.time()
        log.log(
            logging.WARNING if self.held_warning else logging.INFO,
            "refused %d more message(s) from %s's address in the last %.1f s, over its connections; last: %s",
            self.held,
            peer,
            now - self.reported_at if self.reported_at else now - self.last_at,
            _refusal_text(event),
        )
        self.held, self.held_warning, self.last, self.reported_at = 0, False, None, now


_addresses: OrderedDict[str, _AddressRefusals] = OrderedDict()


def _refusals_of(peer: str) -> _AddressRefusals:
    """The refusal record of ``peer``'s address (host without port)."""
    host = peer.rpartition(":")[0] or peer
    record = _addresses.pop(host, None) or _AddressRefusals()
    _addresses[host] = record
    if len(_addresses) > _ADDRESSES_KEPT:
        for stale in list(_addresses)[: len(_addresses) - _ADDRESSES_KEPT]:
            if _addresses[stale].timer is None:
                del _addresses[stale]
    return record


class _RefusalLog:
    """One connection's refused messages: the first few logged one by one, the rest in summaries.

    No timer: each refusal looks at the loop's clock, and closing the
    connection reports whatever is still held back. The address's own record
    (``_AddressRefusals``) holds back what a reconnecting peer would otherwise
    get logged afresh on each connection.
    """

    __slots__ = ("_count", "_held", "_held_warning", "_last", "_reported_at")

    def __init__(self) -> None:
        self._count = 0
        self._held = 0  # refusals counted but in no log line yet
        self._held_warning = False
        self._last: ev.MessageRefused | None = None  # the latest held-back refusal
        self._reported_at = 0.0  # loop time of the last line about this connection's refusals

    def refused(self, event: ev.MessageRefused, peer: str, loop: asyncio.AbstractEventLoop) -> None:
        """Log ``event`` if it is among the first few; otherwise count it and maybe sum up."""
        now = loop.time()
        level = _level(event)
        self._count += 1
        if self._count <= REFUSALS_LOGGED:
            address = _refusals_of(peer)
            if address.may_log(now):
                description = clip(event.description, LOGGED_TEXT)
                log.log(
                    level,
                    "refused %s from %s: %s",
                    description,
                    peer,
                    clip(text_of(event.error), LOGGED_TEXT),
                )
            else:
                address.hold(event, peer, loop)
            self._reported_at = now
            return
        self._held += 1
        self._held_warning |= level == logging.WARNING
        self._last = event
        if now - self._reported_at >= REFUSAL_SUMMARY_INTERVAL:
            self.report(peer, now)

    def report(self, peer: str, now: float) -> None:
        """Log one line for the refusals held back since the previous line, if there are any."""
        last = self._last
        if last is None:
            return
        log.log(
            logging.WARNING if self._held_warning else logging.INFO,
            "refused %d more message(s) from %s in the last %.1f s (%d in all on this connection); last: %s",
            self._held,
            peer,
            now - self._reported_at,
            self._count,
            _refusal_text(last),
        )
        self._last = None
        self._held = 0
        self._held_warning = False
        self._reported_at = now


class Connection(asyncio.BufferedProtocol):
    """One PB connection over an asyncio transport (client or server side)."""

    # Slots, as the Broker's (see there): with a __dict__ of this many keys every
    # attribute lookup on the read and write paths would miss CPython's fast paths.
    # A subclass's own attributes may live in its __dict__.
    __slots__ = (
        "__weakref__",
        "_buffer",
        "_buffered_at_pause",
        "_buffered_at_tick",
        "_collect_scheduled",
        "_credit_waiters",
        "_dead_peer_timeout",
        "_dispatching",
        "_flush_scheduled",
        "_handshake_timeout",
        "_handshake_timer",
        "_keepalive",
        "_keepalive_timer",
        "_last_heard",
        "_limits",
        "_loop",
        "_max_running",
        "_max_send_buffer",
        "_on_close",
        "_peer_done",
        "_ping_token",
        "_probe_timer",
        "_quiet_tasks",
        "_reading_backlog",
        "_refusals",
        "_registry",
        "_release_hooks",
        "_root_source",
        "_send_tracebacks",
        "_survivors",
        "_tasks",
        "_unsent",
        "_unsent_size",
        "_writing_paused",
        "broker",
        "close_reason",
        "closed",
        "peer",
        "ready",
        "transport",
    )

    def __init__(
        self,
        root: Any = None,
        *,
        limits: Limits | None = None,
        registry: CopyRegistry | None = None,
        send_tracebacks: bool = False,
        keepalive: float | None = None,
        dead_peer_timeout: float | None = None,
        handshake_timeout: float | None = 30.0,
        max_send_buffer: int = 64 * 1024 * 1024,
        on_close: Callable[[Connection], Any] | None = None,
    ):
        self._root_source = root
        self._limits = limits
        self._registry = registry
        self._send_tracebacks = send_tracebacks
        self._keepalive = keepalive
        self._dead_peer_timeout = dead_peer_timeout or (3 * keepalive if keepalive else None)
        self._handshake_timeout = handshake_timeout
        self._handshake_timer: asyncio.TimerHandle | None = None
        # Bytes we may hold for a peer that is not reading before we drop it:
        # back-pressure stops its requests, but pushes (cache updates) keep coming.
        self._max_send_buffer = max_send_buffer
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self.broker: Broker | None = None
        self.transport: asyncio.Transport | None = None
        self.peer: str = "?"
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.close_reason: BaseException | None = None
        self._flush_scheduled = False
        self._dispatching = False
        self._collect_scheduled = False
        self._tasks: dict[int, asyncio.Task] = {}  # running calls that want an answer, by request id
        # streams we send that wait for credit -> what CreditGranted resolves
        self._credit_waiters: dict[int, asyncio.Future[None]] = {}
        self._quiet_tasks: set[asyncio.Task] = set()  # running calls that want none
        self._survivors: set[asyncio.Task] = set()  # calls not to cancel at the close
        self._max_running = (limits or Limits()).max_inbound_calls
        self._peer_done = False  # the peer half-closed: close once its calls are answered
        self._probe_timer: asyncio.TimerHandle | None = None
        self._release_hooks: dict[int, list[Callable[[], Any]]] = {}
        self._last_heard = self._loop.time()
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._ping_token = 0
        # Set while back-pressure has stopped us reading: the peer's pongs wait
        # unread, so its draining of our send buffer is the sign of life instead.
        self._writing_paused = False
        # Output not yet given to the transport (see _WRITE_PIECE), and its size.
        self._unsent: deque[memoryview] = deque()
        self._unsent_size = 0
        self._buffered_at_tick = 0
        self._buffered_at_pause = 0
        # Set while reading is paused because messages of the last read wait to be handled.
        self._reading_backlog = False
        self._refusals = _RefusalLog()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this connection runs on (where calls on its references must be made)."""
        return self._loop

    # ---------------------------------------------------------------- asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._buffer = _receive_buffer()
        peername = transport.get_extra_info("peername")
        self.peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        root = self._root_source
        if isinstance(root, IPBRoot) and not isinstance(root, type):
            root = root.rootObject(self)  # a Root (itself), or a Portal (a login root per connection)
        elif callable(root) and not isinstance(root, Referenceable):
            root = root()  # a factory: one root per connection
        self.broker = Broker(
            root,
            limits=self._limits,
            registry=self._registry,
            send_tracebacks=self._send_tracebacks,
            peer_name=self.peer,
        )
        self.broker.invoker = self
        self.broker.on_collected = self._collected_soon
        # A login root (a Portal's) accepts only small frames until someone logs in.
        before_login = getattr(root, "max_frame_before_login", None)
        if before_login:
            self.broker.max_frame = before_login
        if self._keepalive:
            self._keepalive_timer = self._loop.call_later(self._keepalive, self._keepalive_tick)
        if self._handshake_timeout:
            self._handshake_timer = self._loop.call_later(self._handshake_timeout, self._handshake_expired)
        self._flush()

    @property
    def _open_broker(self) -> Broker:
        """``broker``, for what runs only once the connection is made (calls, answers, pings)."""
        broker = self.broker
        assert broker is not None, "the connection is not made yet"
        return broker

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        view = self._buffer[:nbytes]
        broker = self.broker
        assert broker is not None  # it exists from connection_made on, before any of this runs
        # Bytes parse faster, but while a large frame arrives the broker copies
        # each chunk from the view into it: no need for a copy in between. (A
        # small read is copied whatever it is, without asking the broker.)
        large = nbytes > _SMALL_READ and broker.receiving_large_frame
        self.data_received(view if large else view.tobytes())

    def data_received(self, data: bytes | memoryview) -> None:
        """Bytes that arrived, from ``buffer_updated`` or from a transport that has them as
        bytes already (a WebSocket message's payload): given as they are, not copied into
        the read buffer first."""
        broker = self.broker
        assert broker is not None and self.transport is not None
        # What the reader would hold had no message completed; asked only when it is needed.
        unfinished = broker.buffered_input + len(data) if self._dead_peer_timeout else 0
        waiting = broker.receive_data(data, _FRAMES_PER_TURN)
        if unfinished and broker.buffered_input < unfinished:
            # Some of these bytes completed a message (a PONG, say): a sign of life. Bytes that
            # only add to an unfinished frame are not, or one byte now and then would do.
            self._last_heard = self._loop.time()
        self._flush()
        if waiting and not self._reading_backlog:
            self._reading_backlog = True
            self.transport.pause_reading()
            self._loop.call_soon(self._read_backlog)

    def _read_backlog(self) -> None:
        """Handle the next messages of a read that held more than one turn's worth."""
        broker = self.broker
        if broker is not None and broker.receive_data(b"", _FRAMES_PER_TURN):
            self._flush()
            self._loop.call_soon(self._read_backlog)
            return
        self._flush()
        self._reading_backlog = False
        transport = self.transport
        if not self._writing_paused and not self._peer_done and transport and not transport.is_closing():
            transport.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        reason = self.close_reason or exc
        for timer in (self._keepalive_timer, self._handshake_timer, self._probe_timer):
            if timer is not None:
                timer.cancel()
        if self.broker is not None:
            self.broker.connection_lost(reason)
            self._flush()
        self._refusals.report(self.peer, self._loop.time())
        if not self.ready.done():
            self.ready.set_exception(_handshake_failure(reason))
            self.ready.exception()  # the opener reports it; don't warn about it twice
        # The calls the peer started go nowhere now: stop them (unless marked survives_disconnect).
        for task in [*self._tasks.values(), *self._quiet_tasks]:
            if task not in self._survivors:
                task.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close(self)
        self._release_hooks.clear()

    def eof_received(self) -> bool:
        # The peer has sent all it will (shutdown(SHUT_WR)) but may still read: finish the
        # calls it is waiting for, then close. Keeping the transport open says so to asyncio.
        self._peer_done = True
        if self.broker is not None and self.broker.backlog:
            self.broker.receive_data(b"")  # the messages it sent before the end, all of them now
        self._flush()
        if self._tasks:
            self._probe()
            return True
        return False

    def _probe(self) -> None:
        """While answers are owed to a half-closed peer, ping it now and then.

        A peer that died sends the same end-of-file as one that half-closed; only
        writing to it tells them apart (the dead one's host answers with a reset,
        which ends the connection and so cancels the calls it started).
        """
        if not self._tasks or self.transport is None or self.transport.is_closing():
            return
        self._ping_token += 1
        self._open_broker.ping(self._ping_token)
        self._flush()
        self._probe_timer = self._loop.call_later(_PROBE_INTERVAL, self._probe)

    def pause_writing(self) -> None:
        # The peer is not reading our answers: stop reading its requests.
        self._writing_paused = True
        self._buffered_at_tick = self._send_buffer_size()
        # What the write that paused us left buffered (a large answer, maybe) is not the peer's
        # fault: max_send_buffer bounds only what piles up beyond it while the peer does not read.
        self._buffered_at_pause = self._buffered_at_tick
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._last_heard = self._loop.time()  # it drained our buffer; its pongs come next
        if self._unsent:
            self._write_unsent()
            if self._writing_paused:  # the next piece filled the transport again
                return
        if self.transport is not None and not self.transport.is_closing() and not self._reading_backlog:
            self.transport.resume_reading()

    # ---------------------------------------------------------------- output

    def _flush(self) -> None:
        """Act on the broker's events, then write what it queued."""
        self._flush_scheduled = False
        broker = self.broker
        if broker is None:
            return
        if not self._dispatching:
            # A call made while we act on events flushes too: it leaves the events
            # to this loop, so they are acted on in order and each batch is done
            # before the broker hears of the next (see Broker.next_events).
            self._dispatching = True
            try:
                events: list[Any] = broker.next_events()
                while events:  # acting on events (running calls) may raise more
                    for event in events:  # the common kinds first
                        kind = type(event)
                        if kind is _CallReceived:
                            self._run_call(event)
                        elif kind is _AnswerReceived:
                            if not event.token.done():
                                event.token.set_result(event.value)
                        elif kind is _CallFailed:
                            if not event.token.done():
                                event.token.set_exception(event.error)
                        elif kind is _StreamItems:
                            _sink_of(event.token).put(event.values, event.shares())
                        else:
                            self._dispatch_rare(event)
                    events = broker.next_events()
            finally:
                self._dispatching = False
        transport = self.transport
        if not broker.has_data_to_send() or transport is None:
            return
        if transport.is_closing():
            # Nothing more reaches the peer (as with _write_unsent): a transport that
            # a failed write closed would log each later write, a broadcast's hundreds.
            broker.buffers_to_send()
            return
        for data in broker.buffers_to_send():
            if self._unsent or len(data) > _WRITE_PIECE:
                self._unsent.append(memoryview(data))  # behind what waits already: order is kept
                self._unsent_size += len(data)
                self._write_unsent()
            else:
                transport.write(data)
        if (
            self._writing_paused
            and self._send_buffer_size() - self._buffered_at_pause > self._max_send_buffer
        ):
            self._abort(
                PBConnectionLost(
                    f"peer {self.peer} is not reading: more than {self._max_send_buffer} bytes "
                    "wait for it (max_send_buffer)"
                )
            )

    def _write_unsent(self, everything: bool = False) -> None:
        """Give the transport the next pieces of the unsent output, until it pauses us.

        ``everything``: all of it now, whatever the transport says (before closing it).
        """
        transport = self.transport
        unsent = self._unsent
        if transport is None or transport.is_closing():
            unsent.clear()
            self._unsent_size = 0
            return
        while unsent and (everything or not self._writing_paused):
            view = unsent[0]
            if len(view) > _WRITE_PIECE and not everything:
                unsent[0] = view[_WRITE_PIECE:]
                view = view[:_WRITE_PIECE]
            else:
                unsent.popleft()
            self._unsent_size -= len(view)
            transport.write(view)

    def _send_buffer_size(self) -> int:
        """Bytes written but not yet taken by the peer: the transport's and our own unsent."""
        buffered = self.transport.get_write_buffer_size() if self.transport is not None else 0
        return buffered + self._unsent_size

    def _close_transport(self) -> None:
        """Close the transport once what is written is sent (the unsent output too)."""
        if self._unsent:
            self._write_unsent(everything=True)
        if self.transport is not None:
            self.transport.close()

    def _handshake_expired(self) -> None:
        if not self.ready.done():
            self._abort(
                ProtocolError(
                    f"peer {self.peer} did not complete the pbnb handshake in {self._handshake_timeout}s"
                )
            )

    def _abort(self, reason: BaseException) -> None:
        """Drop the connection at once because of ``reason`` (logged, and given to pending calls)."""
        self.close_reason = reason
        log.warning("%s", reason)
        if self.transport is not None:
            self.transport.abort()

    def _flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _collected_soon(self) -> None:
        # Called from weakref callbacks: maybe in the garbage collector, maybe
        # on another thread. Only schedule; never send from here.
        if not self._collect_scheduled:
            self._collect_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._flush_collected)
            except RuntimeError:  # loop closed: the connection is gone anyway
                pass

    def _flush_collected(self) -> None:
        self._collect_scheduled = False
        if self.broker is not None:
            self.broker.flush_collected()
            self._flush()

    # --------------------------------------------------------------- events

    def _dispatch_rare(self, event: Any) -> None:
        if type(event) is ev.ProgressReceived:
            token = event.token
            if type(token) is StreamSink:  # a stream's, once its iterator was handed over
                token.progress_received(event.progress)
            else:
                received = getattr(token, "_progress_received", None)  # a CallFuture's
                if received is not None:
                    received(event.progress)
        elif isinstance(event, ev.HandshakeCompleted):
            if not self.ready.done():
                self.ready.set_result(None)
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
        elif isinstance(event, ev.CancelRequested):
            task = self._tasks.get(event.request_id)
            if task is not None:
                # Soon, not now: a CANCEL read with its CALL would reach a task that has not started,
                # and a task cancelled before its first step never runs the code that answers the
                # call, forgets the task and closes the method's coroutine. Its first step is queued
                # already, so this comes after it.
                self._loop.call_soon(task.cancel, "cancelled by the caller")
        elif isinstance(event, ev.StreamOpened):
            self._stream_opened(event.token, event.request_id)
        elif isinstance(event, ev.StreamEnded):
            _sink_of(event.token).end(event.error)
        elif isinstance(event, ev.CreditGranted):
            waiter = self._credit_waiters.get(event.request_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif isinstance(event, ev.ObjectReleased):
            for hook in self._release_hooks.pop(id(event.obj), ()):
                self._run_hook(hook)
        elif isinstance(event, ev.CacheReleased):
            self._run_hook(lambda: event.cacheable.stoppedObserving(event.perspective, event.observer))
        elif isinstance(event, ev.MessageRefused):
            self._refusals.refused(event, self.peer, self._loop)
        elif isinstance(event, ev.CallbackFailed):
            log.error("disconnect callback %r failed", event.callback, exc_info=event.error)
        elif isinstance(event, ev.ConnectionFailed):
            self.close_reason = event.error
            if event.by_peer:
                # Before the handshake the opener raises this error itself: say it once.
                level = logging.WARNING if self.ready.done() else logging.INFO
                log.log(level, "%s closed the connection: %s", self.peer, event.error)
            else:
                log.warning("closing connection to %s: %s", self.peer, event.error)
            self._flush()
            if self.transport is not None:
                self._close_transport()

    def _run_hook(self, hook: Callable[[], Any]) -> None:
        try:
            result = hook()
            if inspect.isawaitable(result):
                self._loop.create_task(self._await_hook(result))
        except Exception:
            log.exception("release hook failed on connection to %s", self.peer)

    @staticmethod
    async def _await_hook(awaitable: Any) -> None:
        try:
            await awaitable
        except Exception:
            log.exception("release hook failed")

    def on_release(self, obj: Any, hook: Callable[[], Any]) -> None:
        """Run ``hook()`` once when the peer releases ``obj`` or the connection closes."""
        self._release_hooks.setdefault(id(obj), []).append(hook)

    def _run_call(self, event: ev.CallReceived) -> None:
        if not event.request_id and len(self._quiet_tasks) + len(self._tasks) >= self._max_running:
            # The broker counts calls awaiting answers; calls that want none are counted here.
            error = LimitExceeded(
                f"peer has {len(self._quiet_tasks) + len(self._tasks)} calls running here (max_inbound_calls)"
            )
            self._refusals.refused(ev.MessageRefused(error, f"call of {event.name!r}"), self.peer, self._loop)
            return
        perspective = event.perspective
        # Set only when it differs: most calls run under None, which is usually there already.
        reset = current_perspective.set(perspective) if current_perspective.get() is not perspective else None
        reset_serving = _serving.set(event)
        try:
            kwargs = event.kwargs
            result = event.method(*event.args, **kwargs) if kwargs else event.method(*event.args)
        except Exception as exc:
            self._report_failure(event, exc)
            return
        finally:
            if reset is not None:
                current_perspective.reset(reset)
            _serving.reset(reset_serving)
        if type(result) not in _NOT_AWAITABLE and (
            inspect.isawaitable(result) or inspect.isasyncgen(result) or inspect.isgenerator(result)
        ):
            task: asyncio.Task | None
            if inspect.isawaitable(result):
                task = self._loop.create_task(self._finish_call(event, result))
                survives = getattr(event.method, "_pb_survives_disconnect", False)
            else:  # a generator: its answer is a stream, which cannot outlive its reader's connection
                task = self._start_stream(event, result)
                if task is None:
                    return
                survives = False
            if event.request_id:
                self._tasks[event.request_id] = task
            else:  # counted against max_inbound_calls, and cancelled at the close, all the same
                self._quiet_tasks.add(task)
                task.add_done_callback(self._quiet_tasks.discard)
            if survives:
                self._survivors.add(task)
                task.add_done_callback(self._survivors.discard)
        elif event.request_id:
            self._open_broker.answer(event.request_id, result, event.perspective)

    async def _finish_call(self, event: ev.CallReceived, awaitable: Any) -> None:
        current_perspective.set(event.perspective)
        _serving.set(event)
        try:
            result = await awaitable
        except asyncio.CancelledError:
            self._open_broker.fail(event.request_id, CallCancelled("cancelled"), event.perspective)
        except Exception as exc:
            self._report_failure(event, exc)
        else:
            if event.request_id:
                self._open_broker.answer(event.request_id, result, event.perspective)
        finally:
            self._call_over(event.request_id)

    def _call_over(self, request_id: int) -> None:
        self._tasks.pop(request_id, None)
        self._flush_soon()
        if self._peer_done and not self._tasks and self.transport is not None:
            self._loop.call_soon(self.transport.close)  # after the flush: the answers go first

    # -------------------------------------------------------------- streams

    def _start_stream(self, event: ev.CallReceived, generator: Any) -> asyncio.Task | None:
        """The method is a generator: open its stream and start pumping it; None if it cannot stream."""
        try:
            opened = self._open_broker.open_stream(event.request_id)
        except LimitExceeded as exc:
            opened = False
            self._open_broker.fail(event.request_id, exc, event.perspective)
        if not opened:  # no answer wanted, or refused: the generator never starts (nothing to close)
            return None
        return self._loop.create_task(self._pump_stream(event, generator))

    async def _pump_stream(self, event: ev.CallReceived, generator: Any) -> None:
        """Send the generator's items as credit allows; end the stream with its end or its error."""
        current_perspective.set(event.perspective)
        _serving.set(event)
        broker = self.broker
        assert broker is not None
        request_id = event.request_id
        is_async = inspect.isasyncgen(generator)
        try:
            may_send = broker.may_send_item(request_id)
            burst = 0
            while True:
                if not may_send:
                    await self._credit_for(request_id)
                    may_send = broker.may_send_item(request_id)
                    continue
                try:
                    item = await generator.__anext__() if is_async else next(generator)
                except (StopAsyncIteration, StopIteration):
                    broker.answer(request_id, None, event.perspective)
                    return
                may_send = broker.send_item(request_id, item, event.perspective)
                burst += 1
                if burst == _STREAM_BURST:
                    # A generator that never waits would hold the loop for its whole
                    # credit: write what it made, so the reader starts on it, and let
                    # the loop turn (credit and other calls come in) before going on.
                    burst = 0
                    self._flush()
                    await asyncio.sleep(0)
                    # Credit may have come meanwhile, and found nobody waiting for it.
                    may_send = broker.may_send_item(request_id)
                elif not self._flush_scheduled:
                    self._flush_soon()
        except asyncio.CancelledError:
            broker.fail(request_id, CallCancelled("cancelled"), event.perspective)
        except Exception as exc:
            self._report_failure(event, exc)
        finally:
            try:  # the generator's own finally runs now, whatever ended the stream
                await generator.aclose() if is_async else generator.close()
            except Exception:
                log.exception("closing the stream of %s failed", clip(event.name, LOGGED_TEXT))
            self._call_over(request_id)

    async def _credit_for(self, request_id: int) -> None:
        """Wait until the peer grants the stream ``request_id`` credit (CreditGranted)."""
        waiter = self._credit_waiters[request_id] = self._loop.create_future()
        try:
            await waiter
        finally:
            del self._credit_waiters[request_id]

    def _stream_opened(self, future: CallFuture, request_id: int) -> None:
        """Our call's answer is a stream: its sink takes the items, the future gets its iterator."""
        sink = getattr(future, "stream", None)
        if sink is None:
            # Progress callbacks given to the call go on with its stream.
            sink = future.stream = StreamSink(
                self, request_id, future.method, watch=getattr(future, "_watch", None)
            )
        self._open_broker.bind_stream(request_id, sink)
        if not future.done():
            alive = sink.iterator() if sink.iterator is not None else None
            future.set_result(alive if alive is not None else RemoteIterator(sink))
        # (a cancelled future cancelled the stream at once: the broker drops its items)

    def stream_read(self, request_id: int, items: int, size: int) -> None:
        """The reader took ``items`` items (``size`` bytes) of stream ``request_id``: credit may go back."""
        broker = self.broker
        if broker is not None:
            broker.stream_read(request_id, items, size)
            if broker.has_data_to_send():
                self._flush_soon()

    def stream_window(self, request_id: int, window: Window) -> None:
        """Set the window of the stream answering our call ``request_id`` (granted at once if pending)."""
        if self.broker is not None:
            self.broker.stream_window(request_id, window)
            self._flush_soon()

    def close_stream(self, request_id: int) -> None:
        """Stop the stream answering our call ``request_id``: the peer closes its generator."""
        self.cancel_call(request_id)

    def _report_failure(self, event: ev.CallReceived, exc: Exception) -> None:
        where = f"{type(event.target).__qualname__}.{clip(event.name, LOGGED_TEXT)} called by {self.peer}"
        if isinstance(exc, TypeError) and not _fits(event):
            # The caller's mistake, like a missing method: one line (summed up in a flood), no traceback.
            self._refusals.refused(ev.MessageRefused(exc, f"call of {event.name!r}"), self.peer, self._loop)
        elif isinstance(exc, Error):
            log.debug("%s raised %s", where, repr(exc))  # a string: records must not pin frames
        else:
            log.error("unhandled error in %s", where, exc_info=exc)
        if event.request_id:
            self._open_broker.fail(event.request_id, exc, event.perspective)

    # ---------------------------------------------------- invoker interface

    def call(self, ref: RemoteReference, name: str, args: tuple, kwargs: dict) -> CallFuture:
        """Start a remote call; the returned future settles with its answer.

        What makes the call impossible is raised here, before anything is sent, as
        Twisted's ``callRemote`` did: DeadReferenceError on a connection known to be
        gone, InsecureJelly (or another SerializationError) for arguments that
        cannot be sent.
        """
        future = CallFuture(loop=self._loop)
        broker = self.broker
        assert broker is not None  # calls are made on references, which only an open broker hands out
        # _sending_perspective(), written out: this runs for every call.
        serving = _serving.get()
        perspective = (
            current_perspective.get()
            if serving is not None and serving.broker is broker
            else broker.perspective
        )
        future.request_id = broker.call(ref, name, args, kwargs, future, perspective=perspective)
        if not future.request_id:  # an update for a copy the peer already let go of
            log.debug("dropped %s() for %r: the peer let go of that copy", name, ref)
            future.set_result(None)
            return future
        future.connection = self
        future.ref = ref
        future.method = name
        if broker.pending_calls == 1 or broker.queued_frames >= _BURST_FRAMES:
            # Alone, or a burst already worth a write: send now rather than a
            # loop turn later, so the peer starts on these calls while we make the rest.
            self._flush()
        else:
            self._flush_soon()
        return future

    def call_on_answer(
        self, promise: CallFuture, name: str, args: tuple, kwargs: dict, *, answer: bool = True
    ) -> CallFuture:
        """Start a call on the answer ``promise`` waits for (promise pipelining)."""
        broker = self.broker
        if broker is not None and not broker.is_pending(promise.request_id) and not broker.disconnected:
            self._flush()  # the answer arrived and waits in the event queue: settle it first
        if promise.done():
            return _call_on_result(promise, name, args, kwargs, answer=answer)
        future = CallFuture(loop=self._loop)
        if broker is None or not broker.is_pending(promise.request_id):
            # Its answer is decoded but not handed over yet (we are acting on an
            # earlier event of the same batch): call the answer once it is.
            promise.add_done_callback(
                lambda done: _call_on_result(done, name, args, kwargs, answer=answer).add_done_callback(
                    lambda inner: _settle(future, inner)
                )
            )
            return future
        try:
            future.request_id = broker.call_on_answer(
                promise.request_id,
                name,
                args,
                kwargs,
                future,
                answer=answer,
                perspective=self._sending_perspective(),
            )
        except Exception as exc:
            future.set_exception(exc)
            if not answer:
                raise
            return future
        future.connection = self
        future.method = name
        future.promise = promise
        if answer:
            try:
                promise.dependents.append(future)
            except AttributeError:
                promise.dependents = [future]
                # Its failure reaches the calls pipelined on it: never warn that nobody read it.
                promise.add_done_callback(_retrieve)
        self._flush_soon()
        return future

    def call_no_answer(self, ref: RemoteReference, name: str, args: tuple, kwargs: dict) -> None:
        self._open_broker.call(
            ref, name, args, kwargs, None, answer=False, perspective=self._sending_perspective()
        )
        self._flush_soon()

    def call_packed(self, ref: CacheObserver, name: str, payload: bytes | PackedCall) -> None:
        """Queue a broadcast call whose arguments were packed once for every peer."""
        broker = self.broker
        assert broker is not None  # observers are only made by an open broker
        if self._flush_scheduled:
            broker.call_packed(ref, name, payload)
        # Otherwise written at once, so in a fan-out each peer starts working while
        # the others are still being served, and nothing is left behind for the
        # loop (per-peer callbacks would cost a broadcast more than its writes).
        elif (
            not (self._dispatching or self._unsent or self._writing_paused)
            and (transport := self.transport) is not None
            and not transport.is_closing()
        ):
            # The common case of a broadcast: _flush's work, without its checks and queue.
            frame = broker.packed_call_now(ref, name, payload)
            if frame is not None:
                transport.write(frame)
            else:  # queued behind other frames or events
                self._flush()
        else:
            broker.call_packed(ref, name, payload)
            self._flush()

    def send_progress(self, call: ev.CallReceived) -> None:
        """Send the report ``call``'s progress record holds, if its caller still waits (``pb.progress``)."""
        throttle = call.throttle
        assert throttle is not None  # pb.progress made it before it asked for this
        report = throttle.take(monotonic())
        if report is not None and self.broker is not None:
            self.broker.progress(call.request_id, report)
            self._flush()

    def _sending_perspective(self) -> Any:
        # A call made while serving another connection's user must not go out
        # under that user's perspective: it would bind Viewables to the wrong avatar.
        serving = _serving.get()
        if serving is not None and serving.broker is self.broker:
            return current_perspective.get()
        return self._open_broker.perspective

    def describe(self, ref: RemoteReference) -> asyncio.Future:
        """Ask the peer to describe ``ref`` (the broker keeps the answer: ``ref.description``)."""
        return self._request(lambda token: self._open_broker.request_description(ref, token))

    def get_root(self) -> asyncio.Future:
        """Ask the peer for its root object."""
        return self._request(self._open_broker.request_root)

    def _request(self, send: Callable[[Any], int]) -> CallFuture:
        future = CallFuture(loop=self._loop)
        try:
            future.request_id = send(future)
        except Exception as exc:
            future.set_exception(exc)
            return future
        future.connection = self
        self._flush_soon()
        return future

    def cancel_call(self, request_id: int) -> None:
        """Stop waiting for the answer to ``request_id`` and tell the peer (CallFuture.cancel)."""
        if self.broker is not None and not self.broker.disconnected:
            self.broker.cancel(request_id)
            self._flush_soon()

    # ------------------------------------------------------------ keepalive

    def _keepalive_tick(self) -> None:
        if self._writing_paused and self.transport is not None:
            buffered = self._send_buffer_size()
            if buffered < self._buffered_at_tick:
                self._last_heard = self._loop.time()  # slow, not silent: it is reading
            self._buffered_at_tick = buffered
        silent_for = self._loop.time() - self._last_heard
        if self._dead_peer_timeout and silent_for > self._dead_peer_timeout:
            self._abort(PBConnectionLost(f"peer {self.peer} silent for {silent_for:.1f}s (keepalive)"))
            return
        self._ping_token += 1
        self._open_broker.ping(self._ping_token)
        self._flush()
        self._keepalive_timer = self._loop.call_later(self._keepalive, self._keepalive_tick)  # type: ignore

    # ----------------------------------------------------------------- close

    async def close(self) -> None:
        """Close the connection and wait until it is down."""
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self._close_transport()
        await asyncio.shield(self.closed)

    def abort(self) -> None:
        """Drop the connection at once, without flushing."""
        if self.transport is not None:
            self.transport.abort()
