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
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import ipywidgets as widgets
import traitlets

from ..core.flavors import RemoteCache
from ..core.observing import WRITER_KEY
from ..errors import DeadReferenceError, PBConnectionLost, PBError, ReadOnlyField
from ._link import link
from ._loop import call_on_loop, loop_of
from ._numbers import format_number, parse_number
from ._widgets import error_text, widget_bundle


class TraitCache(traitlets.HasTraits, RemoteCache):
    """A RemoteCache whose state fields are traits; ``display(cache)`` shows them live.

    Declare the fields as traits (``value = Int().tag(to_owner=True)``) and
    register the class for the owner's type with ``setUnjellyableForClass``.
    Tag a trait with ``widget=SomeWidgetClass`` to choose its widget.

    ``pb_state`` says whether the owner still keeps this copy up to date
    (``"live"``) or its connection is gone (``"disconnected"``); ``pb_problem``
    says why the last local write did not stick ("" when it did).
    """

    pb_state = traitlets.Enum(("live", "disconnected"), default_value="live", read_only=True)
    pb_problem = traitlets.Unicode("", read_only=True)

    def setup_instance(self, /, *args: Any, **kwargs: Any) -> None:
        # Runs in __new__, so also for the copy the broker makes without __init__.
        self._pb_writer: Any = None
        self._pb_incoming: set[str] = set()
        self._pb_confirmed: dict[str, Any] = {}  # the owner's value of each field, as far as we know
        self._pb_writes: dict[str, int] = {}  # how many local writes of each field were sent
        self._pb_heard: dict[str, int] = {}  # the write count when the owner last sent each field
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

    def connectionLost(self) -> None:
        """The owner is out of reach: say so, and refuse local writes from now on."""
        self.set_trait("pb_state", "disconnected")

    @property
    def connected(self) -> bool:
        """Whether the owner still keeps this copy up to date."""
        return self.pb_state == "live"

    def _pb_apply(self, fields: dict[str, Any]) -> None:
        for name in fields:
            if not isinstance(name, str) or not name.isidentifier() or name.startswith(("_", "pb_")):
                raise AttributeError(f"{type(self).__qualname__} refuses a remote change to {name!r}")
        incoming = set(fields) - self._pb_incoming
        self._pb_incoming |= incoming
        try:
            # Notifications fire as the block ends, still inside the guard.
            with self.hold_trait_notifications():
                for name, value in fields.items():
                    setattr(self, name, value)
                    self._pb_confirmed[name] = value
                    self._pb_heard[name] = self._pb_writes.get(name, 0)
        finally:
            self._pb_incoming -= incoming

    def _pb_say(self, problem: str) -> None:
        self.set_trait("pb_problem", problem)

    # ------------------------------------------------------ local -> owner

    def _pb_local_change(self, change: Any) -> None:
        name, value = change["name"], change["new"]
        if name in self._pb_incoming:
            return  # the peer's own change: never echo it
        writer = self._pb_writer
        if writer is None:
            self._pb_restore(name)
            raise ReadOnlyField(
                f"{type(self).__qualname__}.{name} = {value!r} cannot be sent: its owner takes no "
                "writes (make the owner a WritableCacheable); the copy keeps the owner's value"
            )
        if not self.connected or not writer.connected:
            kept = self._pb_restore(name)
            problem = (
                f"{type(self).__qualname__}.{name} = {value!r} was not sent: this copy is "
                f"disconnected from its owner (it keeps {kept!r})"
            )
            self._pb_say(problem)
            raise DeadReferenceError(problem)
        number = self._pb_writes[name] = self._pb_writes.get(name, 0) + 1
        self._pb_say("")
        # May run on a comm thread (a slider moved): the broker lives on its loop.
        call_on_loop(loop_of(writer), self._pb_send, name, value, number)

    def _pb_send(self, name: str, value: Any, number: int) -> None:
        try:
            future = self._pb_writer.callRemote("set", name, value)
        except PBError as exc:  # gone, or a value that cannot be sent: raised before sending
            self._pb_refused(name, value, number, exc)
            return

        def settled(done: asyncio.Future) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                self._pb_refused(name, value, number, error)
            elif self._pb_heard.get(name, -1) < number:  # nothing newer came from the owner
                self._pb_confirmed[name] = value

        future.add_done_callback(settled)

    def _pb_refused(self, name: str, value: Any, number: int, error: BaseException) -> None:
        lost = isinstance(error, (DeadReferenceError, PBConnectionLost))
        where = "could not send" if lost else "the owner refused"
        problem = f"{where} {type(self).__qualname__}.{name} = {value!r}: {error_text(error)}"
        if number == self._pb_writes.get(name):  # a later write decides the value otherwise
            problem += f"; back to the owner's value {self._pb_restore(name)!r}"
        self._pb_say(problem)
        # A write made in a cell runs this in the cell's context: the message lands under it.
        print(problem, file=sys.stderr)

    def _pb_restore(self, name: str) -> Any:
        """Show the owner's value of ``name`` again (without sending it); return it."""
        if name in self._pb_confirmed:
            self._pb_apply({name: self._pb_confirmed[name]})
        return getattr(self, name)

    # ------------------------------------------------------------- display

    def _pb_fields(self) -> list[str]:
        return [name for name in self.trait_names() if not name.startswith(("_", "pb_"))]

    def pb_widget(self) -> widgets.VBox:
        """A panel of the fields (linked both ways for ``to_owner`` traits), its state and problems."""
        title = widgets.HTML()
        title.add_class("pbnb-cache-state")
        problem = widgets.HTML()
        problem.add_class("pbnb-cache-problem")
        name = html.escape(type(self).__qualname__)

        def show_state(_change: Any = None) -> None:
            if self.connected:
                title.value = f"<b>{name}</b> <span style='color:#1b7f3a'>● live copy</span>"
            else:
                title.value = (
                    f"<b>{name}</b> <span style='color:#b00020'>● disconnected: "
                    "these values are the last the owner sent, and writes fail</span>"
                )

        widgets.dlink((self, "pb_problem"), (problem, "value"), _problem_html)
        self.observe(show_state, names="pb_state")
        show_state()
        box = widgets.VBox([title, *(self._pb_field_widget(name) for name in self._pb_fields()), problem])
        box.add_class("pbnb-cache")
        return box

    def _pb_field_widget(self, name: str) -> widgets.Widget:
        trait = self.traits()[name]
        editable = bool(trait.metadata.get("to_owner"))
        widget, shown, typed = _editor_for(trait)
        try:
            if widget is None:
                raise traitlets.TraitError("no editor")
            widget.description = name
            if editable:
                link((self, name), (widget, "value"), (shown, typed) if shown else None)
            else:
                widgets.dlink((self, name), (widget, "value"), shown)
                widget.disabled = True
        except (traitlets.TraitError, TypeError):  # the value does not fit an editor (None, say): its repr
            widget = widgets.HTML()
            widgets.dlink(
                (self, name), (widget, "value"), lambda v: f"{name}: <code>{html.escape(repr(v))}</code>"
            )
        widget.add_class(f"pbnb-field-{name}")
        return widget

    def _pb_text(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._pb_fields())
        state = "" if self.connected else " (disconnected)"
        return f"<{type(self).__qualname__} {fields}{state}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return widget_bundle(self.pb_widget, self._pb_text())

    def __repr__(self) -> str:
        return self._pb_text()


