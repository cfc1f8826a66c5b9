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
import pprint
import re
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import ipywidgets as widgets

from ..aio.connection import CallFuture
from ..aio.reconnect import ReconnectingClient, ReconnectStatus
from ..aio.streams import RemoteIterator
from ..core.reference import RemoteReference
from ..errors import PBError
from ._loop import Pending, call_on_loop, loop_of, spawn
from ._progress_widget import ProgressLine, ending_of, progress_text

_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: The style of a block of lines in an HTML widget. ipywidgets sets its content's line
#: height to a widget row's (28 px, to line a label up with buttons), which spreads
#: several lines far apart: a ``<pre>`` takes code output's line height instead.
PRE_STYLE = "margin:0;line-height:var(--jp-code-line-height,1.3)"
_MAX_REPR = 2000
_MAX_ROWS = 200


async def describe(ref: RemoteReference) -> dict[str, Any]:
    """The peer's description of ``ref`` (asked once per reference; the broker keeps it)."""
    found = ref.description
    if found is None:
        found = await ref.describe()
    return found


def kind_of(ref: RemoteReference) -> str:
    """The type name the peer gave for ``ref``, or "remote object" before it was described."""
    found = ref.description
    return found["type"] if found else "remote object"


def in_kernel() -> bool:
    """Whether we run in a Jupyter kernel, where widgets can be shown."""
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


# ---------------------------------------------------------------- text forms


def peer_of(ref: RemoteReference) -> str:
    """The address of the peer that owns ``ref``'s object."""
    return ref.broker.peer_name


def reference_text(ref: RemoteReference) -> str:
    """A plain-text summary: what the reference points at, its state and its methods."""
    found = ref.description
    state = "connected" if ref.connected else "disconnected"
    lines = [f"<RemoteReference to {kind_of(ref)} at {peer_of(ref)} (#{ref.export_id}, {state})>"]
    for method in found["methods"] if found else ():
        doc = f"  # {method['doc']}" if method["doc"] else ""
        prefix = "async " if method["is_async"] else ""
        lines.append(f"    {prefix}{method['name']}{method['signature']}{doc}")
    return "\n".join(lines)


def future_text(future: asyncio.Future) -> str:
    """A one-line summary of a call's awaitable: pending, cancelled, failed or done."""
    what = getattr(future, "description", "") or "remote call"
    if not future.done():
        progress = getattr(future, "progress", None)
        return f"<pending {what}: {progress_text(progress)}>" if progress else f"<pending {what}>"
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


def _records(value: Any) -> tuple[list[str], list[list[Any]]] | None:
    """Columns and rows if ``value`` is a list of like records (dicts or copies), else None."""
    if not isinstance(value, (list, tuple)) or not value or len(value) > _MAX_ROWS:
        return None
    if all(isinstance(item, dict) for item in value):
        columns = list(value[0])
        if all(list(item) == columns for item in value) and all(isinstance(c, str) for c in columns):
            return columns, [[item[c] for c in columns] for item in value]
        return None
    kinds = {type(item) for item in value}
    if len(kinds) != 1 or not hasattr(value[0], "__dict__") or isinstance(value[0], RemoteReference):
        return None
    columns = [name for name in vars(value[0]) if not name.startswith("_")]
    if not columns or any([n for n in vars(item) if not n.startswith("_")] != columns for item in value):
        return None
    return columns, [[getattr(item, c) for c in columns] for item in value]


def _cell_text(value: Any) -> str:
    return value if isinstance(value, str) and len(value) <= _MAX_REPR else _short_repr(value)


def value_html(value: Any) -> str:
    """A call's plain result as HTML: like records as a table, anything else pretty-printed."""
    records = _records(value)
    if records is not None:
        columns, rows = records
        head = "".join(
            f"<th style='text-align:left;padding:0 12px 0 0'>{html.escape(c)}</th>" for c in columns
        )
        body = "".join(
            "<tr>"
            + "".join(f"<td style='padding:0 12px 0 0'>{html.escape(_cell_text(cell))}</td>" for cell in row)
            + "</tr>"
            for row in rows
        )
        kind = html.escape(type(value[0]).__name__)
        caption = f"<caption style='text-align:left'>{len(rows)} {kind} records</caption>"
        return f"<table class='pbnb-records'>{caption}<tr>{head}</tr>{body}</table>"
    text = (
        value
        if isinstance(value, str) and "\n" in value
        else pprint.pformat(value, width=88, sort_dicts=False)
    )
    if len(text) > _MAX_REPR:
        text = text[:_MAX_REPR] + "…"
    return f"<pre class='pbnb-value' style='{PRE_STYLE}'>{html.escape(text)}</pre>"


