"""The consumer's end of a remote stream: ``RemoteIterator``, and the sink the connection fills.

A remote method that is a generator answers with a stream (the rules are in
:mod:`pbnb.core.streaming`). The connection puts each arriving item into the
stream's ``StreamSink``; a ``RemoteIterator`` hands them to ``async for`` and
tells the broker as it goes, which grants more credit. The broker holds the
sink, never the iterator, so an iterator nobody holds any more is collected
and closes its stream.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.progress import Progress
from ..core.streaming import Window
from .reports import ProgressWatch

if TYPE_CHECKING:
    from .connection import Connection


class StreamSink:
    """One incoming stream as its connection sees it: the items not read yet, and how it ended."""

    __slots__ = (
        "closed_here",
        "connection",
        "ended",
        "error",
        "iterator",
        "method",
        "queue",
        "read_bytes",
        "read_items",
        "request_id",
        "waiter",
        "watch",
        "window",
    )

    def __init__(
        self,
        connection: Connection,
        request_id: int,
        method: str,
        window: Window | None = None,
        watch: ProgressWatch | None = None,
    ):
        self.connection = connection
        self.request_id = request_id
        self.method = method
        self.window = window or Window()
        #: (value, payload size) of the items arrived and not read yet.
        self.queue: deque[tuple[Any, int]] = deque()
        #: No item will arrive any more (the peer ended it, it failed, or it was closed).
        self.ended = False
        #: Why it ended, raised once the queued items are read; None for a normal end.
        self.error: BaseException | None = None
        #: This side stopped it before its end (close()).
        self.closed_here = False
        #: Set while the reader waits for the next item or the end.
        self.waiter: asyncio.Future[None] | None = None
        #: The RemoteIterator reading this sink, while it lives.
        self.iterator: weakref.ref[RemoteIterator] | None = None
        # Items read (and their payload bytes) not yet reported to the broker.
        self.read_items = 0
        self.read_bytes = 0
        #: The generator's progress reports (``pb.progress``), once it made one or someone
        #: watches; the call's own if someone watched the call before it answered.
        self.watch = watch

    def put(self, values: list, sizes: list[int]) -> None:
        """Items arrived, with what each cost in payload bytes."""
        if not self.ended:
            self.queue.extend(zip(values, sizes, strict=True))
            self._wake()

    def take(self) -> Any:
        """The next queued item; the broker hears of reads often enough to grant credit in time."""
        value, size = self.queue.popleft()
        self.read_items += 1
        self.read_bytes += size
        window = self.window
        # Reported when the reader caught up (it will wait: credit must go now) or a
        # quarter window was read (credit goes back at half), not after every item.
        if not self.queue or self.read_items * 4 >= window.items or self.read_bytes * 4 >= window.bytes:
            if not self.ended:
                self.connection.stream_read(self.request_id, self.read_items, self.read_bytes)
            self.read_items = self.read_bytes = 0
        return value

    def progress_received(self, progress: Progress) -> None:
        """The generator reported how far it has got."""
        if not self.ended:
            self.progress_watch().received(progress)

    def progress_watch(self) -> ProgressWatch:
        """The sink's progress record, made when first needed."""
        if self.watch is None:
            self.watch = ProgressWatch()
        return self.watch

    def end(self, error: BaseException | None) -> None:
        """The stream is over, with ``error`` unless it ended normally."""
        if not self.ended:
            self.ended = True
            self.error = error
            self._wake()

    def call_settled(self, future: asyncio.Future) -> None:
        """The call this sink was made for before its answer came is settled: unless it streams, end."""
        if future.cancelled():
            self.end(asyncio.CancelledError())
        elif future.exception() is not None:
            self.end(future.exception())
        elif not isinstance(future.result(), RemoteIterator):
            self.end(not_a_stream(self.method, future.result()))

    def close(self) -> None:
        """Stop the stream: drop what is queued and tell the peer (its generator is closed there)."""
        self.queue.clear()
        if not self.ended:
            self.closed_here = True
            self.end(None)
            self.connection.close_stream(self.request_id)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class RemoteIterator:
    """The items of a remote generator, as they arrive: ``async for item in iterator``.

    ``await ref.callRemote(name, ...)`` gives one when the remote method is a
    generator; ``async for item in ref.callRemote(name, ...)`` iterates it
    directly. Credit flows back as items are read, so at most one window is
    ever queued (see ``CallFuture.window``). ``break``, ``aclose()``,
    cancelling the task waiting for an item, or dropping the iterator stops
    the remote generator; an exception raised there is raised here after the
    items sent before it.
    """

    __slots__ = ("__weakref__", "_sink", "received")

    def __init__(self, sink: StreamSink):
        self._sink = sink
        sink.iterator = weakref.ref(self)
        #: How many items this iterator handed out so far.
        self.received = 0

    @property
    def method(self) -> str:
        """The name of the remote method streaming (for displays)."""
        return self._sink.method

    @property
    def done(self) -> bool:
        """Whether no more items will arrive: the stream ended, failed or was closed.

        Items that arrived before the end may still wait to be read.
        """
        return self._sink.ended

    @property
    def stopped(self) -> bool:
        """Whether this side stopped the stream before its end (``aclose()``, a cancelled reader)."""
        return self._sink.closed_here

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop of the connection the items arrive on: iterate there."""
        return self._sink.connection.loop

    @property
    def progress(self) -> Progress | None:
        """The latest progress the remote generator reported (``pb.progress``), or None if none yet."""
        watch = self._sink.watch
        return None if watch is None else watch.latest

    def on_progress(self, callback: Callable[[Progress], Any]) -> None:
        """Call ``callback(progress)`` in the loop on each progress report of the generator until it ends.

        As ``CallFuture.on_progress``: a report already in hand is given soon,
        and what the callback raises is logged.
        """
        self._sink.progress_watch().add(callback, self._sink.connection.loop)

    @property
    def queued(self) -> int:
        """How many items arrived and wait to be read."""
        return len(self._sink.queue)

    def window(self, items: int | None = None, bytes: int | None = None) -> RemoteIterator:
        """Change how far the remote generator may run ahead of this reader (items, payload bytes).

        Takes effect as items are read: credit already granted is not taken back.
        """
        sink = self._sink
        sink.window = sink.window.changed(items, bytes)
        if not sink.ended:
            sink.connection.stream_window(sink.request_id, sink.window)
        return self

    def __aiter__(self) -> RemoteIterator:
        return self

    async def __anext__(self) -> Any:
        sink = self._sink
        while not sink.queue:
            if sink.ended:
                error, sink.error = sink.error, None
                if error is not None:
                    raise error
                raise StopAsyncIteration
            sink.waiter = waiter = sink.connection.loop.create_future()
            try:
                await waiter
            except asyncio.CancelledError:
                sink.close()  # the reader was cancelled: nobody will read the rest
                raise
            finally:
                sink.waiter = None
        self.received += 1
        return sink.take()

    async def aclose(self) -> None:
        """Stop the stream now; the remote generator is closed (its ``finally`` runs there)."""
        self._sink.close()

    def __del__(self) -> None:
        # Maybe in the garbage collector, maybe on another thread: only schedule.
        sink = self._sink
        if not sink.ended:
            try:
                sink.connection.loop.call_soon_threadsafe(sink.close)
            except RuntimeError:  # the loop is closed: so is the connection
                pass

    def __repr__(self) -> str:
        state = "done" if self._sink.ended else "streaming"
        return f"<RemoteIterator {self.method}() {state}, {self.received} received>"


def not_a_stream(method: str, value: Any) -> TypeError:
    """The error of iterating a call whose answer is ``value``, not a stream."""
    return TypeError(f"{method}() answered {type(value).__name__} {value!r:.60}, not a stream")
