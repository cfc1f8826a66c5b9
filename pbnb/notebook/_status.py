"""What ``%pb_status`` shows: this kernel's servers, connections, references and caches."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

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
            state = "connected" if connected.client.connected else "closed"
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
        """A widget with the report and a button that refreshes it."""
        view = widgets.HTML(self.html())
        button = widgets.Button(description="refresh", icon="refresh")

        def refresh(_button: Any) -> None:
            self.take()
            view.value = self.html()

        button.on_click(refresh)
        box = widgets.VBox([view, button])
        box.add_class("pbnb-status-report")
        return box

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return widget_bundle(self.widget, self.text())

    def __repr__(self) -> str:
        return self.text()
