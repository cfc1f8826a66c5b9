"""RemoteReference and call-future widgets over real loopback connections, without a browser."""

from __future__ import annotations

import asyncio
import threading

import ipywidgets as widgets
import pytest
from core_net import connected
from notebook_fixtures.counter_fixture import Counter, Demo
from notebook_fixtures.waiting import until

import pbnb as pb
from pbnb.notebook import FutureWidget, ReferenceWidget
from pbnb.notebook._log import LogPanel
from pbnb.notebook._widgets import PRE_STYLE, MethodForm, error_widget, parse_arguments, value_html


@pytest.fixture
async def root():
    async with connected(Demo(Counter())) as session:
        yield session.root


def html_of(widget: widgets.Widget) -> str:
    """All the HTML text inside a widget tree."""
    own = widget.value if isinstance(widget, widgets.HTML) else ""
    return own + "".join(html_of(child) for child in getattr(widget, "children", ()))


async def described(ref: pb.RemoteReference) -> ReferenceWidget:
    widget = ReferenceWidget(ref)
    await until(widget.methods, "children", lambda c: bool(c) and isinstance(c[0], MethodForm))
    return widget


def form(widget: ReferenceWidget, name: str) -> MethodForm:
    [found] = [f for f in widget.methods.children if f.name == name]
    return found


async def outcome(method: MethodForm) -> str:
    await until(method.output, "children", lambda c: bool(c) and "pending" not in html_of(c[0]))
    return html_of(method.output)


def test_arguments_are_python_literals():
    assert parse_arguments("") == ([], {})
    assert parse_arguments("'ada', 2, [1, {'x': (3,)}], loud=True") == (
        ["ada", 2, [1, {"x": (3,)}]],
        {"loud": True},
    )
    with pytest.raises(ValueError, match="Python literals"):
        parse_arguments("os.system('x')")
    with pytest.raises(ValueError, match="not a list of arguments"):
        parse_arguments("'ada',,")
    with pytest.raises(ValueError, match=r"\* and \*\* are not allowed"):
        parse_arguments("*args")


async def test_the_widget_shows_what_the_reference_points_at_and_its_methods(root):
    widget = await described(root)
    assert "<b>Demo</b> at 127.0.0.1:" in widget.header.value
    assert "connected" in widget.status.value
    names = [f.name for f in widget.methods.children]
    assert names == ["boom", "child", "counter", "crunch", "hello", "numbers", "records", "ticks", "wait"]
    hello = html_of(form(widget, "hello"))
    assert "<code>hello(name: " in hello and "punctuation: " in hello
    assert "<i>Greet someone.</i>" in hello


async def test_calling_a_method_shows_its_result_or_its_error(root):
    widget = await described(root)
    hello = form(widget, "hello")
    hello.call("'ada', punctuation='?'")
    assert "hello ada?" in await outcome(hello)
    boom = form(widget, "boom")
    boom.call("")
    assert "pbnb.errors.Error: kaboom" in await outcome(boom)
    hello.call("os.system('rm')")
    assert "arguments must be Python literals" in html_of(hello.output)
    hello.call("'too', 'many', 'args'")
    assert "TypeError" in await outcome(hello)


async def test_a_result_that_is_a_reference_renders_as_its_own_widget(root):
    widget = await described(root)
    child = form(widget, "child")
    child.call("")
    await until(child.output, "children", lambda c: bool(c) and isinstance(c[0], ReferenceWidget))
    inner = child.output.children[0]
    await until(inner.methods, "children", lambda c: bool(c) and isinstance(c[0], MethodForm))
    assert "<b>Child</b>" in inner.header.value
    assert [f.name for f in inner.methods.children] == ["name"]


async def test_a_click_on_another_thread_hops_onto_the_loop(root):
    widget = await described(root)
    hello = form(widget, "hello")
    hello.arguments.value = "'thread'"
    clicker = threading.Thread(target=hello.button.click)
    clicker.start()
    clicker.join()
    assert "hello thread!" in await outcome(hello)


