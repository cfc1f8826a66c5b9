"""A client that stays connected: reconnect with backoff and jitter, then log in again.

``ReconnectingClient`` owns a background task that connects, runs a login
callable (by default ``getRootObject``) to obtain a fresh reference, waits for
the connection to drop and starts over. Every connection is a new broker, so
a reference obtained before a drop stays bound to the dead connection and
fails with ``DeadReferenceError``; it never reaches the new server. Use
``await reconnecting.root()`` to get the current reference.

``status`` is a ``ReconnectStatus``; ``watch(callback)`` reports every change
(the notebook's status widget subscribes this way), and ``wait_for(*statuses)``
awaits one.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ..core.reference import RemoteReference
from ..errors import DeadReferenceError, PBConnectionLost, ProtocolError
from .client import Client, connect

log = logging.getLogger("pbnb")

LoginCallable = Callable[[Client], Awaitable[RemoteReference]]

# Failures that say "the network or the server went away": worth another try.
# Anything else raised while logging in (a wrong password, a bug) stops the client.
_TRANSIENT = (OSError, TimeoutError, PBConnectionLost, DeadReferenceError, ProtocolError)


class ReconnectStatus(enum.Enum):
    """Where a ReconnectingClient stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"  # lost or refused; the next attempt is scheduled
    FAILED = "failed"  # gave up: login refused or max_attempts reached
    CLOSED = "closed"  # close() was called


def backoff_delays(
    initial: float = 0.1, maximum: float = 30.0, factor: float = 2.0, jitter: float = 0.5
) -> Iterator[float]:
    """Yield delays growing by ``factor`` up to ``maximum``, each shortened by up to ``jitter``.

    The random shortening spreads out clients that all lost the same server
    at the same moment, so they do not knock on its door in lockstep.
    """
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be between 0 and 1, got {jitter!r}")
    delay = initial
    while True:
        yield delay * (1 - jitter * random.random())
        delay = min(maximum, delay * factor)


async def _root_object(client: Client) -> RemoteReference:
    return await client.getRootObject()


class ReconnectingClient:
    """Keep a connection to ``host:port`` alive, logging in again after each drop.

    ``login`` is an async callable taking the fresh ``Client`` and returning the
    reference to use (for example ``lambda c: c.login(creds)``); a login that takes
    longer than ``login_timeout`` seconds counts as a failed attempt. Other keywords
    go to ``pbnb.connect`` (limits, ``keepalive``, ``ssl``, ...). Use as an async
    context manager or call ``start()`` and ``close()``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        login: LoginCallable = _root_object,
        initial_delay: float = 0.1,
        max_delay: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        max_attempts: int | None = None,
        login_timeout: float | None = 30.0,
        **connect_options: Any,
    ):
        self.host = host
        self.port = port
        self._login = login
        self._backoff = (initial_delay, max_delay, factor, jitter)
        self._max_attempts = max_attempts
        self._login_timeout = login_timeout
        self._connect_options = connect_options
        self.status = ReconnectStatus.WAITING
        self.client: Client | None = None
        self.last_error: BaseException | None = None
        #: How many connections were established and logged in so far.
        self.connections = 0
        self._reference: RemoteReference | None = None
        self._watchers: list[Callable[[ReconnectStatus], Any]] = []
        self._waiters: list[tuple[frozenset[ReconnectStatus], asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------- watching

    def watch(self, callback: Callable[[ReconnectStatus], Any]) -> Callable[[], None]:
        """Call ``callback(status)`` on every change; return a function that stops it."""
        self._watchers.append(callback)

        def unwatch() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        return unwatch

    async def wait_for(self, *statuses: ReconnectStatus) -> ReconnectStatus:
        """Wait until the status is one of ``statuses`` (at once if it already is)."""
        if self.status in statuses:
            return self.status
        future = asyncio.get_running_loop().create_future()
        entry = (frozenset(statuses), future)
        self._waiters.append(entry)
        try:
            return await future
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _set_status(self, status: ReconnectStatus) -> None:
        if status is self.status:
            return
        self.status = status
        for callback in list(self._watchers):
            try:
                callback(status)
            except Exception:
                log.exception("reconnect status watcher %r failed", callback)
        for wanted, future in list(self._waiters):
            if status in wanted and not future.done():
                future.set_result(status)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start connecting in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def retry(self) -> None:
        """Start over after giving up (FAILED) or closing: connect again, with a fresh backoff."""
        if self._task is not None and self._task.done():
            self._task = None
        self.start()

    async def root(self) -> RemoteReference:
        """Return the reference of the current connection, waiting for one if needed.

        Raises the error that made the client give up if it is FAILED, and
        ``PBConnectionLost`` once it is CLOSED.
        """
        self.start()
        status = await self.wait_for(
            ReconnectStatus.CONNECTED, ReconnectStatus.FAILED, ReconnectStatus.CLOSED
        )
        if status is ReconnectStatus.FAILED:
            raise self.last_error or PBConnectionLost("gave up reconnecting")
        if status is ReconnectStatus.CLOSED:
            raise PBConnectionLost("the reconnecting client is closed")
        return self._reference  # type: ignore[return-value]

    async def close(self) -> None:
        """Stop reconnecting and close the current connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.client is not None:
            await self.client.close()
        self._reference = None
        self._set_status(ReconnectStatus.CLOSED)

    async def __aenter__(self) -> ReconnectingClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # ----------------------------------------------------------------- loop

    async def _run(self) -> None:
        delays = backoff_delays(*self._backoff)
        failures = 0
        while True:
            self._set_status(ReconnectStatus.CONNECTING)
            try:
                await self._connect_once()
            except _TRANSIENT as exc:
                self.last_error = exc
                failures += 1
                log.info("connecting to %s:%s failed (%s); attempt %d", self.host, self.port, exc, failures)
            except Exception as exc:
                self.last_error = exc
                log.warning("login to %s:%s refused, giving up: %s", self.host, self.port, exc)
                self._set_status(ReconnectStatus.FAILED)
                return
            else:
                failures = 0
                delays = backoff_delays(*self._backoff)
                self._set_status(ReconnectStatus.CONNECTED)
                client = self.client
                assert client is not None  # just connected
                await client.wait_closed()
                self._reference = None
                self.last_error = client.connection.close_reason
                log.info("connection to %s:%s lost; reconnecting", self.host, self.port)
            if self._max_attempts is not None and failures >= self._max_attempts:
                self._set_status(ReconnectStatus.FAILED)
                return
            self._set_status(ReconnectStatus.WAITING)
            await asyncio.sleep(next(delays))

    async def _connect_once(self) -> None:
        client = await connect(self.host, self.port, **self._connect_options)
        try:
            # A server that accepts but never answers must not hold us here forever.
            reference = await asyncio.wait_for(self._login(client), self._login_timeout)
        except BaseException:
            await client.close()
            raise
        self.client = client
        self._reference = reference
        self.connections += 1

    def __repr__(self) -> str:
        return f"<pbnb.ReconnectingClient {self.host}:{self.port} {self.status.value}>"
