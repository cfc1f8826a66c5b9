"""RemoteCache meets traitlets: a live copy whose state fields are traits.

The owner (an ``ObservedCacheable``) pushes changes as ``observe_set(name,
value)`` and ``observe_update(fields)``; a ``TraitCache`` applies each one inside
``hold_trait_notifications()``, so observers, ``widgets.link`` and
``interactive`` see a consistent state and update with no cell running.

A trait tagged ``to_owner=True`` also travels the other way: a local change
(a linked slider, ``cache.value = 3`` in a cell) is sent to the owner's field
writer (see ``WritableCacheable``). A change that came from the peer is never
sent back: while a peer's change is applied its names are marked incoming,
and the sender ignores them.
"""

from __future__ import annotations

import asyncio
import html
import logging
from typing import Any

import ipywidgets as widgets
import traitlets

from ..core.flavors import RemoteCache
from ..errors import DeadReferenceError
from ._loop import call_on_loop, loop_of
from ._widgets import error_text, widget_bundle
from ._writable import WRITER_KEY

log = logging.getLogger("pbnb")


class TraitCache(traitlets.HasTraits, RemoteCache):
    """A RemoteCache whose state fields are traits; ``display(cache)`` shows them live.

    Declare the fields as traits (``value = Int().tag(to_owner=True)``) and
    register the class for the owner's type with ``setUnjellyableForClass``.
    Tag a trait with ``widget=SomeWidgetClass`` to choose its widget.
    """

    def setup_instance(self, /, *args: Any, **kwargs: Any) -> None:
        # Runs in __new__, so also for the copy the broker makes without __init__.
        self._pb_writer: Any = None
        self._pb_incoming: set[str] = set()
        super().setup_instance(*args, **kwargs)

    def setCopyableState(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"{type(self).__qualname__} needs a dict state, got {type(state).__name__}")
        state = dict(state)
        self._pb_writer = state.pop(WRITER_KEY, None)
        outgoing = list(self.traits(to_owner=True))
        if outgoing:
            self.observe(self._pb_local_change, names=outgoing)
        self._pb_apply(state)

    def observe_set(self, name: str, value: Any) -> None:
        """The owner assigned one field."""
        self._pb_apply({name: value})

    def observe_update(self, fields: dict[str, Any]) -> None:
        """The owner assigned several fields at once."""
        self._pb_apply(fields)

    def _pb_apply(self, fields: dict[str, Any]) -> None:
        for name in fields:
            if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
                raise AttributeError(f"{type(self).__qualname__} refuses a remote change to {name!r}")
        incoming = set(fields) - self._pb_incoming
        self._pb_incoming |= incoming
        try:
            # Notifications fire as the block ends, still inside the guard.
            with self.hold_trait_notifications():
                for name, value in fields.items():
                    setattr(self, name, value)
        finally:
            self._pb_incoming -= incoming

    # ------------------------------------------------------ local -> owner

    def _pb_local_change(self, change: Any) -> None:
        if change["name"] in self._pb_incoming:
            return  # the peer's own change: never echo it
        writer = self._pb_writer
        if writer is None:
            raise RuntimeError(
                f"{type(self).__qualname__}.{change['name']} changed here, but its owner takes no "
                "writes: make the owner a pbnb.notebook.WritableCacheable"
            )
        # May run on a comm thread (a slider moved): the broker lives on its loop.
        call_on_loop(loop_of(writer), self._pb_send, change["name"], change["new"])

    def _pb_send(self, name: str, value: Any) -> None:
        try:
            future = self._pb_writer.callRemote("set", name, value)
        except DeadReferenceError:
            log.warning("%s.%s not sent: the owner is gone", type(self).__qualname__, name)
            return

        def report(done: asyncio.Future) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.warning(
                    "the owner refused %s.%s = %r: %s",
                    type(self).__qualname__,
                    name,
                    value,
                    error_text(done.exception()),  # type: ignore[arg-type]
                )

        future.add_done_callback(report)

    # ------------------------------------------------------------- display

    def _pb_fields(self) -> list[str]:
        return [name for name in self.trait_names() if not name.startswith("_")]

    def _pb_widget(self) -> widgets.VBox:
        """A widget of the traits, linked both ways for ``to_owner`` traits, one way otherwise."""
        title = widgets.HTML(f"<b>{html.escape(type(self).__qualname__)}</b> <i>(live copy)</i>")
        box = widgets.VBox([title, *(self._pb_field_widget(name) for name in self._pb_fields())])
        box.add_class("pbnb-cache")
        return box

    def _pb_field_widget(self, name: str) -> widgets.Widget:
        trait = self.traits()[name]
        editable = bool(trait.metadata.get("to_owner"))
        widget = _editor_for(trait)
        try:
            if widget is None:
                raise traitlets.TraitError("no editor")
            widget.description = name
            if editable:
                widgets.link((self, name), (widget, "value"))
            else:
                widgets.dlink((self, name), (widget, "value"))
                widget.disabled = True
        except traitlets.TraitError:  # the value does not fit an editor (None, say): show its repr
            widget = widgets.HTML()
            widgets.dlink(
                (self, name), (widget, "value"), lambda v: f"{name}: <code>{html.escape(repr(v))}</code>"
            )
        widget.add_class(f"pbnb-field-{name}")
        return widget

    def _pb_text(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._pb_fields())
        return f"<{type(self).__qualname__} {fields}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return widget_bundle(self._pb_widget, self._pb_text())

    def __repr__(self) -> str:
        return self._pb_text()


_EDITORS: list[tuple[type, Any]] = [
    (traitlets.Bool, widgets.Checkbox),
    (traitlets.Int, widgets.IntText),
    (traitlets.Float, widgets.FloatText),
    (traitlets.Unicode, widgets.Text),
]


def _editor_for(trait: traitlets.TraitType) -> widgets.Widget | None:
    factory = trait.metadata.get("widget")
    if factory is not None:
        return factory()
    if isinstance(trait, traitlets.Enum):
        return widgets.Dropdown(options=list(trait.values or ()))
    for kind, make in _EDITORS:
        if isinstance(trait, kind):
            return make()
    return None
