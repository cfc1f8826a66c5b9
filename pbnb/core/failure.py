"""How exceptions cross the wire: type names, base names, clipped texts, rebuilt errors."""

from __future__ import annotations

from typing import Any

from ..errors import TRANSPORTED, RemoteError, qualified_name

#: The longest type name an ERROR carries, the most base-class names and the
#: longest of those: with the clipped message and traceback, the header always
#: fits its u16 length.
MAX_TYPE_NAME = 1024
MAX_BASES = 16
MAX_BASE_NAME = 512


def qualified_type(exc: BaseException) -> str:
    """The name an exception travels under: ``ValueError``, ``pkg.mod.Class``."""
    return qualified_name(type(exc))


def base_names(error: BaseException) -> list[str]:
    """The qualified names of ``error``'s base classes, nearest first, ``object`` left out.

    A RemoteError passed on keeps the bases its own peer sent, so a relay does
    not turn a ``KeyError`` into a plain ``RemoteError``.
    """
    if isinstance(error, RemoteError) and error.remote_type != qualified_type(error):
        names = list(error.remote_bases)
    else:
        names = [qualified_name(cls) for cls in type(error).__mro__[1:] if cls is not object]
    return [clip(name, MAX_BASE_NAME) for name in names[:MAX_BASES]]


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


def read_bases(raw: object) -> tuple[str, ...]:
    """The base names of a received ERROR; peers that send none give ``()``."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_BASES or not all(isinstance(n, str) for n in raw):
        raise ValueError(f"ERROR bases must be a list of at most {MAX_BASES} strings")
    return tuple(raw)


def rebuild_error(
    remote_type: str, message: str, tb: str | None, bases: tuple[str, ...] = ()
) -> BaseException:
    cls = TRANSPORTED.get(remote_type)
    if cls is None:
        return RemoteError(remote_type, message, tb, bases)
    if issubclass(cls, RemoteError):
        return cls(remote_type, message, tb, bases)
    error: Any = cls(message)  # a pbnb error raised as itself, remembering where it came from
    error.remote_type = remote_type
    error.remote_traceback = tb
    return error
