"""Blocking helpers for code that cannot await (scripts, REPLs, other threads).

The broker still runs on an asyncio loop: a private one in a daemon thread.
Every blocking call submits a coroutine to that loop and waits for its result,
so a blocking client behaves exactly like an async one, including callbacks
from the server, which run on the loop thread::

    from pbnb.aio import blocking

    with blocking.connect("127.0.0.1", 8787) as client:
        root = client.getRootObject()
        print(root.callRemote("hello", "ada"))
        for row in root.callRemote("rows"):  # a remote generator: a BlockingIterator
            print(row)
        call = root.start("measure", 1000)  # sent; a BlockingCall to watch and wait on
        call.on_progress(print)  # runs on the loop thread for each pb.progress report
        print(call.result())
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from types import EllipsisType
from typing import Any

from ..core.progress import Progress
from ..core.reference import RemoteReference
from .client import Client
from .client import connect as _connect
from .connection import CallFuture
from .streams import RemoteIterator

__all__ = ["BlockingCall", "BlockingClient", "BlockingIterator", "BlockingReference", "connect"]


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pbnb-blocking", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
        """Run ``coroutine`` on the loop thread and wait up to ``timeout`` for its result."""
        return self.wait(self.submit(coroutine), timeout)

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Start ``coroutine`` on the loop thread; cancelling the future cancels it."""
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a blocking pbnb call cannot run on its own loop thread; await instead")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def wait(self, future: concurrent.futures.Future, timeout: float | None) -> Any:
        """The result of ``future`` from :meth:`submit`, waited for at most ``timeout``."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking pbnb call cannot wait on its own loop thread; await instead")
        return future.result(timeout)

    def stop(self) -> None:
        """Stop the loop, wait for its thread, and close it."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class BlockingReference:
    """A RemoteReference whose ``callRemote`` waits for the answer."""

    def __init__(self, ref: RemoteReference, runner: _LoopThread, timeout: float | None):
        self.ref = ref
        self._runner = runner
        self._timeout = timeout

    def callRemote(self, _name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call a remote method and return its answer (references come back wrapped)."""

        async def call() -> Any:
            return await self.ref.callRemote(_name, *args, **kwargs)

        return _blocking(self._runner.run(call(), self._timeout), self._runner, self._timeout)

    def start(self, _name: str, /, *args: Any, **kwargs: Any) -> BlockingCall:
        """Send a call and return at once: a :class:`BlockingCall` to watch (progress) and wait on."""

        async def send() -> Any:  # a CallFuture: the aio driver makes every call one
            return self.ref.callRemote(_name, *args, **kwargs)

        return BlockingCall(self._runner.run(send(), self._timeout), self._runner, self._timeout)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlockingReference) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    def __repr__(self) -> str:
        return f"<Blocking {self.ref!r}>"


async def _answer(future: CallFuture) -> Any:
    return await future  # cancelling the task that awaits it cancels the call, and tells the peer


async def _watch(subject: CallFuture | RemoteIterator, callback: Callable[[Progress], Any]) -> None:
    subject.on_progress(callback)  # on the loop: its records are the loop's


class BlockingCall:
    """A call on its way (``BlockingReference.start``): its progress, and its answer when asked.

    ``progress`` is the latest report of ``pb.progress`` on the other side (None
    before the first); ``on_progress(callback)`` runs ``callback`` on the
    client's loop thread for each report (keep it short, and lock what it
    shares with your thread); ``result()`` waits for the answer.
    """

    def __init__(self, future: CallFuture, runner: _LoopThread, timeout: float | None):
        self.future = future
        self._runner = runner
        self._timeout = timeout
        self._answer = runner.submit(_answer(future))

    @property
    def progress(self) -> Progress | None:
        """The latest progress report, or None if none arrived yet."""
        return self.future.progress

    def on_progress(self, callback: Callable[[Progress], Any]) -> None:
        """Call ``callback(progress)`` on the loop thread for each report (a report in hand: soon)."""
        self._runner.run(_watch(self.future, callback), self._timeout)

    def result(self, timeout: float | EllipsisType | None = ...) -> Any:
        """Wait for the answer (at most ``timeout`` seconds, by default the client's) and return it.

        Raises what the remote method raised, ``CancelledError`` after
        ``cancel()``, and ``TimeoutError`` when the wait is over (the call goes on).
        """
        wait = self._timeout if timeout is ... else timeout
        return _blocking(self._runner.wait(self._answer, wait), self._runner, self._timeout)

    def done(self) -> bool:
        """Whether the answer (or failure) is in."""
        return self._answer.done()

    def cancel(self) -> bool:
        """Cancel the call (the peer is told); False if it had already finished."""
        return self._answer.cancel()

    def __repr__(self) -> str:
        return f"<BlockingCall {self.future.description}>"


class BlockingIterator:
    """A remote stream read with a plain ``for`` loop; each item waits at most ``timeout``.

    ``close()`` (or leaving a ``with`` block, or dropping it) stops the remote
    generator, as ``aclose()`` does for the ``RemoteIterator`` it wraps.
    """

    def __init__(self, iterator: RemoteIterator, runner: _LoopThread, timeout: float | None):
        self.iterator = iterator
        self._runner = runner
        self._timeout = timeout

    def __iter__(self) -> BlockingIterator:
        return self

    def __next__(self) -> Any:
        async def step() -> tuple[bool, Any]:
            try:
                return True, await self.iterator.__anext__()
            except StopAsyncIteration:
                return False, None

        more, item = self._runner.run(step(), self._timeout)
        if not more:
            raise StopIteration
        return _blocking(item, self._runner, self._timeout)

    @property
    def received(self) -> int:
        """How many items were read so far."""
        return self.iterator.received

    @property
    def done(self) -> bool:
        """Whether no more items will arrive (see ``RemoteIterator.done``)."""
        return self.iterator.done

    @property
    def progress(self) -> Progress | None:
        """The latest progress the remote generator reported, or None if none yet."""
        return self.iterator.progress

    def on_progress(self, callback: Callable[[Progress], Any]) -> None:
        """Call ``callback(progress)`` on the loop thread for each report of the generator."""
        self._runner.run(_watch(self.iterator, callback), self._timeout)

    def close(self) -> None:
        """Stop the stream; the remote generator is closed."""
        self._runner.run(self.iterator.aclose(), self._timeout)

    def __enter__(self) -> BlockingIterator:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Blocking {self.iterator!r}>"


def _blocking(value: Any, runner: _LoopThread, timeout: float | None) -> Any:
    """``value`` as blocking code uses it: references and streams wrapped, the rest as it is."""
    if isinstance(value, RemoteReference):
        return BlockingReference(value, runner, timeout)
    if isinstance(value, RemoteIterator):
        return BlockingIterator(value, runner, timeout)
    return value


class BlockingClient:
    """A connected client whose methods block; close it (or use ``with``)."""

    def __init__(self, client: Client, runner: _LoopThread, timeout: float | None):
        self.client = client
        self._runner = runner
        self._timeout = timeout

    def getRootObject(self) -> BlockingReference:
        """Return the server's root object."""
        ref = self._runner.run(self.client.getRootObject(), self._timeout)
        return BlockingReference(ref, self._runner, self._timeout)

    def login(self, credentials: Any, mind: Any = None, *, client: Any = None) -> BlockingReference:
        """Log in through the server's Portal; return your avatar (``client=`` is ``mind``)."""
        ref = self._runner.run(self.client.login(credentials, mind, client=client), self._timeout)
        return BlockingReference(ref, self._runner, self._timeout)

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        try:
            self._runner.run(self.client.close(), self._timeout)
        finally:
            self._runner.stop()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def connect(
    host: str, port: int | None = None, *, timeout: float | None = 30.0, **options: Any
) -> BlockingClient:
    """Connect like ``pbnb.connect`` (``host, port`` or a URL) and return a client whose calls block.

    ``timeout`` bounds every blocking call; other keywords go to ``pbnb.connect``.
    """
    runner = _LoopThread()
    try:
        client = runner.run(_connect(host, port, timeout=timeout, **options), timeout)
    except BaseException:
        runner.stop()
        raise
    return BlockingClient(client, runner, timeout)
