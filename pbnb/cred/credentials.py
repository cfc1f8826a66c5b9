"""What a client presents to log in, and the interfaces checkers declare.

The interfaces are plain marker classes: a checker lists the ones it handles
in ``credentialInterfaces`` and the portal picks checkers by ``isinstance``.
"""

from __future__ import annotations


class ICredentials:
    """Base of every kind of credentials."""


class IUsernamePassword(ICredentials):
    """A user name and a password. Over the wire only a SCRAM proof travels."""

    username: str
    password: str


class IAnonymous(ICredentials):
    """No identity at all; accepted only by a portal with an anonymous checker."""


class UsernamePassword(IUsernamePassword):
    """Log in as ``username`` with ``password``.

    ``client.login`` runs SCRAM-SHA-256 with these: the password itself never
    leaves this process.
    """

    def __init__(self, username: str, password: str):
        if not isinstance(username, str) or not isinstance(password, str):
            raise TypeError("UsernamePassword takes a str user name and a str password")
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return f"UsernamePassword({self.username!r}, <hidden>)"


class Anonymous(IAnonymous):
    """Log in without an identity."""

    def __repr__(self) -> str:
        return "Anonymous()"
