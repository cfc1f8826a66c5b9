"""What the WebSocket tests serve, to Python clients and to Pyodide under Node alike.

A Pyodide script cannot import this module (it runs in another interpreter),
so it registers its copy of ``Notes`` by the name ``ws_service.Notes``.
"""

from __future__ import annotations

from typing import Any

import pbnb as pb


class Notes(pb.ObservedCacheable):
    """A live list: every copy follows each change."""

    observed_fields = ("items",)

    def __init__(self) -> None:
        self.items: list[str] = []


class NotesCopy(pb.ObservedRemoteCache):
    observed_fields = ("items",)


pb.setUnjellyableForClass(Notes, NotesCopy)


class Counter(pb.Referenceable):
    """A reference the server hands out."""

    def __init__(self) -> None:
        self.count = 0

    def remote_bump(self) -> int:
        self.count += 1
        return self.count


class Service(pb.Root):
    """Calls, references both ways, a live cache, large values."""

    def __init__(self) -> None:
        self.notes = Notes()
        self.counter = Counter()

    def remote_echo(self, value: Any) -> Any:
        return value

    async def remote_call_back(self, ref: pb.RemoteReference, value: Any) -> Any:
        """Call the caller's object back: a reference from the client, used by the server."""
        return await ref.callRemote("twice", value)

    def remote_counter(self) -> Counter:
        return self.counter

    def remote_is_counter(self, thing: Any) -> bool:
        return thing is self.counter

    def remote_notes(self) -> Notes:
        return self.notes

    def remote_add(self, item: str) -> int:
        self.notes.items = [*self.notes.items, item]  # broadcast to every copy
        return len(self.notes.items)

    def remote_blob(self, size: int) -> bytes:
        return b"\xab" * size
