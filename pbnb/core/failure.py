"""How exceptions cross the wire: type names, clipped texts, rebuilt errors."""

from __future__ import annotations

from ..errors import TRANSPORTED, RemoteError


def qualified_type(exc: BaseException) -> str:
    """The name an exception travels under: ``ValueError``, ``pkg.mod.Class``."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def text_of(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # a broken __str__ must not keep the caller from its answer
        return f"<{qualified_type(error)} whose str() failed>"


def clip(text: str, limit: int, *, keep_end: bool = False) -> str:
    """At most ``limit`` UTF-8 bytes of ``text`` (its start, or its end with ``keep_end``)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return (data[-limit:] if keep_end else data[:limit]).decode("utf-8", "ignore")


def rebuild_error(remote_type: str, message: str, tb: str | None) -> BaseException:
    cls = TRANSPORTED.get(remote_type)
    if cls is None:
        return RemoteError(remote_type, message, tb)
    if issubclass(cls, RemoteError):
        return cls(remote_type, message, tb)
    error = cls(message)
    error.remote_type = remote_type  # type: ignore[attr-defined]
    error.remote_traceback = tb  # type: ignore[attr-defined]
    return error
