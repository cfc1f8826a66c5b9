"""Where ``connect()`` goes: a host and port (raw PB over TCP) or a URL.

``pb://host:port`` is raw PB over TCP, ``ws://host:port/path`` and
``wss://host:port/path`` are PB over WebSocket (plain or TLS).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

#: The port of a ``pb://`` URL that names none (Twisted PB's customary port; ``pbnb.portno``).
PB_PORT = 8787
_DEFAULT_PORTS = {"pb": PB_PORT, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class Address:
    """A parsed connect() target."""

    scheme: str  # "pb", "ws" or "wss"
    host: str
    port: int
    url: str  # as given; "host:port" for a host and a port

    @property
    def websocket(self) -> bool:
        return self.scheme != "pb"

    def __str__(self) -> str:
        return self.url


def parse_address(target: str, port: int | None) -> Address:
    """Turn ``connect()``'s ``host, port`` or URL into an Address; ValueError saying what is wrong."""
    if not isinstance(target, str):
        raise TypeError(f"connect() takes a host name or a URL, not {type(target).__name__}")
    if "://" not in target:
        if port is None:
            raise ValueError(
                f"connect({target!r}) needs a port, or a URL: 'pb://host:port' (raw PB over TCP), "
                "'ws://host:port/path' or 'wss://...' (PB over WebSocket)"
            )
        return Address("pb", target, port, f"{_bracketed(target)}:{port}")
    if port is not None:
        raise TypeError(f"connect() takes a URL or a host and a port, not both ({target!r}, {port!r})")
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unknown scheme {parts.scheme!r} in {target!r}: use pb://, ws:// or wss://")
    try:
        url_port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {target!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"no host in {target!r}")
    if scheme == "pb" and (parts.path not in ("", "/") or parts.query):
        raise ValueError(f"a pb:// URL names a host and port only, not a path: {target!r}")
    return Address(scheme, parts.hostname, url_port or _DEFAULT_PORTS[scheme], target)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
