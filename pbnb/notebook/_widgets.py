"""Widgets for remote objects: a RemoteReference you can read and call, live call results.

Everything here is a composite of stock ipywidgets, so no JavaScript is needed.
Button clicks may arrive on a thread other than the loop's (comms over
subshells), and a broker is not thread-safe, so every click hops onto the
connection's loop before it touches a reference. Widget state may be set from
the loop's thread: the kernel sends comm messages from any thread.
"""

from __future__ import annotations

import ast
import asyncio
import html
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..aio.connection import CallFuture
from ..core.reference import RemoteReference
from ._loop import Pending, call_on_loop, loop_of, spawn

_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_MAX_REPR = 2000

# What each reference's peer said it offers: {"type": ..., "methods": [...]}.
_descriptions: weakref.WeakKeyDictionary[RemoteReference, dict[str, Any]] = weakref.WeakKeyDictionary()


async def describe(ref: RemoteReference) -> dict[str, Any]:
    """The peer's description of ``ref`` (asked once per reference, then remembered)."""
    found = _descriptions.get(ref)
    if found is None:
        found = await ref.describe()
        _descriptions[ref] = found
    return found


def kind_of(ref: RemoteReference) -> str:
    """The type name the peer gave for ``ref``, or "remote object" before it was described."""
    found = _descriptions.get(ref)
    return found["type"] if found else "remote object"


def in_kernel() -> bool:
    """Whether we run in a Jupyter kernel, where widgets can be shown."""
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


# ---------------------------------------------------------------- text forms


def peer_of(ref: RemoteReference) -> str:
    """The address of the peer that owns ``ref``'s object."""
    return ref._broker.peer_name


def reference_text(ref: RemoteReference) -> str:
    """A plain-text summary: what the reference points at, its state and its methods."""
    found = _descriptions.get(ref)
    state = "connected" if ref.connected else "disconnected"
    lines = [f"<RemoteReference to {kind_of(ref)} at {peer_of(ref)} (#{ref._id}, {state})>"]
    for method in found["methods"] if found else ():
        doc = f"  # {method['doc']}" if method["doc"] else ""
        prefix = "async " if method["is_async"] else ""
        lines.append(f"    {prefix}{method['name']}{method['signature']}{doc}")
    return "\n".join(lines)


def future_text(future: asyncio.Future) -> str:
    """A one-line summary of a call's awaitable: pending, cancelled, failed or done."""
    what = getattr(future, "description", "") or "remote call"
    if not future.done():
        return f"<pending {what}>"
    if future.cancelled():
        return f"<cancelled {what}>"
    if future.exception() is not None:
        return f"<failed {what}: {error_text(future.exception())}>"  # type: ignore[arg-type]
    return f"<done {what}: {_short_repr(future.result())}>"


def error_text(error: BaseException) -> str:
    """``remote.Type: message`` for a remote failure, ``Type: message`` for a local one."""
    kind = getattr(error, "remote_type", None) or f"{type(error).__module__}.{type(error).__qualname__}"
    message = getattr(error, "message", None)
    if message is None:
        message = str(error)
    return f"{kind}: {message}" if message else kind


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + "…"


# ----------------------------------------------------------- rendering values


def value_widget(value: Any) -> widgets.Widget:
    """A widget for a call's result: references and live caches get their own widget."""
    if isinstance(value, RemoteReference):
        return ReferenceWidget(value)
    if isinstance(value, widgets.Widget):
        return value
    make = getattr(value, "_pb_widget", None)
    if callable(make):
        return make()
    return widgets.HTML(f"<pre class='pbnb-value'>{html.escape(_short_repr(value))}</pre>")


def error_widget(error: BaseException) -> widgets.HTML:
    """The remote type and message of a failure, with its remote traceback folded away."""
    text = f"<span class='pbnb-error' style='color:#b00020'>{html.escape(error_text(error))}</span>"
    remote_tb = getattr(error, "remote_traceback", None)
    if remote_tb:
        text += f"<details><summary>remote traceback</summary><pre>{html.escape(remote_tb)}</pre></details>"
    return widgets.HTML(text)