@runtime_checkable
class WidgetSource(Protocol):
    """A value that brings its own widget (``TraitCache`` does): ``pb_widget()`` makes it."""

    def pb_widget(self) -> widgets.Widget:
        """A new widget showing this value."""
        ...


def value_widget(value: Any) -> widgets.Widget:
    """A widget for a call's result: references and live caches get their own widget."""
    if isinstance(value, RemoteReference):
        return ReferenceWidget(value)
    if isinstance(value, RemoteIterator):
        from ._stream_widget import StreamWidget  # it builds on this module

        return StreamWidget(value)
    if isinstance(value, widgets.Widget):
        return value
    if isinstance(value, WidgetSource):
        return value.pb_widget()
    return widgets.HTML(value_html(value))


def error_widget(error: BaseException) -> widgets.HTML:
    """The remote type and message of a failure, with its remote traceback folded away."""
    text = f"<span class='pbnb-error' style='color:#b00020'>{html.escape(error_text(error))}</span>"
    remote_tb = getattr(error, "remote_traceback", None)
    if remote_tb:
        text += (
            "<details><summary>remote traceback</summary>"
            f"<pre style='{PRE_STYLE}'>{html.escape(remote_tb)}</pre></details>"
        )
    return widgets.HTML(text)


def outcome_widget(future: asyncio.Future) -> widgets.Widget:
    """The result, the error or the cancellation of a finished call."""
    if future.cancelled():
        return widgets.HTML("<span class='pbnb-error'>cancelled (the peer was told to stop)</span>")
    if future.exception() is not None:
        return error_widget(future.exception())  # type: ignore[arg-type]
    return value_widget(future.result())


_SPINNER = (
    "<style>@keyframes pbnb-spin{to{transform:rotate(360deg)}}</style>"
    "<span class='pbnb-spinner' style='display:inline-block;animation:pbnb-spin 1s linear infinite'>◐</span>"
)


class PendingCall(widgets.VBox):
    """A call in flight: a spinner, what was called, the time so far, and a button that cancels it.

    Cancelling tells the peer (the remote method's task is cancelled there).
    Once the remote method reports progress (``pb.progress``), a bar with the
    message, rate and time left shows under it.
    """

    def __init__(self, future: asyncio.Future, what: str):
        self.future = future
        self.what = what
        self.label = widgets.HTML()
        self.cancel = widgets.Button(description="cancel", icon="stop", tooltip=f"cancel {what} on the peer")
        self.cancel.add_class("pbnb-cancel")
        self.cancel.on_click(lambda _b: call_on_loop(future.get_loop(), future.cancel))
        loop = future.get_loop()
        self.progress = ProgressLine(loop)
        super().__init__([widgets.HBox([widgets.HTML(_SPINNER), self.label, self.cancel]), self.progress])
        self.add_class("pbnb-pending")
        self._started = loop.time()
        self._show(loop)
        call_on_loop(loop, self._tick, loop)
        if isinstance(future, CallFuture):  # a magic's Pending work reports no progress
            call_on_loop(loop, future.on_progress, self.progress.report)

    def settled(self) -> list[widgets.Widget]:
        """What stays on screen of this pending call once it ended: its progress, frozen (if any came)."""
        self.progress.end(ending_of(self.future))
        return [self.progress] if self.progress.latest is not None else []

    def _show(self, loop: asyncio.AbstractEventLoop) -> None:
        elapsed = loop.time() - self._started
        self.label.value = f"<span>pending: <code>{html.escape(self.what)}</code> · {elapsed:.1f} s</span>"

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.future.done():
            self.cancel.disabled = True
            return
        self._show(loop)
        loop.call_later(0.2, self._tick, loop)


def _call_text(name: str, text: str) -> str:
    return f"{name}({text.strip()})"


