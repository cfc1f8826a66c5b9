"""Wait, with a timeout, until a traitlets object's trait satisfies a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def until(obj: Any, name: str, condition: Callable[[Any], bool], timeout: float = 5) -> Any:
    """Return ``getattr(obj, name)`` once ``condition`` holds for it (checked on every change)."""
    loop = asyncio.get_running_loop()
    reached = loop.create_future()

    def check(_change: Any = None) -> None:
        value = getattr(obj, name)
        if condition(value):
            loop.call_soon_threadsafe(lambda: reached.done() or reached.set_result(value))

    obj.observe(check, names=[name])
    try:
        check()
        return await asyncio.wait_for(reached, timeout)
    finally:
        obj.unobserve(check, names=[name])
