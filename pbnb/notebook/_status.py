"""What ``%pb_status`` shows: this kernel's servers, connections, references, caches and log.

The widget follows the state by itself: it looks again every second while it
is shown, and at once when a connection is lost.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ._log import log_section
from ._widgets import kind_of, widget_bundle

_TABLE_STYLE = "border-collapse:collapse;margin:2px 0 8px 0"


def _totals(brokers: list[Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for broker in brokers:
        for key, value in broker.table_sizes().items():
            totals[key] = totals.get(key, 0) + value
    return totals


class StatusReport:
    """A snapshot of the magics' state; shows as a refreshable widget and as text."""

    def __init__(self, magics: Any):
        self._magics = magics
        self.take()

    def take(self) -> None:
        """Read the current state again."""
        self.servers = [
            (name, type(server.root).__qualname__, [c.peer for c in server.connections])
            for name, server in self._magics.servers.items()
        ]
        self.connections = []
        for name, connected in self._magics.connections.items():
            role = f"avatar of {connected.user}" if connected.user else "root"
            state = "connected" if connected.client.connected else "disconnected"
            self.connections.append((name, state, f"{role}: {kind_of(connected.reference)}"))
        brokers = [c.client.broker for c in self._magics.connections.values() if c.client.broker]
        brokers += [c.broker for s in self._magics.servers.values() for c in s.connections if c.broker]
        self.totals = _totals(brokers)

    def _rows(self) -> list[tuple[str, list[tuple[str, ...]]]]:
        totals = self.totals
        return [
            ("servers", [(n, kind, f"{len(peers)} connection(s)") for n, kind, peers in self.servers]),
            ("connections", list(self.connections)),
            (
                "live references",
                [
                    ("held (remote objects we reference)", str(totals.get("imports", 0))),
                    ("exported (our objects the peers reference)", str(totals.get("exports", 0))),
                ],
            ),
            (
                "caches",
                [
                    ("held (RemoteCaches here)", str(totals.get("cache_imports", 0))),
                    ("exported (our Cacheables observed)", str(totals.get("cache_exports", 0))),
                ],
            ),
        ]

    def text(self) -> str:
        """The report as plain text."""
        lines = ["pbnb status"]
        for title, rows in self._rows():
            lines.append(f"{title}:" if rows else f"{title}: none")
            lines.extend("  " + "  ".join(row) for row in rows)
        return "\n".join(lines)

    def html(self) -> str:
        """The report as HTML tables."""
        parts = []
        for title, rows in self._rows():
            cells = "".join(
                "<tr>"
                + "".join(f"<td style='padding:0 12px 0 0'>{html.escape(c)}</td>" for c in row)
                + "</tr>"
                for row in rows
            )
            body = f"<table style='{_TABLE_STYLE}'>{cells}</table>" if rows else "<div><i>none</i></div>"
            parts.append(f"<b>{title}</b>{body}")
        return "".join(parts)

    def widget(self) -> widgets.VBox:
        """A widget with the report, kept up to date while shown, and the log."""
        view = widgets.HTML(self.html())
        view.add_class("pbnb-status-view")

        def refresh(_ref: Any = None) -> None:
            self.take()
            fresh = self.html()
            if view.value != fresh:
                view.value = fresh

        for connected in self._magics.connections.values():
            connected.reference.notifyOnDisconnect(refresh)
        follow(view, refresh)
        box = widgets.VBox([view, log_section()])
        box.add_class("pbnb-status-report")
        return box

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return widget_bundle(self.widget, self.text())

    def __repr__(self) -> str:
        return self.text()


def follow(view: widgets.Widget, refresh: Callable[[], None], every: float = 1.0) -> None:
    """Call ``refresh()`` every ``every`` seconds on the running loop until ``view`` is closed."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop (a plain script): a snapshot it is

    def tick() -> None:
        if view.comm is None:  # closed: stop looking
            return
        refresh()
        loop.call_later(every, tick)

    loop.call_later(every, tick)


def server_text(server: Any) -> str:
    """One line about a server: what it serves, where, and to how many."""
    kind = type(server.root).__qualname__
    if not server.sockets:
        return f"<pbnb Server: {kind} on {server.host}:{server.port}, stopped>"
    return f"<pbnb Server: {kind} on {server.host}:{server.port}, {len(server.connections)} connection(s)>"


def server_widget(server: Any) -> widgets.VBox:
    """A server shown live: what it serves, where, its connections, and the log."""
    head = widgets.HTML()
    head.add_class("pbnb-server")

    def refresh() -> None:
        fresh = html.escape(server_text(server).strip("<>"))
        if head.value != fresh:
            head.value = fresh

    refresh()
    follow(head, refresh)
    return widgets.VBox([head, log_section()])


def server_bundle(server: Any) -> dict[str, Any]:
    """Display data for a Server: a live widget with the log in a kernel, text everywhere."""
    return widget_bundle(lambda: server_widget(server), server_text(server))
