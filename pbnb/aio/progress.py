"""``pb.progress``: a remote method tells its caller how far it has got.

The report goes to the caller of the call being served (the context
variable the Connection sets for each call, so it follows the method into
its tasks and into threads started with ``asyncio.to_thread``). Each call's
``core.progress.Throttle`` keeps the latest report; at most one PROGRESS
frame per ``INTERVAL`` goes out, the rest are only stored, so a tight loop
pays about three empty function calls a report and the peer sees the latest.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import cast

from ..core.progress import MAX_MESSAGE, Throttle, checked_message, checked_number
from .connection import Connection, _serving

# The ints msgpack carries as they are; others go through checked_number.
_LOW, _HIGH = -(2**63), 2**64
# A str message this short fits MAX_MESSAGE bytes whatever it holds (4 bytes a character at most).
_SHORT = MAX_MESSAGE // 4


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # a thread with no loop
        return False


def progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Report that the running remote method has done ``done`` out of ``total`` (None: unknown).

    The caller sees it as ``future.progress`` and through
    ``future.on_progress(callback)``. Call it as often as you like: the
    reports are rate-limited (one frame per call every 50 ms at most, always
    the latest; the answer supersedes one still held back). It works in
    plain and ``async`` methods, in the tasks they start and in threads
    started with ``asyncio.to_thread``. Outside a remote call, and in a call
    whose caller asked for no answer, it does nothing, so code shared with
    local use may call it freely. TypeError or ValueError for a ``done`` or
    ``total`` that is not a finite real number, or a ``message`` that is not
    a str (clipped to 1 KiB).
    """
    # The common forms are checked inline (x - x is 0.0 for a finite float, NaN
    # otherwise): this may run a million times a call.
    if type(done) is float:
        if done - done:
            checked_number(done, "done")  # raises
    elif type(done) is not int or not _LOW <= done < _HIGH:
        done = checked_number(done, "done")
    if total is not None:
        if type(total) is float:
            if total - total:
                checked_number(total, "total")
        elif type(total) is not int or not _LOW <= total < _HIGH:
            total = checked_number(total, "total")
    if message is not None and (type(message) is not str or len(message) > _SHORT):
        message = checked_message(message)
    call = _serving.get()
    if call is None or not call.request_id:
        return
    throttle = call.throttle
    if throttle is None:
        throttle = call.throttle = Throttle()
    throttle.latest = (done, total, message)
    if throttle.armed:
        return  # the frame that will carry it is already planned
    delay = throttle.arm(monotonic())
    connection = cast(Connection, call.broker.invoker)  # this driver serves the calls it runs
    loop = connection.loop
    if _on_loop(loop):
        if delay:
            loop.call_later(delay, connection.send_progress, call)
        else:
            connection.send_progress(call)
    else:  # a worker thread: the broker is the loop's
        try:
            loop.call_soon_threadsafe(loop.call_later, delay, connection.send_progress, call)
        except RuntimeError:  # the loop is closed: the caller is long gone
            pass
