"""What a caller keeps of the progress reports of one call or stream: the latest, and who to tell."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..core.progress import Progress

log = logging.getLogger("pbnb")


class ProgressWatch:
    """The latest report (``pb.progress`` on the other side) and the callbacks to run on each."""

    __slots__ = ("callbacks", "latest")

    def __init__(self) -> None:
        self.latest: Progress | None = None
        self.callbacks: list[Callable[[Progress], Any]] = []

    def add(self, callback: Callable[[Progress], Any], loop: asyncio.AbstractEventLoop) -> None:
        """Run ``callback`` on each later report; a report already in hand is given to it soon."""
        self.callbacks.append(callback)
        if self.latest is not None:
            loop.call_soon(_tell, callback, self.latest)

    def received(self, progress: Progress) -> None:
        self.latest = progress
        for callback in self.callbacks:
            _tell(callback, progress)


def _tell(callback: Callable[[Progress], Any], progress: Progress) -> None:
    try:
        callback(progress)
    except Exception:  # the caller's own code: log it, keep the call going
        log.exception("progress callback %r failed", callback)
