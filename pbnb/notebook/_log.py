"""Where pbnb's log goes in a kernel: a panel, not the output of whatever cell is nearby.

A server in a kernel logs from the kernel's loop, and Python's fallback
handler writes to ``sys.stderr``, which the kernel sends to the cell that
started the server (or whichever cell runs at that moment): a failed login
would show up far from anything to do with it. While the extension is loaded,
the ``pbnb`` logger keeps its records here instead, and ``%pb_status`` and
each served server's widget show them.
"""

from __future__ import annotations

import html
import logging
import weakref
from collections import deque

import ipywidgets as widgets

from ._widgets import PRE_STYLE

_COLORS = {logging.ERROR: "#b00020", logging.WARNING: "#8a5a00"}


class LogPanel(logging.Handler):
    """Keeps the last ``keep`` log lines and shows them in every panel widget it made."""

    def __init__(self, keep: int = 200):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        self.lines: deque[tuple[int, str]] = deque(maxlen=keep)
        self._views: weakref.WeakSet[widgets.HTML] = weakref.WeakSet()
        self._saved: tuple[int, bool] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append((record.levelno, self.format(record)))
        except Exception:
            self.handleError(record)
            return
        for view in list(self._views):
            view.value = self.html()  # from any thread: the kernel sends comm messages from any

    def text(self) -> str:
        """The kept lines, oldest first."""
        return "\n".join(line for _level, line in self.lines)

    def html(self) -> str:
        """The kept lines as HTML, warnings and errors in colour."""
        if not self.lines:
            return "<i>nothing logged yet</i>"
        rows = []
        for level, line in self.lines:
            color = next((c for threshold, c in _COLORS.items() if level >= threshold), "inherit")
            rows.append(f"<div style='color:{color}'>{html.escape(line)}</div>")
        return f"<pre style='white-space:pre-wrap;{PRE_STYLE}'>" + "".join(rows) + "</pre>"

    def widget(self) -> widgets.HTML:
        """A scrolling view of the log that follows new lines."""
        view = widgets.HTML(self.html(), layout=widgets.Layout(max_height="14em", overflow="auto"))
        view.add_class("pbnb-log")
        self._views.add(view)
        return view

    def install(self) -> None:
        """Take over the ``pbnb`` logger: keep its INFO and up here, and send none of it to stderr."""
        if self._saved is not None:
            return
        logger = logging.getLogger("pbnb")
        self._saved = (logger.level, logger.propagate)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(self)

    def uninstall(self) -> None:
        """Give the ``pbnb`` logger back as it was."""
        if self._saved is None:
            return
        logger = logging.getLogger("pbnb")
        logger.removeHandler(self)
        logger.setLevel(self._saved[0])
        logger.propagate = self._saved[1]
        self._saved = None


#: The kernel's one log panel.
panel = LogPanel()


def log_section() -> widgets.VBox:
    """A titled log panel, for the status report and the server widget."""
    title = widgets.HTML("<b>log</b> <span style='color:#777'>(pbnb, INFO and up)</span>")
    box = widgets.VBox([title, panel.widget()])
    box.add_class("pbnb-log-section")
    return box