def outcome_widget(future: asyncio.Future) -> widgets.Widget:
    """The result, the error or the cancellation of a finished call."""
    if future.cancelled():
        return widgets.HTML("<span class='pbnb-error'>cancelled</span>")
    if future.exception() is not None:
        return error_widget(future.exception())  # type: ignore[arg-type]
    return value_widget(future.result())


def _pending_widget(what: str) -> widgets.HTML:
    return widgets.HTML(f"<span class='pbnb-pending'>pending: {html.escape(what)}…</span>")


class FutureWidget(widgets.VBox):
    """A call's awaitable shown live: pending, then its result or error."""

    def __init__(self, future: asyncio.Future, what: str = ""):
        what = what or getattr(future, "description", "") or "call"
        super().__init__(children=[_pending_widget(what)])
        self.add_class("pbnb-future")
        self.future = future
        # The done callback runs on the future's loop, however the widget was made.
        call_on_loop(future.get_loop(), future.add_done_callback, self._settled)

    def _settled(self, future: asyncio.Future) -> None:
        self.children = [outcome_widget(future)]


# ----------------------------------------------------------------- references


def parse_arguments(text: str) -> tuple[list[Any], dict[str, Any]]:
    """Parse ``'ada', 3, loud=True`` into positional and keyword Python literals."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"not a list of arguments: {text!r} ({exc.msg})") from None
    assert isinstance(call, ast.Call)
    if any(isinstance(arg, ast.Starred) for arg in call.args) or any(kw.arg is None for kw in call.keywords):
        raise ValueError("use plain literals as arguments: * and ** are not allowed")
    try:
        args = [ast.literal_eval(arg) for arg in call.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except ValueError as exc:
        raise ValueError(f"arguments must be Python literals: {exc}") from None
    return args, kwargs  # type: ignore[return-value]


class MethodForm(widgets.VBox):
    """One remote method: its signature and doc, an argument box, a call button and its output."""

    def __init__(self, ref: RemoteReference, method: dict[str, Any]):
        self.ref = ref
        self.name: str = method["name"]
        signature = html.escape(f"{self.name}{method['signature']}")
        doc = f" <i>{html.escape(method['doc'])}</i>" if method["doc"] else ""
        marker = "async " if method["is_async"] else ""
        self.arguments = widgets.Text(
            placeholder="arguments as Python literals, e.g. 'ada', 2, loud=True",
            layout=widgets.Layout(width="60%"),
        )
        self.arguments.add_class("pbnb-args")
        self.button = widgets.Button(description="call", tooltip=f"call {self.name} on the peer")
        self.button.add_class("pbnb-call")
        self.output = widgets.VBox()
        self.output.add_class("pbnb-output")
        self._calls = 0
        super().__init__(
            children=[
                widgets.HTML(f"<code>{marker}{signature}</code>{doc}"),
                widgets.HBox([self.arguments, self.button]),
                self.output,
            ]
        )
        self.add_class("pbnb-method")
        self.add_class(f"pbnb-method-{self.name}")
        self.button.on_click(self._clicked)

    def _clicked(self, _button: Any = None) -> None:
        # May run on a comm thread: read the text here, touch the reference on its loop.
        call_on_loop(loop_of(self.ref), self.call, self.arguments.value)

    def call(self, text: str) -> None:
        """Call the method with ``text`` as its arguments; show the outcome below (loop thread)."""
        self._calls += 1
        number = self._calls
        try:
            args, kwargs = parse_arguments(text)
        except ValueError as exc:
            self.output.children = [error_widget(exc)]
            return
        future = self.ref.callRemote(self.name, *args, **kwargs)
        self.output.children = [_pending_widget(f"{self.name}()")]

        def settled(done: asyncio.Future) -> None:
            if number == self._calls:  # only the latest click shows its outcome
                self.output.children = [outcome_widget(done)]

        future.add_done_callback(settled)


class ReferenceWidget(widgets.VBox):
    """A RemoteReference: what it points at, its live connection state, and its methods."""

    def __init__(self, ref: RemoteReference):
        self.ref = ref
        self.header = widgets.HTML()
        self.status = widgets.HTML()
        self.status.add_class("pbnb-status")
        self.methods = widgets.VBox([widgets.HTML("<i>asking the peer what it offers…</i>")])
        super().__init__(
            children=[widgets.HBox([self.header, self.status]), self.methods],
            layout=widgets.Layout(border_left="3px solid #cfd8dc", padding="0 0 0 8px"),
        )
        self.add_class("pbnb-reference")
        self._show_header()
        self._show_status()
        if ref.connected:
            ref.notifyOnDisconnect(self._disconnected)
            spawn(loop_of(ref), self._describe)
        else:
            self.methods.children = []

    def _show_header(self) -> None:
        self.header.value = (
            f"<b>{html.escape(kind_of(self.ref))}</b> at {html.escape(peer_of(self.ref))} "
            f"<span style='color:#777'>(reference #{self.ref._id})</span>"
        )

    def _show_status(self) -> None:
        up = self.ref.connected
        color = "#1b7f3a" if up else "#b00020"
        self.status.value = (
            f"<span class='pbnb-state' style='color:{color}'>● {'connected' if up else 'disconnected'}</span>"
        )

    def _disconnected(self, _ref: RemoteReference) -> None:
        self._show_status()
        for form in self.methods.children:
            if isinstance(form, MethodForm):
                form.button.disabled = True

    async def _describe(self) -> None:
        try:
            found = await describe(self.ref)
        except Exception as exc:
            self.methods.children = [error_widget(exc)]
            return
        self._show_header()
        forms = [MethodForm(self.ref, method) for method in found["methods"]]
        self.methods.children = forms or [widgets.HTML("<i>no remote methods</i>")]

    def close(self) -> None:
        self.ref.dontNotifyOnDisconnect(self._disconnected)
        super().close()


# ------------------------------------------------------- IPython registration


def widget_bundle(make_widget: Callable[[], widgets.Widget], text: str) -> dict[str, Any]:
    """Display data: ``text`` everywhere, plus the widget ``make_widget()`` builds in a kernel.

    The widget is built only in a kernel, where a front end can show it.
    """
    data: dict[str, Any] = {"text/plain": text}
    if in_kernel():
        data[_WIDGET_MIME] = make_widget()._repr_mimebundle_()[_WIDGET_MIME]
    return data


def reference_bundle(ref: RemoteReference) -> dict[str, Any]:
    """Display data for a RemoteReference: a ReferenceWidget in a kernel, text everywhere."""
    return widget_bundle(lambda: ReferenceWidget(ref), reference_text(ref))


def future_bundle(future: CallFuture) -> dict[str, Any]:
    """Display data for an un-awaited call: a live FutureWidget in a kernel, text everywhere."""
    return widget_bundle(lambda: FutureWidget(future), future_text(future))


def pending_bundle(pending: Pending) -> dict[str, Any]:
    """Display data for a magic's un-awaited work: live like a call, text everywhere."""
    return widget_bundle(lambda: FutureWidget(pending.task, pending.what), repr(pending))


_FORMATTERS = {RemoteReference: reference_bundle, CallFuture: future_bundle, Pending: pending_bundle}


def register_formatters(shell: Any) -> None:
    """Show references, call futures and pending magics as widgets (and useful text) in ``shell``."""
    formatter = shell.display_formatter.mimebundle_formatter
    for cls, bundle in _FORMATTERS.items():
        formatter.for_type(cls, bundle)


def unregister_formatters(shell: Any) -> None:
    """Undo ``register_formatters``."""
    formatter = shell.display_formatter.mimebundle_formatter
    for cls in _FORMATTERS:
        formatter.pop(cls, None)
