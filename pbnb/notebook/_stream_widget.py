"""A remote stream shown as a cell's result: it reads the items and shows them as they arrive.

Displaying a ``RemoteIterator`` in a kernel makes a ``StreamWidget``, which
becomes the stream's reader: it counts the items, shows their rate and the
latest few, and its stop button closes the stream (the remote generator's
``finally`` runs on the peer). Its state line is never more optimistic than the
stream: once no item can arrive it says how the stream ended (done, stopped,
failed, connection lost) and the button is disabled.

Items may arrive tens of thousands a second, and each widget change is a
message to the browser, so the widget redraws at most ``REFRESH`` times a
second, and once more at the end.
"""

from __future__ import annotations

import asyncio
import html
from collections import deque
from typing import Any

import ipywidgets as widgets
import traitlets

from ..aio.streams import RemoteIterator
from ..errors import PBConnectionLost
from ._loop import call_on_loop, spawn
from ._numbers import format_number, format_rate
from ._progress_widget import ProgressLine
from ._widgets import _SPINNER, PRE_STYLE, _short_repr, error_widget

#: Redraws a second, at most, while items arrive.
REFRESH = 5
#: Seconds of history the "items/s" of a running stream is measured over.
RATE_SPAN = 2.0
_ITEM_TEXT = 160
#: How a stream can end, and what the widget then says.
OUTCOMES = {
    "done": "done: the stream ended",
    "stopped": "stopped: the stream was closed",
    "failed": "failed",
    "connection lost": "connection lost",
}


def rate_text(items: int, seconds: float) -> str:
    """``'1,234 items/s'``, or ``'…'`` while too little time passed to measure."""
    if seconds <= 0:
        return "… items/s"
    return f"{format_rate(items / seconds)} items/s"


class StreamWidget(widgets.VBox):
    """A ``RemoteIterator`` read live: its state, count, rate, latest items, and a stop button.

    The widget reads the stream (nothing else should iterate it meanwhile);
    ``latest`` says how many of the last items it shows.
    """

    #: "streaming", then how it ended (observe it to act on the end).
    outcome = traitlets.Enum(("streaming", *OUTCOMES), "streaming", read_only=True)

    def __init__(self, iterator: RemoteIterator, latest: int = 5):
        self.iterator = iterator
        #: The last items read, oldest first.
        self.latest: deque[Any] = deque(maxlen=latest)
        self.spinner = widgets.HTML(_SPINNER)
        self.state = widgets.HTML()
        self.state.add_class("pbnb-stream-state")
        self.counts = widgets.HTML()
        self.counts.add_class("pbnb-stream-count")
        self.items = widgets.HTML()
        self.items.add_class("pbnb-stream-items")
        self.stop = widgets.Button(
            description="stop",
            icon="stop",
            tooltip=f"close the stream: {iterator.method}() stops on the peer",
        )
        self.stop.add_class("pbnb-stream-stop")
        self.error = widgets.VBox()
        loop = self._loop = iterator.loop
        #: The generator's own progress reports (``pb.progress``), shown once the first arrives.
        self.progress = ProgressLine(loop)
        super().__init__(
            [
                widgets.HBox([self.spinner, self.state, self.stop]),
                self.counts,
                self.progress,
                self.items,
                self.error,
            ]
        )
        self.add_class("pbnb-stream")
        self._started = loop.time()
        self._ended_at: float | None = None
        self._first = iterator.received  # items read before this widget took over
        self._samples: deque[tuple[float, int]] = deque([(self._started, iterator.received)])
        self.stop.on_click(lambda _b: call_on_loop(loop, self._stop))
        call_on_loop(loop, iterator.on_progress, self.progress.report)
        self._draw()
        spawn(loop, self._read)
        call_on_loop(loop, loop.call_later, 1 / REFRESH, self._tick)

    def _stop(self) -> None:
        self.stop.disabled = True
        spawn(self._loop, self.iterator.aclose)

    async def _read(self) -> None:
        try:
            async for item in self.iterator:
                self.latest.append(item)
        except PBConnectionLost as exc:
            self._end("connection lost", exc)
        except Exception as exc:
            self._end("failed", exc)
        except asyncio.CancelledError:  # the loop is going away: so is the stream
            self._end("stopped")
            raise
        else:
            self._end("stopped" if self.iterator.stopped else "done")

    def _end(self, outcome: str, error: BaseException | None = None) -> None:
        self._ended_at = self._loop.time()
        if error is not None:
            self.error.children = [error_widget(error)]
        self._draw(outcome)
        self.progress.end("finished" if outcome == "done" else outcome)
        self.set_trait("outcome", outcome)

    def _tick(self) -> None:
        if self._ended_at is not None:
            return
        now = self._loop.time()
        self._samples.append((now, self.iterator.received))
        while now - self._samples[0][0] > RATE_SPAN and len(self._samples) > 2:
            self._samples.popleft()
        self._draw()
        self._loop.call_later(1 / REFRESH, self._tick)

    def _draw(self, outcome: str = "streaming") -> None:
        received = self.iterator.received
        what = f"<code>{html.escape(self.iterator.method)}()</code>"
        running = self._ended_at is None
        if running:
            since, before = self._samples[0]
            rate = rate_text(received - before, self._loop.time() - since)
            color, state = "#1b7f3a", f"streaming {what}"
        else:
            rate = rate_text(received - self._first, self._ended_at - self._started)  # type: ignore[operator]
            color = "#b00020" if outcome in ("failed", "connection lost") else "#555"
            state = f"{OUTCOMES[outcome]} · {what}"
        elapsed = (self._ended_at if not running else self._loop.time()) - self._started  # type: ignore[operator]
        self.state.value = f"<span style='color:{color}'>● {state}</span>"
        self.counts.value = (
            f"<span><b>{format_number(received)}</b> item{'' if received == 1 else 's'} · {rate} "
            f"· {elapsed:.1f} s</span>"
        )
        shown = list(self.latest)
        first = received - len(shown) + 1
        lines = [
            f"#{format_number(first + i)}  {_short_repr(item)[:_ITEM_TEXT]}" for i, item in enumerate(shown)
        ]
        self.items.value = (
            f"<pre style='{PRE_STYLE}'>{html.escape(chr(10).join(lines))}</pre>"
            if lines
            else "<i>no items yet</i>"
        )
        if not running:
            self.spinner.layout.display = "none"
            self.stop.disabled = True

    def close(self) -> None:
        """Close the widget; a stream still running is stopped (nobody would see its items)."""
        if self._ended_at is None:
            call_on_loop(self._loop, self._stop)
        super().close()
