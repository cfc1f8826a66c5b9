"""SCRAM-SHA-256 (RFC 5802, RFC 7677) through ``scramp``: the secrets and both ends.

The server keeps a ``ScramSecret`` per user: a random salt, an iteration count
and two keys derived from the salted password (StoredKey and ServerKey). The
password cannot be recovered from them, and knowing them is not enough to log
in (the client proof needs the ClientKey, which only the password gives).
The client proves it knows the password without sending it, and the server
proves in return that it holds the user's keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from scramp import ScramClient, ScramException, ScramMechanism

MECHANISM = "SCRAM-SHA-256"
#: RFC 7677's minimum, and scramp's; raise it for stored secrets if you can afford it.
DEFAULT_ITERATIONS = 4096
#: Salts we make (real and decoy) are this long, so the two look alike.
SALT_BYTES = 32
_MIN_SALT_BYTES = 12
_MECHANISM = ScramMechanism(MECHANISM)
#: The longest user name a login may carry, in characters. Checked before SASLprep,
#: whose cost grows with the name: a stranger must not make the server work for it.
MAX_USERNAME = 256
#: The longest SCRAM first message a server reads: the longest user name, escaped
#: (``,`` and ``=`` take three characters each), plus a nonce and headers.
MAX_FIRST_MESSAGE = 3 * MAX_USERNAME + 256


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(frozen=True)
class ScramSecret:
    """What the server stores for one user instead of the password."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    @classmethod
    def from_password(
        cls, password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
    ) -> ScramSecret:
        """Derive the secret for ``password`` with a fresh random salt (or ``salt``)."""
        if iterations < DEFAULT_ITERATIONS:
            raise ValueError(f"{MECHANISM} needs at least {DEFAULT_ITERATIONS} iterations, got {iterations}")
        try:
            salt, stored_key, server_key, iterations = _MECHANISM.make_auth_info(
                password, iteration_count=iterations, salt=salt or secrets.token_bytes(SALT_BYTES)
            )
        except ScramException as exc:
            raise ValueError(f"unusable password for {MECHANISM}: {exc}") from None
        return cls(salt, stored_key, server_key, iterations)

    @classmethod
    def parse(cls, text: str) -> ScramSecret:
        """Read ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64 fields).

        This is the format PostgreSQL stores. Raises ValueError on anything else.
        """
        try:
            mechanism, salt_part, keys_part = text.strip().split("$")
            iterations_text, salt_text = salt_part.split(":")
            stored_text, server_text = keys_part.split(":")
            iterations = int(iterations_text)
            salt, stored_key, server_key = (_unb64(t) for t in (salt_text, stored_text, server_text))
        except ValueError as exc:  # binascii.Error is a ValueError
            raise ValueError(f"not a {MECHANISM} secret ({exc})") from None
        if mechanism != MECHANISM:
            raise ValueError(f"unsupported mechanism {mechanism!r}: only {MECHANISM} is accepted")
        digest = hashlib.sha256().digest_size
        if iterations < DEFAULT_ITERATIONS or len(stored_key) != digest or len(server_key) != digest:
            raise ValueError(f"{MECHANISM} secret with bad iterations or key lengths")
        if len(salt) < _MIN_SALT_BYTES:
            raise ValueError(f"{MECHANISM} secret with a salt shorter than {_MIN_SALT_BYTES} bytes")
        return cls(salt, stored_key, server_key, iterations)

    def format(self) -> str:
        """The text form that ``parse`` reads."""
        return (
            f"{MECHANISM}${self.iterations}:{_b64(self.salt)}${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )

    def matches(self, password: str) -> bool:
        """Whether ``password`` gives this secret (slow hash, constant-time compare)."""
        other = ScramSecret.from_password(password, self.iterations, self.salt)
        return hmac.compare_digest(other.stored_key, self.stored_key) & hmac.compare_digest(
            other.server_key, self.server_key
        )

    def as_auth_info(self) -> tuple[bytes, bytes, bytes, int]:
        """The tuple scramp's server asks its lookup function for."""
        return self.salt, self.stored_key, self.server_key, self.iterations

    def __repr__(self) -> str:
        return f"<ScramSecret {MECHANISM} iterations={self.iterations}>"


def decoy_secret(
    key: bytes, username: str, iterations: int = DEFAULT_ITERATIONS, salt_bytes: int = SALT_BYTES
) -> ScramSecret:
    """A secret for a user who does not exist, shaped like real ones (``iterations``, ``salt_bytes``).

    Its salt is derived from ``username`` and a server-side ``key``, so asking
    twice for the same unknown user shows the same salt, as a real user would;
    its keys are random, so no password matches.
    """
    salt, block = b"", username.encode("utf-8")
    while len(salt) < salt_bytes:  # one block for our own 32-byte salts, more for longer ones
        block = hmac.new(key, block, hashlib.sha256).digest()
        salt += block
    salt = salt[:salt_bytes]
    return ScramSecret(salt, secrets.token_bytes(32), secrets.token_bytes(32), iterations)


def check_username_length(username: str) -> None:
    """Raise ValueError if ``username`` is longer than ``MAX_USERNAME`` characters."""
    if len(username) > MAX_USERNAME:
        raise ValueError(f"user names are at most {MAX_USERNAME} characters, got {len(username):,}")


def username_of(client_first: str) -> str:
    """The user name a SCRAM client-first message carries, read cheaply (no SASLprep).

    Raises ValueError if the message or the name is too long, or has no name.
    """
    if len(client_first) > MAX_FIRST_MESSAGE:
        size = len(client_first)
        raise ValueError(f"the first message has {size:,} characters; at most {MAX_FIRST_MESSAGE}")
    # gs2-header (two fields), then "n=<name>,r=<nonce>[,...]"
    fields = client_first.split(",")
    if len(fields) < 4 or not fields[2].startswith("n="):
        raise ValueError("the first message names no user")
    username = fields[2][2:].replace("=2C", ",").replace("=3D", "=")
    check_username_length(username)
    return username


class ServerExchange:
    """The server's half of one SCRAM exchange.

    ``lookup(username)`` must return a ScramSecret, a real one or a decoy, so
    that an unknown user goes through exactly the same steps as a known one.
    """

    def __init__(self, lookup: Any):
        self.username: str | None = None
        self._lookup = lookup
        self._server = _MECHANISM.make_server(self._auth_info)

    def _auth_info(self, username: str) -> tuple[bytes, bytes, bytes, int]:
        self.username = username
        return self._lookup(username).as_auth_info()

    def first(self, client_first: str) -> str:
        """Take the client-first message; return the server-first (salt, iterations, nonce).

        Raises ValueError if the message is malformed.
        """
        username_of(client_first)  # bounds the work before scramp parses and SASLpreps it
        try:
            self._server.set_client_first(client_first)
            return self._server.get_server_first()
        except ScramException as exc:
            raise ValueError(f"bad {MECHANISM} first message: {exc}") from None

    def final(self, client_final: str) -> str | None:
        """Check the client's proof; return the server-final message, or None if it is wrong."""
        try:
            self._server.set_client_final(client_final)
        except ScramException:
            return None
        return self._server.get_server_final()


class ClientExchange:
    """The client's half: builds its messages from the password, checks the server's proof."""

    def __init__(self, username: str, password: str):
        """Raises ValueError if SCRAM cannot carry this user name or password (SASLprep)."""
        check_username_length(username)
        try:
            self._client = ScramClient([MECHANISM], username, password)
            self._first = self._client.get_client_first()
        except ScramException as exc:
            raise ValueError(f"cannot log in as {username!r} with {MECHANISM}: {exc}") from None

    def first(self) -> str:
        """The client-first message: the user name and a fresh nonce."""
        return self._first

    def final(self, server_first: str) -> str:
        """Answer the server's challenge with the client proof. Raises ValueError if malformed."""
        try:
            self._client.set_server_first(server_first)
            return self._client.get_client_final()
        except ScramException as exc:
            raise ValueError(f"bad {MECHANISM} server message: {exc}") from None

    def verify_server(self, server_final: str) -> bool:
        """Whether the server proved it holds this user's keys."""
        try:
            self._client.set_server_final(server_final)
        except ScramException:
            return False
        return True
