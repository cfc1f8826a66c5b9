"""The Portal: checkers decide who you are, the realm gives you an avatar.

``pbnb.serve(portal)`` gives every connection its own login root (see
``login_root``), so failed attempts are counted and avatars are logged out
per connection.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ..core.flavors import Referenceable
from .checkers import REFUSED
from .credentials import ICredentials, IUsernamePassword
from .errors import UnauthorizedLogin, UnhandledCredentials
from .login_root import LoginRoot
from .scram import ScramSecret, decoy_secret
from .throttle import LoginThrottle

#: What a realm's requestAvatar returns: (interface, avatar, logout).
LoginResult = tuple[type, Any, Callable[[], Any]]


class _Interface(type(Protocol)):  # type: ignore[misc]
    """The metaclass of pbnb's interfaces: lets zope's ``@implementer`` decorate, as in Twisted.

    ``zope.interface.implementer(IRealm)`` treats an argument that is not a zope
    interface as a sequence of them; iterating one of ours yields none, so the
    decorator declares nothing and leaves the class as it was. pbnb never asks
    zope anything (it need not be installed): any object with
    ``requestAvatar`` is a realm.
    """

    def __iter__(cls) -> Iterator[Any]:
        return iter(())


class IPerspective(metaclass=_Interface):
    """The interface a PB login asks the realm for: an avatar the client may call.

    The avatar must be a ``pbnb.Referenceable``, normally a ``pbnb.Avatar``
    whose ``perspective_`` methods the user calls.
    """


class IRealm(Protocol, metaclass=_Interface):
    """What a realm provides (any object with this method will do)."""

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: type) -> Any:
        """Return (or return an awaitable of) ``(interface, avatar, logout)``.

        ``mind`` is the client's reference (or None) for calling it back;
        ``logout()`` runs exactly once when the avatar is no longer used.
        """


class Portal:
    """Log users in: ``Portal(realm, [checker, ...])``, then ``pbnb.serve(portal)``.

    ``max_failures`` failed logins on one connection make the server drop it;
    ``throttle`` (a ``LoginThrottle``; ``True``, the default, makes one with its
    defaults, ``None`` turns it off) refuses logins for a user name or from an
    address after too many recent failures over all connections. At most
    ``max_pending_logins`` password logins may be unfinished at once on a
    connection, and until one succeeds the connection accepts frames of at most
    ``max_frame_before_login`` bytes (a bigger one closes it). An unknown user
    is shown a decoy salt derived from the name and
    ``decoy_key`` (random by default), with the iteration count and salt length
    of the first password checker's entries; pass a fixed secret key to keep
    decoy salts stable across restarts, as real users' salts are.
    """

    def __init__(
        self,
        realm: IRealm,
        checkers: Iterable[Any] = (),
        *,
        max_failures: int = 5,
        decoy_key: bytes | None = None,
        throttle: LoginThrottle | bool | None = True,
        max_pending_logins: int = 3,
        max_frame_before_login: int = 64 * 1024,
    ):
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if max_pending_logins < 1:
            raise ValueError("max_pending_logins must be at least 1")
        if max_frame_before_login < 1024:
            raise ValueError("max_frame_before_login must be at least 1024 bytes (a login needs about 1 KiB)")
        if decoy_key is not None and len(decoy_key) < 16:
            raise ValueError("decoy_key must be a secret of at least 16 bytes")
        self.realm = realm
        self.max_failures = max_failures
        self.max_pending_logins = max_pending_logins
        self.max_frame_before_login = max_frame_before_login
        self.throttle: LoginThrottle | None = LoginThrottle() if throttle is True else throttle or None
        self._checkers: dict[type, list[Any]] = {}
        self._decoy_key = decoy_key or os.urandom(32)
        for checker in checkers:
            self.registerChecker(checker)

    def registerChecker(self, checker: Any, *interfaces: type) -> None:
        """Use ``checker`` for ``interfaces`` (default: its ``credentialInterfaces``)."""
        interfaces = interfaces or tuple(getattr(checker, "credentialInterfaces", ()))
        if not interfaces or not callable(getattr(checker, "requestAvatarId", None)):
            raise TypeError(
                f"{checker!r} is not a checker: it needs requestAvatarId() and credentialInterfaces"
            )
        for interface in interfaces:
            self._checkers.setdefault(interface, []).append(checker)

    def listCredentialsInterfaces(self) -> list[type]:
        """The credential interfaces some checker handles."""
        return list(self._checkers)

    def _checkers_for(self, interface: type) -> list[Any]:
        checkers = self._checkers.get(interface)
        if not checkers:
            name = interface.__name__.removeprefix("I")
            raise UnhandledCredentials(f"this server does not accept {name} logins")
        return checkers

    async def check(self, credentials: ICredentials) -> Any:
        """Return the avatar id the checkers give ``credentials``; raise UnauthorizedLogin if none."""
        interfaces = [i for i in self._checkers if isinstance(credentials, i)]
        if not interfaces:
            raise UnhandledCredentials(f"this server does not accept {type(credentials).__name__} logins")
        for interface in interfaces:
            for checker in self._checkers[interface]:
                try:
                    avatar_id = checker.requestAvatarId(credentials)
                    return await avatar_id if inspect.isawaitable(avatar_id) else avatar_id
                except UnauthorizedLogin:
                    continue
        raise UnauthorizedLogin(REFUSED)

    def scram_lookup(self) -> Callable[[str], ScramSecret]:
        """A function giving a user's stored secret, or a decoy if no checker knows the user.

        Raises UnhandledCredentials if no checker can take a password login over the wire.
        """
        checkers = [c for c in self._checkers_for(IUsernamePassword) if hasattr(c, "secret_for")]
        if not checkers:
            raise UnhandledCredentials("no checker of this server can verify a password over the wire")

        decoy_for = getattr(checkers[0], "decoy_for", None)  # a checker written for Twisted may lack it

        def lookup(username: str) -> ScramSecret:
            # The decoy is made for known users too, so that both take the same time.
            if decoy_for is None:
                decoy = decoy_secret(self._decoy_key, username)
            else:
                decoy = decoy_for(self._decoy_key, username)
            for checker in checkers:
                secret = checker.secret_for(username)
                if secret is not None:
                    return secret
            return decoy

        return lookup

    async def request_avatar(self, avatar_id: Any, mind: Any, *interfaces: type) -> LoginResult:
        """Ask the realm for an avatar; check what it returns."""
        result = self.realm.requestAvatar(avatar_id, mind, *interfaces)
        if inspect.isawaitable(result):
            result = await result
        if not (isinstance(result, tuple) and len(result) == 3):
            raise TypeError(f"requestAvatar must return (interface, avatar, logout), got {result!r:.100}")
        interface, avatar, logout = result
        if interface not in interfaces:
            raise TypeError(f"requestAvatar returned interface {interface!r}, not one of {interfaces}")
        if interface is IPerspective and not isinstance(avatar, Referenceable):
            raise TypeError(f"an IPerspective avatar must be a pbnb.Avatar, got {type(avatar).__qualname__}")
        return interface, avatar, logout or _no_logout

    async def login(self, credentials: ICredentials, mind: Any, *interfaces: type) -> LoginResult:
        """Check ``credentials`` in this process and return ``(interface, avatar, logout)``."""
        avatar_id = await self.check(credentials)
        return await self.request_avatar(avatar_id, mind, *interfaces)

    async def request_perspective(self, avatar_id: Any, mind: Any) -> LoginResult:
        """``request_avatar`` for a PB login: the realm is asked for an ``IPerspective``."""
        return await self.request_avatar(avatar_id, mind, IPerspective)

    def rootObject(self, connection: Any) -> Referenceable:
        """What ``pb.serve(portal)`` gives each connection: a login root of its own."""
        return LoginRoot(self, connection)

    def __repr__(self) -> str:
        names = ", ".join(i.__name__ for i in self._checkers)
        return f"<pbnb.cred.Portal for {type(self.realm).__qualname__} accepting {names or 'nothing'}>"


def _no_logout() -> None:
    pass