class FutureWidget(widgets.VBox):
    """A call's awaitable shown live: pending (with a cancel button), then its result or error."""

    def __init__(self, future: asyncio.Future, what: str = ""):
        what = what or getattr(future, "description", "") or "call"
        self.pending = PendingCall(future, what)
        super().__init__(children=[self.pending])
        self.add_class("pbnb-future")
        self.future = future
        # The done callback runs on the future's loop, however the widget was made.
        call_on_loop(future.get_loop(), future.add_done_callback, self._settled)

    def _settled(self, future: asyncio.Future) -> None:
        self.children = [*self.pending.settled(), outcome_widget(future)]


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


_RST_ROLE = re.compile(r":\w+:`([^`]*)`")
_RST_LITERAL = re.compile(r"``([^`]*)``")


def plain_docstring(text: str) -> str:
    """A docstring as text: reStructuredText roles and literals reduced to their words."""
    return _RST_LITERAL.sub(r"\1", _RST_ROLE.sub(r"\1", text))


class MethodForm(widgets.VBox):
    """One remote method: its signature and doc, an argument box, a call button and its output.

    Enter in the argument box calls too; while a call is pending the button is
    disabled and the output shows the call, its time so far and a cancel button.
    """

    def __init__(self, ref: RemoteReference, method: dict[str, Any]):
        self.ref = ref
        self.name: str = method["name"]
        signature = html.escape(f"{self.name}{method['signature']}")
        summary = plain_docstring(method["doc"])
        doc = f" <i>{html.escape(summary)}</i>" if summary else ""
        full = plain_docstring(method.get("docstring", ""))
        if full and full != summary:
            doc += (
                "<details><summary>docstring</summary>"
                f"<pre style='white-space:pre-wrap;{PRE_STYLE}'>{html.escape(full)}</pre></details>"
            )
        marker = "async " if method["is_async"] else ""
        self.arguments = widgets.Text(
            placeholder="arguments as Python literals, e.g. 'ada', 2, loud=True (Enter calls)",
            layout=widgets.Layout(width="60%"),
        )
        self.arguments.add_class("pbnb-args")
        self.arguments.on_msg(self._submitted)
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

    def _submitted(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if content.get("event") == "submit" and not self.button.disabled:  # Enter in the box
            self._clicked()

    def _clicked(self, _button: Any = None) -> None:
        # May run on a comm thread: read the text here, touch the reference on its loop.
        call_on_loop(loop_of(self.ref), self.call, self.arguments.value)

    def call(self, text: str) -> None:
        """Call the method with ``text`` as its arguments; show the outcome below (loop thread)."""
        self._calls += 1
        number = self._calls
        try:
            args, kwargs = parse_arguments(text)
            future = self.ref.callRemote(self.name, *args, **kwargs)
        except (ValueError, PBError) as exc:  # bad text, or a call refused before it was sent
            self.output.children = [error_widget(exc)]
            return
        self.button.disabled = True
        pending = PendingCall(future, _call_text(self.name, text))  # type: ignore[arg-type]
        self.output.children = [pending]

        def settled(done: asyncio.Future) -> None:
            if number == self._calls:  # only the latest call shows its outcome
                self.button.disabled = not self.ref.connected
                self.output.children = [*pending.settled(), outcome_widget(done)]

        future.add_done_callback(settled)  # type: ignore[attr-defined]


#: How to open a reference's connection again, for the references %pb_connect made.
reconnectors: weakref.WeakKeyDictionary[RemoteReference, Callable[[], Awaitable[RemoteReference]]] = (
    weakref.WeakKeyDictionary()
)


class ReferenceWidget(widgets.VBox):
    """A RemoteReference: what it points at, its live connection state, and its methods.

    Once disconnected, a reference that ``%pb_connect`` made offers a reconnect
    button: it opens the connection again and the widget (and every variable
    that held the old reference) moves to the new one.
    """

    def __init__(self, ref: RemoteReference):
        self.ref = ref
        self.header = widgets.HTML()
        self.status = widgets.HTML()
        self.status.add_class("pbnb-status")
        self.reconnect = widgets.Button(description="reconnect", icon="refresh", tooltip="connect again")
        self.reconnect.add_class("pbnb-reconnect")
        self.reconnect.layout.display = "none"
        self.reconnect.on_click(lambda _b: spawn(loop_of(self.ref), self._reconnect))
        self.methods = widgets.VBox()
        super().__init__(
            children=[widgets.HBox([self.header, self.status, self.reconnect]), self.methods],
            layout=widgets.Layout(border_left="3px solid #cfd8dc", padding="0 0 0 8px"),
        )
        self.add_class("pbnb-reference")
        self._follow(ref)

    def _follow(self, ref: RemoteReference) -> None:
        self.ref = ref
        self._show_header()
        self._show_status()
        if ref.connected:
            self.methods.children = [widgets.HTML("<i>asking the peer what it offers…</i>")]
            ref.notifyOnDisconnect(self._disconnected)
            spawn(loop_of(ref), self._describe)
        else:
            self._disconnected(ref)

    def _show_header(self) -> None:
        self.header.value = (
            f"<b>{html.escape(kind_of(self.ref))}</b> at {html.escape(peer_of(self.ref))} "
            f"<span style='color:#777'>(reference #{self.ref.export_id})</span>"
        )

    def _show_status(self, note: str = "") -> None:
        up = self.ref.connected
        color = "#1b7f3a" if up else "#b00020"
        state = note or ("connected" if up else "disconnected: calls fail")
        self.status.value = f"<span class='pbnb-state' style='color:{color}'>● {html.escape(state)}</span>"

    def _disconnected(self, _ref: RemoteReference) -> None:
        self._show_status()
        for form in self.methods.children:
            if isinstance(form, MethodForm):
                form.button.disabled = True
        if self.ref in reconnectors:
            self.reconnect.layout.display = None

    async def _reconnect(self) -> None:
        redo = reconnectors.get(self.ref)
        if redo is None:
            return
        self.reconnect.disabled = True
        self._show_status("reconnecting…")
        try:
            ref = await redo()
        except Exception as exc:
            self._show_status(f"disconnected; reconnecting failed: {error_text(exc)}")
            return
        finally:
            self.reconnect.disabled = False
        self.reconnect.layout.display = "none"
        self._follow(ref)

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


def reconnecting_widget(client: Any) -> widgets.VBox:
    """A ReconnectingClient shown live: its status, its last error, and a button to start over."""
    state = widgets.HTML()
    state.add_class("pbnb-reconnecting")
    again = widgets.Button(description="reconnect", icon="refresh", tooltip="start connecting again")
    again.add_class("pbnb-reconnect")
    loop = asyncio.get_running_loop()
    again.on_click(lambda _b: call_on_loop(loop, client.retry))
    colors = {ReconnectStatus.CONNECTED: "#1b7f3a", ReconnectStatus.CONNECTING: "#8a5a00"}

    def show(status: Any = None) -> None:
        status = client.status
        error = (
            f": {error_text(client.last_error)}"
            if client.last_error and status is not ReconnectStatus.CONNECTED
            else ""
        )
        color = colors.get(status, "#b00020")
        state.value = (
            f"<b>ReconnectingClient</b> {html.escape(client.host)}:{client.port} "
            f"<span style='color:{color}'>● {status.value}{html.escape(error)}</span> "
            f"<span style='color:#777'>({client.connections} connection(s) so far)</span>"
        )
        again.layout.display = None if status in (ReconnectStatus.FAILED, ReconnectStatus.CLOSED) else "none"

    client.watch(show)
    show()
    return widgets.VBox([widgets.HBox([state, again])])


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


def stream_bundle(iterator: RemoteIterator) -> dict[str, Any]:
    """Display data for a stream: a StreamWidget that reads it, in a kernel; its repr everywhere."""
    return widget_bundle(lambda: value_widget(iterator), repr(iterator))


def reconnecting_bundle(client: Any) -> dict[str, Any]:
    """Display data for a ReconnectingClient: its live status widget in a kernel, text everywhere."""
    return widget_bundle(lambda: reconnecting_widget(client), repr(client))


_FORMATTERS = {
    RemoteReference: reference_bundle,
    CallFuture: future_bundle,
    Pending: pending_bundle,
    RemoteIterator: stream_bundle,
    ReconnectingClient: reconnecting_bundle,
}


def register_formatters(shell: Any) -> None:
    """Show references, call futures, streams and pending magics as widgets (and useful text) in ``shell``."""
    formatter = shell.display_formatter.mimebundle_formatter
    for cls, bundle in _FORMATTERS.items():
        formatter.for_type(cls, bundle)


def unregister_formatters(shell: Any) -> None:
    """Undo ``register_formatters``."""
    formatter = shell.display_formatter.mimebundle_formatter
    for cls in _FORMATTERS:
        formatter.pop(cls, None)