def _problem_html(problem: str) -> str:
    return f"<span style='color:#b00020'>{html.escape(problem)}</span>" if problem else ""


_EDITORS: list[tuple[type, Any]] = [
    (traitlets.Bool, widgets.Checkbox),
    (traitlets.Unicode, widgets.Text),
]
# Numbers go in a text box, formatted for reading (a number input groups no digits,
# and rounds integers beyond 2**53 in the browser); what is typed is parsed back.
_NUMBERS: list[tuple[type, type[int] | type[float]]] = [(traitlets.Int, int), (traitlets.Float, float)]

_Editor = tuple[widgets.Widget | None, Callable[[Any], Any] | None, Callable[[Any], Any] | None]


def _editor_for(trait: traitlets.TraitType) -> _Editor:
    """A widget for ``trait``, and how its value shows on the widget and reads back (None: as is)."""
    factory = trait.metadata.get("widget")
    if factory is not None:
        return factory(), None, None
    if isinstance(trait, traitlets.Enum):
        return widgets.Dropdown(options=list(trait.values or ())), None, None
    for kind, number in _NUMBERS:
        if isinstance(trait, kind):
            return widgets.Text(continuous_update=False), format_number, partial(parse_number, kind=number)
    for kind, make in _EDITORS:
        if isinstance(trait, kind):
            return make(), None, None
    return None, None, None