async def test_the_status_turns_to_disconnected_when_the_peer_goes_away():
    async with connected(Demo(Counter())) as session:
        widget = await described(session.root)
        await session.server.close()
        await until(widget.status, "value", lambda v: "disconnected" in v)
        assert all(f.button.disabled for f in widget.methods.children)


async def test_an_unawaited_call_renders_live(root):
    future = root.callRemote("hello", "later")
    widget = FutureWidget(future)
    assert "pending: <code>hello() on" in html_of(widget)
    assert await future == "hello later!"
    await until(widget, "children", lambda c: "pending" not in html_of(c[0]))
    assert "hello later!" in html_of(widget)
    failing = root.callRemote("boom")
    widget = FutureWidget(failing)
    with pytest.raises(pb.RemoteError):
        await failing
    await until(widget, "children", lambda c: "kaboom" in html_of(c[0]))


async def test_a_pending_call_shows_its_time_disables_the_button_and_cancels_on_the_peer():
    demo = Demo(Counter())
    async with connected(demo) as session:
        widget = await described(session.root)
        wait = form(widget, "wait")
        wait.call("30")
        [pending] = wait.output.children
        assert wait.button.disabled and "pending: <code>wait(30)</code> · " in pending.label.value
        first = pending.label.value
        await until(pending.label, "value", lambda v: v != first)  # the time so far goes up
        pending.cancel.click()
        await asyncio.wait_for(demo.cancelled.wait(), 10)  # the peer's task was cancelled
        assert "cancelled (the peer was told to stop)" in await outcome(wait)
        assert not wait.button.disabled


async def test_enter_in_the_argument_box_calls(root):
    widget = await described(root)
    hello = form(widget, "hello")
    hello.arguments.value = "'enter'"
    submit = {"content": {"data": {"method": "custom", "content": {"event": "submit"}}}, "buffers": []}
    hello.arguments._handle_msg(submit)  # what the browser sends on Enter
    assert "hello enter!" in await outcome(hello)


async def test_results_render_richly_and_docstrings_as_text(root):
    widget = await described(root)
    records = form(widget, "records")
    records.call("")
    shown = await outcome(records)
    assert (
        "<table class='pbnb-records'>" in shown
        and "<th" in shown
        and "<td style='padding:0 12px 0 0'>grace</td>" in shown
    )
    nested = form(widget, "hello")
    assert "<details><summary>docstring</summary>" not in html_of(nested)  # one line: nothing more to show
    wait = html_of(form(widget, "wait"))
    assert (
        "<details><summary>docstring</summary>" in wait and "sets cancelled on" in wait and "``" not in wait
    )


def test_blocks_of_lines_are_spaced_as_code_output_not_as_widget_rows():
    # ipywidgets spaces an HTML widget's lines a widget row apart (28 px): every <pre> sets
    # its own line height (tests/test_browser_voila.py measures it in chromium).
    log = LogPanel()
    log.lines.append((0, "first\nsecond"))
    blocks = [
        value_html("a result\nof lines"),
        value_html({"rows": [f"row {n}" * 4 for n in range(20)]}),  # pretty-printed over lines
        error_widget(pb.RemoteError("x.Broken", "no", "Traceback\n  line\n")).value,
        log.html(),
    ]
    for block in blocks:
        assert block.count("<pre") == 1 and PRE_STYLE in block and "line-height" in PRE_STYLE


async def test_a_reconnecting_client_shows_its_state_live_and_starts_over_on_click():
    from pbnb.notebook._widgets import reconnecting_widget

    server = await pb.serve(Demo(Counter()))
    port = server.port
    client = pb.ReconnectingClient("127.0.0.1", port, max_attempts=1, initial_delay=0.01)
    box = reconnecting_widget(client)
    [row] = box.children
    state, again = row.children
    try:
        await client.root()
        await until(state, "value", lambda v: "● connected" in v)
        assert again.layout.display == "none"
        await server.close()
        await until(state, "value", lambda v: "● failed" in v)  # one attempt allowed, and refused
        assert again.layout.display is None and "refused" in state.value
        server = await pb.serve(Demo(Counter()), port=port)
        again.click()
        await until(state, "value", lambda v: "● connected" in v and "(2 connection(s)" in v)
    finally:
        await client.close()
        await server.close()
