"""Every exception pbnb raises, in one place.

The split follows h11: `ProtocolError` means the *peer* broke the rules of the
wire; `SerializationError` means *we* were asked to send something the wire
cannot carry. Both are converted at the connection boundary into the failure of
exactly one call where that is possible, and into a closed connection only when
the byte stream itself can no longer be trusted.
"""

from __future__ import annotations


class PBError(Exception):
    """Base class of every exception raised by pbnb itself."""


class Error(Exception):
    """An expected application error.

    Raise a subclass from a remote method to report a failure the caller should
    handle; the server does not log it as a crash.
    """


class RemoteError(PBError):
    """A remote method raised an exception that did not travel as a copy.

    ``remote_type`` is the qualified class name of the exception on the peer;
    ``remote_traceback`` is the formatted traceback text when the peer was
    configured to send tracebacks, else ``None``.
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str | None = None):
        super().__init__(remote_type, message, remote_traceback)
        self.remote_type = remote_type
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.message}" if self.message else self.remote_type


class NoSuchMethod(RemoteError):
    """The remote object has no remotely callable method of that name."""

    def __str__(self) -> str:
        return self.message


class DeadReferenceError(PBError):
    """A call was made on a reference whose connection is gone."""


class PBConnectionLost(PBError, ConnectionError):
    """The connection dropped while the call was waiting for its answer."""


class ServerFull(PBConnectionLost):
    """The server turned the connection away because it already holds ``max_connections``.

    ``connect`` raises it. Nothing is wrong with the client: it may try again later.
    """


class ProtocolError(PBError):
    """The peer broke the protocol: bad handshake, malformed frame, broken rule."""


class LimitExceeded(ProtocolError):
    """A configured limit (frame size, depth, lengths, outstanding calls, ...) was hit."""


class InsecureJelly(PBError):
    """A value named a class that the receiving side has not allowed.

    Raised on the receiving side, and by the call whose arguments or answer
    carried the refused value.
    """


class SerializationError(PBError, TypeError):
    """A value cannot be put on the wire (an unsupported type, a foreign reference)."""


class CallCancelled(PBError):
    """The remote method was cancelled on its own side before it could answer.

    (Cancelling your own ``callRemote`` awaitable raises ``asyncio.CancelledError``
    for you, as any cancelled future does, and tells the peer to stop.)
    """


# Errors that keep their own class when they cross the wire, by qualified name.
TRANSPORTED = {
    f"{__name__}.{cls.__name__}": cls
    for cls in (NoSuchMethod, InsecureJelly, LimitExceeded, ProtocolError, SerializationError, CallCancelled)
}
