"""The ways a login fails.

Both are ``pbnb.Error`` subclasses (expected failures, not logged as crashes)
and travel as registered copies, so the client catches the same classes the
server raised.
"""

from __future__ import annotations

from ..core.flavors import Copyable, RemoteCopy, setUnjellyableForClass
from ..errors import Error


class UnauthorizedLogin(Error, Copyable, RemoteCopy):
    """The credentials were refused.

    A wrong user name and a wrong password give the same class and the same
    message, so a caller cannot tell which one was wrong.
    """


class LoginThrottled(UnauthorizedLogin):
    """Too many logins failed lately for this user name or from this address.

    The message says when to try again (see ``pbnb.cred.LoginThrottle``).
    """


class UnhandledCredentials(Error, Copyable, RemoteCopy):
    """No checker of the portal accepts this kind of credentials."""


for _error in (UnauthorizedLogin, LoginThrottled, UnhandledCredentials):
    setUnjellyableForClass(_error, _error)
