"""Options shared by serve() and connect(), split into limits and the rest."""

from __future__ import annotations

from typing import Any

from ..core.wire import Limits

_CONNECTION_OPTIONS = (
    "registry",
    "send_tracebacks",
    "keepalive",
    "dead_peer_timeout",
    "handshake_timeout",
    "max_send_buffer",
)


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], Limits]:
    """Return (connection keyword arguments, Limits) from serve()/connect() keywords."""
    connection = {name: options.pop(name) for name in _CONNECTION_OPTIONS if name in options}
    limits = options.pop("limits", None)
    if limits is None:
        limits = Limits.from_options(**options)
    elif options:
        raise TypeError(f"pass limits either as limits= or as keywords, not both: {sorted(options)}")
    return connection, limits
