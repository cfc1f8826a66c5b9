"""Every exception pbnb raises, in one place.

The split follows h11: `ProtocolError` means the *peer* broke the rules of the
wire; `SerializationError` means *we* were asked to send something the wire
cannot carry. Both are converted at the connection boundary into the failure of
exactly one call where that is possible, and into a closed connection only when
the byte stream itself can no longer be trusted.
"""

from __future__ import annotations

import builtins


def qualified_name(cls: type) -> str:
    """The name a class travels under: ``ValueError`` for builtins, else ``module.QualName``."""
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class PBError(Exception):
    """Base class of every exception raised by pbnb itself."""


class Error(Exception):
    """An expected application error.

    Raise a subclass from a remote method to report a failure the caller should
    handle; the server does not log it as a crash.
    """


class RemoteError(PBError):
    """A remote method raised an exception that did not travel as a copy.

    ``remote_type`` is the qualified class name of the exception on the peer,
    ``remote_bases`` the qualified names of its base classes as the peer sent
    them (nearest first); ``remote_traceback`` is the formatted traceback text
    when the peer was configured to send tracebacks, else ``None``.

    It answers the questions Twisted code asked of a ``Failure``: ``check``,
    ``trap``, ``getErrorMessage()``, ``type`` and ``value``. Classes are
    matched by qualified name (``myapp.errors.Full``, or ``KeyError`` for
    builtins), so the caller needs no copy of the peer's exception class,
    only one importable under the same name.
    """

    def __init__(
        self,
        remote_type: str,
        message: str,
        remote_traceback: str | None = None,
        remote_bases: tuple[str, ...] = (),
    ):
        super().__init__(remote_type, message, remote_traceback)
        self.remote_type = remote_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.remote_bases = tuple(remote_bases)

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.message}" if self.message else self.remote_type

    @property
    def type(self) -> str:
        """The remote exception's qualified class name (Twisted's ``failure.type``)."""
        return self.remote_type

    @property
    def value(self) -> RemoteError:
        """The error itself (Twisted's ``failure.value``)."""
        return self

    def getErrorMessage(self) -> str:
        """The remote exception's message, as ``str()`` of it gave on the peer."""
        return self.message

    def check(self, *types: builtins.type[BaseException] | str) -> builtins.type[BaseException] | str | None:
        """The first of ``types`` the remote exception is an instance of, else None.

        Each may be a class or a qualified name; the remote class and its bases
        are compared by qualified name.
        """
        names = {self.remote_type, *self.remote_bases}
        for candidate in types:
            if (candidate if isinstance(candidate, str) else qualified_name(candidate)) in names:
                return candidate
        return None

    def trap(self, *types: builtins.type[BaseException] | str) -> builtins.type[BaseException] | str:
        """Like ``check``, but raise this error again when none of ``types`` matches."""
        found = self.check(*types)
        if found is None:
            raise self
        return found


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


class ReadOnlyField(Error):
    """A peer tried to set a field its ``WritableCacheable`` owner does not list in ``writable_fields``."""


class SerializationError(PBError, TypeError):
    """A value cannot be put on the wire (an unsupported type, a foreign reference)."""


class InsecureJelly(SerializationError):
    """A value named a class that one side has not allowed.

    Raised on the receiving side for a copy of a class it has not registered,
    and by the call whose arguments or answer carried the refused value.
    """


class CallCancelled(PBError):
    """The remote method was cancelled on its own side before it could answer.

    (Cancelling your own ``callRemote`` awaitable raises ``asyncio.CancelledError``
    for you, as any cancelled future does, and tells the peer to stop.)
    """


class PipelineError(PBError, TypeError):
    """A call pipelined on an answer that gave it nothing to run on.

    The answer was not a reference (the message says what it was), or the
    call it was pipelined on was cancelled. When that call failed, the
    pipelined calls fail with its error instead.
    """


# Errors that keep their own class when they cross the wire, by qualified name.
TRANSPORTED: dict[str, builtins.type[PBError]] = {
    f"{__name__}.{cls.__name__}": cls
    for cls in (
        NoSuchMethod,
        InsecureJelly,
        LimitExceeded,
        ProtocolError,
        SerializationError,
        CallCancelled,
        PipelineError,
    )
}


class BackplaneUnavailable(PBError, ConnectionError):
    """The Redis backplane cannot be reached (at start, or to load a shared cache)."""
