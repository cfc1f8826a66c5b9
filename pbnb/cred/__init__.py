"""Login for pbnb: portals, realms, credential checkers.

A server serves a ``Portal(realm, checkers)``; a client calls
``await client.login(UsernamePassword(user, password), mind)`` and gets a
reference to its avatar. Passwords are checked with SCRAM-SHA-256, so they
never cross the wire and the server stores only salted, iterated keys.
See ``docs/login.md``.
"""

from __future__ import annotations

from .checkers import (
    ANONYMOUS,
    AllowAnonymousAccess,
    FilePasswordChecker,
    InMemoryPasswordChecker,
    PasswordChecker,
)
from .credentials import Anonymous, IAnonymous, ICredentials, IUsernamePassword, UsernamePassword
from .errors import LoginThrottled, UnauthorizedLogin, UnhandledCredentials
from .login_root import LoginRoot, LoginSession
from .portal import IPerspective, IRealm, Portal
from .scram import MAX_USERNAME, ScramSecret
from .throttle import LoginThrottle

__all__ = [
    "ANONYMOUS",
    "MAX_USERNAME",
    "AllowAnonymousAccess",
    "Anonymous",
    "FilePasswordChecker",
    "IAnonymous",
    "ICredentials",
    "IPerspective",
    "IRealm",
    "IUsernamePassword",
    "InMemoryPasswordChecker",
    "LoginRoot",
    "LoginSession",
    "LoginThrottle",
    "LoginThrottled",
    "PasswordChecker",
    "Portal",
    "ScramSecret",
    "UnauthorizedLogin",
    "UnhandledCredentials",
    "UsernamePassword",
]
