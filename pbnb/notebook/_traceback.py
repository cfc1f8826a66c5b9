"""Short tracebacks in a notebook: the user's own lines and pbnb's message, nothing else.

A refused connection or a dead reference raises deep inside pbnb (the magic,
the client, the broker, the serializer) and IPython would print every one of
those frames, plus the line as the input transformer rewrote it
(``await get_ipython().run_line_magic(...)``). While the extension is loaded,
an error whose traceback passes through pbnb shows only the frames of the
user's code, with magic lines as they were typed; ``%tb`` still prints the
whole chain, because IPython keeps the exception as usual.
"""

from __future__ import annotations

import ast
import asyncio
import linecache
import os
import re
from types import TracebackType
from typing import Any

import pbnb

_RED, _BOLD, _DIM, _RESET = "\x1b[31m", "\x1b[1m", "\x1b[2m", "\x1b[0m"
_INTERNAL = tuple(os.path.dirname(module.__file__ or "") + os.sep for module in (pbnb, asyncio))
_MAGIC_CALL = re.compile(r"(?:await )?get_ipython\(\)\.run_line_magic\((['\"]\w+['\"]), ('.*?'|\".*?\")\)")


def _typed(match: re.Match[str]) -> str:
    """``await get_ipython().run_line_magic('pb_connect', 'x')`` -> ``%pb_connect x``."""
    try:
        return f"%{ast.literal_eval(match[1])} {ast.literal_eval(match[2])}".rstrip()
    except (ValueError, SyntaxError):
        return match[0]


def typed_line(line: str) -> str:
    """A cell line as the user typed it, undoing IPython's rewrite of line magics."""
    return _MAGIC_CALL.sub(_typed, line)


def _walk(tb: TracebackType | None) -> list[TracebackType]:
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    return frames


def passes_through_pbnb(tb: TracebackType | None) -> bool:
    """Whether any frame of ``tb`` is pbnb's own code."""
    return any(frame.tb_frame.f_code.co_filename.startswith(_INTERNAL[0]) for frame in _walk(tb))


def short_traceback(shell: Any, value: BaseException, tb: TracebackType | None) -> list[str]:
    """The user's frames (cells and their own modules) and the error, as IPython's structured text."""
    cells = getattr(getattr(shell, "compile", None), "_filename_map", {})
    lines = []
    for frame in _walk(tb):
        filename = frame.tb_frame.f_code.co_filename
        if filename.startswith(_INTERNAL) or "site-packages" in filename or filename.startswith("<frozen"):
            continue
        number = cells.get(filename)
        where = f"Cell In[{number}]" if number is not None else filename
        source = typed_line(linecache.getline(filename, frame.tb_lineno).strip())
        lines.append(f"{_DIM}{where}, line {frame.tb_lineno}{_RESET}\n    {source}")
    message = str(value)
    kind = getattr(value, "remote_type", None) and type(value).__name__
    head = f"{_RED}{_BOLD}{type(value).__name__}{_RESET}: {message}" if message else type(value).__name__
    if kind:
        head += f"\n  raised on the peer as {value.remote_type}"  # type: ignore[attr-defined]
    hint = "pbnb's own frames are hidden: %tb shows the full traceback"
    if getattr(value, "remote_traceback", None):
        hint += ", and the exception's .remote_traceback the peer's"
    return [*lines, head, f"{_DIM}({hint}){_RESET}"]


def handler(shell: Any, etype: type, value: BaseException, tb: TracebackType, tb_offset: Any = None) -> None:
    # IPython calls it as a method of the shell: ``shell`` is the shell.
    """IPython's custom exception handler: short for pbnb's errors, IPython's own for the rest."""
    if passes_through_pbnb(tb) or isinstance(value, (pbnb.PBError, pbnb.Error)):
        stb = short_traceback(shell, value, tb)
        value._render_traceback_ = lambda: stb  # type: ignore[attr-defined]
        try:
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        finally:
            del value._render_traceback_  # type: ignore[attr-defined]  # so %tb shows everything
    else:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)


def install(shell: Any) -> None:
    """Show short tracebacks for errors raised through pbnb in ``shell``."""
    shell.set_custom_exc((Exception,), handler)


def uninstall(shell: Any) -> None:
    """Give ``shell`` IPython's own tracebacks back (unless someone replaced ours meanwhile)."""
    if shell.custom_exceptions == (Exception,):
        shell.set_custom_exc((), None)
