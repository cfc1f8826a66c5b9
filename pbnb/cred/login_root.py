"""The object a Portal serves to each connection, and the login sessions it keeps.

The login exchange is ordinary PB calls on it:

* ``scram_first(client_first)`` returns ``(server_first, challenge)``, where
  ``challenge`` is a reference used once: ``challenge.scram_final(client_final,
  mind)`` returns ``(server_final, avatar)`` if the proof is right.
* ``anonymous(mind)`` returns an avatar where a checker allows it.

What a stranger can make the server do before logging in is bounded: the first
message is read only if it is short (``scram.MAX_FIRST_MESSAGE``), at most
``Portal(max_pending_logins=)`` exchanges may be unfinished at once, and every
refusal counts towards ``max_failures`` and the portal's ``LoginThrottle``.

A login session ends (its logout runs) exactly once: when the client lets go
of the avatar, or when the connection closes. An avatar the realm produces
after the client went away, or gave up waiting, is logged out at once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from ..core.failure import clip
from ..core.flavors import Referenceable, Root
from ..errors import PBConnectionLost
from .checkers import REFUSED
from .credentials import Anonymous
from .errors import LoginThrottled, UnauthorizedLogin
from .scram import ServerExchange, username_of

log = logging.getLogger("pbnb.cred")


class LoginSession:
    """One delivered avatar and its logout, which runs at most once."""

    __slots__ = ("_logout", "avatar", "avatar_id")

    def __init__(self, avatar_id: Any, avatar: Any, logout: Callable[[], Any]):
        self.avatar_id = avatar_id
        self.avatar = avatar
        self._logout: Callable[[], Any] | None = logout

    @property
    def active(self) -> bool:
        """Whether the logout has not run yet."""
        return self._logout is not None

    def end(self) -> None:
        """Run the logout unless it already ran; its errors are logged, not raised."""
        logout, self._logout = self._logout, None
        if logout is None:
            return
        try:
            result = logout()
            if inspect.isawaitable(result):
                asyncio.ensure_future(result).add_done_callback(_report_logout_failure)
        except Exception:
            log.exception("logout of %r failed", self.avatar_id)


def _report_logout_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("logout failed", exc_info=task.exception())


def _end_undelivered(request: asyncio.Future, avatar_id: Any) -> None:
    if request.cancelled() or request.exception() is not None:
        return
    _, avatar, logout = request.result()
    LoginSession(avatar_id, avatar, logout).end()
    log.info("logged out %r: its client left before the avatar reached it", avatar_id)


class LoginRoot(Root):
    """The per-connection root of a server that serves a Portal."""

    def __init__(self, portal: Any, connection: Any):
        self._portal = portal
        self._connection = connection
        self._failures = 0
        self._closing: asyncio.Future | None = None
        self._sessions: dict[LoginSession, None] = {}  # ordered: the newest is the default perspective
        self._pending: dict[_ScramChallenge, None] = {}  # SCRAM exchanges started and not finished
        self._address = connection.peer.rpartition(":")[0] or connection.peer  # host, without the port
        connection.closed.add_done_callback(self._connection_closed)

    @property
    def max_frame_before_login(self) -> int:
        """The largest frame the connection accepts until a login succeeds (the portal's setting)."""
        return self._portal.max_frame_before_login

    @property
    def failures(self) -> int:
        """Failed login attempts on this connection so far."""
        return self._failures

    @property
    def sessions(self) -> list[LoginSession]:
        """The sessions of this connection that have not logged out."""
        return list(self._sessions)

    # ------------------------------------------------------------- remote API

    def remote_scram_first(self, client_first: str) -> tuple[str, Referenceable]:
        """Start a SCRAM-SHA-256 login; return the server-first message and the challenge."""
        exchange = ServerExchange(self._portal.scram_lookup())
        try:
            if not isinstance(client_first, str):
                raise ValueError("the SCRAM first message must be a str")
            username = username_of(client_first)
        except ValueError as exc:
            self._refuse(None, f"malformed login message: {exc}")
        self._check_throttle(username)
        limit = self._portal.max_pending_logins
        if len(self._pending) >= limit:
            message = f"too many unfinished logins on this connection (max_pending_logins={limit})"
            self._refuse(username, message)
        try:
            server_first = exchange.first(client_first)
        except ValueError as exc:
            self._refuse(None, f"malformed login message: {exc}")
        challenge = _ScramChallenge(self._finish_scram, exchange)
        self._pending[challenge] = None
        self._connection.on_release(challenge, lambda: self._pending.pop(challenge, None))
        return server_first, challenge

    async def remote_anonymous(self, mind: Any = None) -> Referenceable:
        """Log in anonymously where a checker allows it."""
        self._check_throttle(None)
        try:
            avatar_id = await self._portal.check(Anonymous())
        except UnauthorizedLogin:
            self._refuse("<anonymous>", REFUSED)
        return await self._deliver(avatar_id, mind)

    # ---------------------------------------------------------------- inside

    async def _finish_scram(self, challenge: _ScramChallenge, client_final: Any, mind: Any) -> tuple:
        self._pending.pop(challenge, None)
        exchange = challenge.exchange
        server_final = exchange.final(client_final) if isinstance(client_final, str) else None
        if server_final is None:
            self._refuse(exchange.username, REFUSED)
        return server_final, await self._deliver(exchange.username, mind)

    def _check_throttle(self, username: str | None) -> None:
        throttle = self._portal.throttle
        if throttle is None:
            return
        try:
            throttle.check(username, self._address)
        except LoginThrottled as exc:
            self._refuse(username, str(exc), throttled=True)

    def _refuse(self, username: str | None, message: str, *, throttled: bool = False) -> NoReturn:
        self._failures += 1
        peer = self._connection.peer
        if self._portal.throttle is not None and not throttled:  # waiting out a throttle is not a new guess
            self._portal.throttle.failed(username, self._address)
        log.warning(
            "failed login as %s from %s (%d of %d allowed): %s",
            clip(repr(username), 100),
            peer,
            self._failures,
            self._portal.max_failures,
            message,
        )
        if self._failures >= self._portal.max_failures:
            log.warning("dropping %s after %d failed logins", peer, self._failures)
            # Runs after the refusal is queued, so the client still reads it.
            asyncio.get_running_loop().call_soon(self._drop_connection)
            message = f"{message}; too many failed logins, closing the connection"
        raise (LoginThrottled if throttled else UnauthorizedLogin)(message)

    def _drop_connection(self) -> None:
        # Held here because the loop keeps only a weak reference to a running task.
        self._closing = asyncio.ensure_future(self._connection.close())

    async def _deliver(self, avatar_id: Any, mind: Any) -> Referenceable:
        request = asyncio.ensure_future(self._portal.request_perspective(avatar_id, mind))
        del mind  # the realm has it now; this frame must not keep it alive
        try:
            _, avatar, logout = await asyncio.shield(request)
        except asyncio.CancelledError:
            # The client left or gave up: whatever the realm still produces is logged out.
            request.add_done_callback(lambda done: _end_undelivered(done, avatar_id))
            raise
        session = LoginSession(avatar_id, avatar, logout)
        if self._connection.closed.done():
            session.end()
            raise PBConnectionLost("the connection closed during the login")
        self._sessions[session] = None
        broker = self._connection.broker
        broker.max_frame = broker.limits.max_frame  # a user now: the connection's own limit
        self._connection.on_release(avatar, lambda: self._end(session))
        self._connection.broker.perspective = avatar
        log.info("%r logged in from %s", avatar_id, self._connection.peer)
        return avatar

    def _end(self, session: LoginSession) -> None:
        self._sessions.pop(session, None)
        broker = self._connection.broker
        if broker.perspective is session.avatar:
            broker.perspective = next(reversed(self._sessions)).avatar if self._sessions else None
        if session.active:
            log.info("%r logged out from %s", session.avatar_id, self._connection.peer)
        session.end()

    def _connection_closed(self, _closed: asyncio.Future) -> None:
        for session in list(self._sessions):
            self._end(session)


# LoginRoot's second step of a SCRAM login, handed to the challenge it made.
_Finish = Callable[["_ScramChallenge", Any, Any], Awaitable[tuple]]


class _ScramChallenge(Referenceable):
    """The second half of one SCRAM login; usable once."""

    def __init__(self, finish: _Finish, exchange: ServerExchange):
        self._finish: _Finish | None = finish
        self.exchange = exchange

    async def remote_scram_final(self, client_final: str, mind: Any = None) -> tuple[str, Referenceable]:
        """Check the client proof; return the server-final message and the avatar."""
        finish, self._finish = self._finish, None
        if finish is None:
            raise UnauthorizedLogin("this login attempt is over; start a new one")
        return await finish(self, client_final, mind)
