"""A running call's progress as a person reads it: a bar, the message, the rate, the time left.

A remote method reports with ``pb.progress(done, total, message)``; the caller's
``CallFuture`` hands each report to ``on_progress`` callbacks. A pending call
shown in a cell (an un-awaited call, a method form's call) shows a
``ProgressLine`` from the first report on. When the call ends, the line stops
and says how (finished, failed, cancelled, connection lost), in the bar's
colour too: a bar that will never move again must not look as if it might.
"""

from __future__ import annotations

import asyncio
import html
from typing import TYPE_CHECKING

import ipywidgets as widgets

from ..errors import PBConnectionLost
from ._numbers import format_duration, format_number, format_rate

if TYPE_CHECKING:
    from ..core.progress import Progress

#: How a call (or a stream) ended -> what the line says and the bar's style.
ENDINGS = {
    "finished": "success",
    "failed": "danger",
    "connection lost": "danger",
    "cancelled": "warning",
    "stopped": "warning",
}


def ending_of(future: asyncio.Future) -> str:
    """How a settled call ended: one of ``ENDINGS``."""
    if future.cancelled():
        return "cancelled"
    error = future.exception()
    if error is None:
        return "finished"
    return "connection lost" if isinstance(error, PBConnectionLost) else "failed"


def report_parts(progress: Progress) -> list[str]:
    """What a report says, in words: ``['40%', '12 of 30', 'step 12 of 30']``."""
    fraction = progress.fraction
    amount = format_number(progress.done)
    if progress.total is not None:
        amount += f" of {format_number(progress.total)}"
    parts = [f"{fraction:.0%}", amount] if fraction is not None else [amount]
    return [*parts, progress.message] if progress.message else parts


def progress_text(progress: Progress) -> str:
    """A report as one line of text: ``'40% · 12 of 30 · step 12 of 30'``."""
    return " · ".join(report_parts(progress))


class ProgressLine(widgets.HBox):
    """The progress reports of one call: hidden until the first arrives, then live, then how it ended."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.bar = widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="240px"))
        self.bar.add_class("pbnb-progress-bar")
        self.text = widgets.HTML()
        self.text.add_class("pbnb-progress-text")
        super().__init__([self.bar, self.text])
        self.add_class("pbnb-progress")
        self.layout.display = "none"
        #: The latest report, or None before the first.
        self.latest: Progress | None = None
        #: None while the call runs, then how it ended (a key of ``ENDINGS``).
        self.ending: str | None = None
        self._loop = loop
        self._first: tuple[float, float] = (0.0, 0.0)  # (time, done) of the first report
        self._rate: float | None = None  # done per second since the first report

    def report(self, progress: Progress) -> None:
        """A report arrived (on the loop); ignored once the call has ended."""
        if self.ending is not None:
            return
        now = self._loop.time()
        if self.latest is None:
            self._first = (now, progress.done)
            self.layout.display = None
        since, done = self._first
        self._rate = (progress.done - done) / (now - since) if now > since and progress.done > done else None
        self.latest = progress
        self._show()

    def end(self, ending: str) -> None:
        """The work is over (``ending``, a key of ``ENDINGS``): freeze the line and say how.

        Nothing shows if no report came.
        """
        self.ending = ending
        if self.latest is None:
            return
        self.bar.bar_style = ENDINGS[self.ending]
        if self.ending == "finished":
            self.bar.value = 1.0  # the answer came: the work is over, whatever the last report said
        self._show()

    def _show(self) -> None:
        progress = self.latest
        assert progress is not None
        fraction = progress.fraction
        if fraction is not None and self.ending != "finished":
            self.bar.value = fraction
        # With no total there is no fraction to draw: the words say how far it got.
        self.bar.layout.display = None if fraction is not None or self.ending == "finished" else "none"
        parts = [html.escape(part) for part in report_parts(progress)]
        if self.ending is None and self._rate:
            parts.append(f"{format_rate(self._rate)}/s")
            if progress.total is not None and progress.total > progress.done:
                parts.append(f"~{format_duration((progress.total - progress.done) / self._rate)} left")
        details = " · ".join(parts)
        if self.ending is not None:
            details = f"<b class='pbnb-progress-ending'>{self.ending}</b>; last report: {details}"
        self.text.value = f"<span>{details}</span>"
