"""Credential checkers: who may log in, and as which avatar id.

A checker names the credential interfaces it handles in
``credentialInterfaces`` and turns accepted credentials into an avatar id
with ``requestAvatarId`` (plain or ``async``), raising ``UnauthorizedLogin``
otherwise. Password checkers also give the portal the SCRAM secret of a user
(``secret_for``), which is how logins over the wire are checked: the
password never reaches the server.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from .credentials import IAnonymous, ICredentials, IUsernamePassword
from .errors import UnauthorizedLogin
from .passwd import read_password_file
from .scram import DEFAULT_ITERATIONS, SALT_BYTES, ScramSecret, check_username_length, decoy_secret

log = logging.getLogger("pbnb.cred")


#: The avatar id ``AllowAnonymousAccess`` gives: an empty tuple, as in Twisted,
#: so it never equals a user name.
ANONYMOUS: tuple = ()

#: The message of every refused password, whatever was wrong.
REFUSED = "wrong user name or password"


class AllowAnonymousAccess:
    """Accept ``Anonymous()`` credentials; the avatar id is ``ANONYMOUS``."""

    credentialInterfaces: ClassVar[tuple[type, ...]] = (IAnonymous,)

    def requestAvatarId(self, credentials: ICredentials) -> Any:
        """Accept anyone, as the anonymous avatar id."""
        return ANONYMOUS


class PasswordChecker:
    """Base of the checkers that hold SCRAM secrets for user names.

    Subclasses provide ``secret_for(username)``, and ``entry_shape()`` if their
    entries are not all made with the default iteration count. The avatar id is
    the user name.
    """

    credentialInterfaces: ClassVar[tuple[type, ...]] = (IUsernamePassword,)

    def secret_for(self, username: str) -> ScramSecret | None:
        """The stored secret of ``username``, or None if there is no such user."""
        raise NotImplementedError

    def entry_shape(self) -> tuple[int, int]:
        """``(iterations, salt length)`` of a typical entry, which decoys copy."""
        return DEFAULT_ITERATIONS, SALT_BYTES

    def decoy_for(self, key: bytes, username: str) -> ScramSecret:
        """A secret for an unknown ``username`` that looks like this checker's real entries."""
        iterations, salt_bytes = self.entry_shape()
        return decoy_secret(key, username, iterations, salt_bytes)

    def requestAvatarId(self, credentials: ICredentials) -> str:
        """Check a user name and password given in this process (not over the wire)."""
        username, password = credentials.username, credentials.password  # type: ignore[attr-defined]
        secret = self.secret_for(username)
        # An unknown user costs the same slow hash as a known one.
        known = secret is not None
        candidate = secret or self.decoy_for(os.urandom(16), username)
        if candidate.matches(password) and known:
            return username
        raise UnauthorizedLogin(REFUSED)


class InMemoryPasswordChecker(PasswordChecker):
    """Users held in memory; only their SCRAM secrets are kept, never the passwords.

    ``InMemoryPasswordChecker({"alice": "secret"}, bob="hunter2")``.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        iterations: int = DEFAULT_ITERATIONS,
        **more_users: str,
    ):
        self._iterations = iterations
        self._secrets: dict[str, ScramSecret] = {}
        for username, password in {**(users or {}), **more_users}.items():
            self.addUser(username, password)

    def addUser(self, username: str, password: str) -> None:
        """Add ``username`` or change its password."""
        check_username_length(username)
        self._secrets[username] = ScramSecret.from_password(password, self._iterations)

    def removeUser(self, username: str) -> None:
        """Forget ``username`` (no error if absent)."""
        self._secrets.pop(username, None)

    def secret_for(self, username: str) -> ScramSecret | None:
        return self._secrets.get(username)

    def entry_shape(self) -> tuple[int, int]:
        return self._iterations, SALT_BYTES


class FilePasswordChecker(PasswordChecker):
    """Users listed in a password file (format: ``pbnb.cred.passwd``).

    The file is read at once, so a broken file fails early, and read again
    whenever it changes, so ``python -m pbnb passwd`` takes effect without a
    restart. A later broken edit is logged and the previous users stay.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._stamp = self._file_stamp()
        self._read()

    def _file_stamp(self) -> tuple[int, int, int]:
        status = self.path.stat()
        return status.st_mtime_ns, status.st_size, status.st_ino

    def _refresh(self) -> None:
        try:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._read()
                self._stamp = stamp
        except (OSError, ValueError) as exc:
            log.error("keeping the previous users: cannot reload %s: %s", self.path, exc)

    def secret_for(self, username: str) -> ScramSecret | None:
        self._refresh()
        return self._secrets.get(username)

    def entry_shape(self) -> tuple[int, int]:
        """The most common ``(iterations, salt length)`` in the file (``passwd --iterations``)."""
        return self._shape  # as of the last read: looking a user up reads the file again if it changed

    def _read(self) -> None:
        self._secrets = read_password_file(self.path)
        # Counted once per read: an unknown user must not cost more than a known one.
        shapes = Counter((secret.iterations, len(secret.salt)) for secret in self._secrets.values())
        self._shape = shapes.most_common(1)[0][0] if shapes else super().entry_shape()
