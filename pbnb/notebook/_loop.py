"""How the magics do async work in a kernel without ever blocking its loop.

A line magic is a plain function, yet ``x = %pb_connect ...`` must hand back a
connected reference usable on the very next line. Running the loop re-entrantly
would do it, but that kills the kernel under "Run All" (design §5), so pbnb never
nests the loop. Instead an IPython input transformer rewrites the calls of our
async magics into ``await get_ipython().run_line_magic(...)``; IPython then runs
the whole cell as top-level async code on the kernel's own loop.

The magics themselves return a ``Pending`` (an awaitable around a task that is
already running), so a call the transformer could not rewrite still does its
work; when no loop runs at all (a terminal between cells, a plain script) the
work runs to completion on IPython's loop, which is not nested because nothing
is running. That is the only blocking in the notebook layer.
"""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from ..aio.connection import connection_of

#: The magics whose work is asynchronous; the transformer awaits their calls.
ASYNC_MAGICS = ("pb_serve", "pb_connect", "pb_disconnect")

_MAGIC_NAMES = "|".join(ASYNC_MAGICS)
_MAGIC_CALL = re.compile(rf"(?<![\w.])get_ipython\(\)\.run_line_magic\('(?:{_MAGIC_NAMES})',")
_TOP_LEVEL_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST


class AwaitMagics:
    """An ``input_transformers_post`` entry: await our async magics' calls.

    A rewrite that would not compile (a magic inside a plain ``def``) is left
    out, and so is every rewrite while IPython's autoawait is off or not asyncio.
    """

    def __init__(self, shell: Any):
        self.shell = shell

    def __call__(self, lines: list[str]) -> list[str]:
        if not any("run_line_magic('pb_" in line for line in lines) or not self._can_await():
            return lines
        rewritten = [_MAGIC_CALL.sub(r"await \g<0>", line) for line in lines]
        try:
            compile("".join(rewritten), "<pbnb>", "exec", flags=_TOP_LEVEL_AWAIT)
        except SyntaxError:
            return lines
        return rewritten

    def _can_await(self) -> bool:
        from IPython.core.async_helpers import _asyncio_runner

        return bool(self.shell.autoawait) and self.shell.loop_runner is _asyncio_runner


class Pending:
    """The work of a pbnb magic, already running: ``await`` it for the result.

    A magic's line is normally awaited for you, so you only meet this when the
    line could not be rewritten: in the cell that ran ``%load_ext pbnb`` (the
    cell was parsed before the extension loaded) or inside a plain function.
    """

    def __init__(self, task: asyncio.Task, what: str):
        self._task = task
        self._what = what

    def __await__(self) -> Generator[Any, None, Any]:
        return self._task.__await__()

    @property
    def task(self) -> asyncio.Task:
        """The running work."""
        return self._task

    @property
    def what(self) -> str:
        """Which magic started the work."""
        return self._what

    def done(self) -> bool:
        """Whether the work has finished (successfully or not)."""
        return self._task.done()

    def result(self) -> Any:
        """The result, once done (raises the work's error, or InvalidStateError before)."""
        return self._task.result()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            f"{self._what} has not been awaited, so this is a Pending, not its result: write "
            f"`x = await x` (or run `%load_ext pbnb` in an earlier cell, so the magic's line is "
            f"awaited for you); then use x.{name}"
        )

    def __repr__(self) -> str:
        if not self._task.done():
            state = "running"
        elif self._task.cancelled():
            state = "cancelled"
        elif self._task.exception() is not None:
            state = f"failed: {self._task.exception()!r}"
        else:
            state = f"done: {self._task.result()!r}"
        return f"<pbnb Pending {self._what}: {state}; await it>"


# The loop keeps only weak references to tasks: hold ours until they finish,
# even when nobody keeps the Pending.
_running: set[asyncio.Task] = set()


def start(work: Coroutine[Any, Any, Any], what: str) -> Any:
    """Run ``work`` for a magic: a ``Pending`` inside a running loop, else its result."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        from IPython.core.async_helpers import get_asyncio_loop

        return get_asyncio_loop().run_until_complete(work)
    return Pending(_keep(loop.create_task(work)), what)


def _keep(task: asyncio.Task) -> asyncio.Task:
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


def spawn(loop: asyncio.AbstractEventLoop, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """From any thread, start ``make()`` as a task on ``loop`` and keep it until it ends."""
    call_on_loop(loop, lambda: _keep(loop.create_task(make())))


def loop_of(ref: Any) -> asyncio.AbstractEventLoop:
    """The event loop that runs ``ref``'s connection: where widget callbacks must hop."""
    return connection_of(ref).loop


def call_on_loop(loop: asyncio.AbstractEventLoop, function: Callable[..., Any], *args: Any) -> None:
    """Run ``function(*args)`` on ``loop``'s thread: now if already there, else soon."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # keeps a local change in order with the calls that follow it
        function(*args)
    else:
        loop.call_soon_threadsafe(function, *args)
