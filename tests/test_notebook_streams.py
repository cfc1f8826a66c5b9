"""Stream widgets over real loopback connections, without a browser: a RemoteIterator read live."""

from __future__ import annotations

import asyncio

import pytest
from core_net import connected
from notebook_fixtures.counter_fixture import Counter, Demo
from notebook_fixtures.waiting import until
from test_notebook_widgets import html_of

import pbnb as pb
from pbnb.notebook import FutureWidget, StreamWidget
from pbnb.notebook._stream_widget import rate_text
from pbnb.notebook._widgets import stream_bundle


def said_queue() -> tuple[asyncio.Queue, Demo]:
    heard: asyncio.Queue = asyncio.Queue()
    return heard, Demo(Counter(), said=heard.put_nowait)


async def test_a_stream_counts_its_items_shows_the_latest_and_ends_done():
    async with connected(Demo(Counter())) as session:
        widget = StreamWidget(await session.root.callRemote("numbers", 1200), latest=3)
        assert "streaming <code>numbers()</code>" in widget.state.value and not widget.stop.disabled
        await until(widget, "outcome", lambda o: o != "streaming")
        assert widget.outcome == "done" and widget.iterator.received == 1200
        assert "done: the stream ended" in widget.state.value
        assert "<b>1,200</b> items · " in widget.counts.value and "items/s" in widget.counts.value
        assert list(widget.latest) == [1197, 1198, 1199]
        assert "#1,198  1197\n#1,199  1198\n#1,200  1199" in widget.items.value
        assert widget.stop.disabled and widget.spinner.layout.display == "none"
        # The generator's own progress reports, frozen once it ended:
        assert widget.progress.ending == "finished" and widget.progress.bar.bar_style == "success"
        assert "finished</b>; last report: " in widget.progress.text.value
        assert " of 1,200 · counting" in widget.progress.text.value


async def test_stop_closes_the_stream_and_the_generator_finally_runs_on_the_peer():
    heard, demo = said_queue()
    async with connected(demo) as session:
        widget = StreamWidget(await session.root.callRemote("ticks", 0.01))
        await until(widget.counts, "value", lambda v: "<b>5</b>" in v or "<b>1" in v, timeout=30)
        assert "streaming" in widget.state.value
        widget.stop.click()
        closed = await asyncio.wait_for(heard.get(), 30)
        assert closed.startswith("ticks closed after ")
        await until(widget, "outcome", lambda o: o == "stopped")
        assert "stopped: the stream was closed" in widget.state.value and widget.stop.disabled
        assert (
            widget.progress.latest is None and widget.progress.layout.display == "none"
        )  # ticks reports none
        read = widget.iterator.received
        await session.root.callRemote("hello", "sync")
        assert widget.iterator.received == read  # nothing more is read after the stop


async def test_a_stream_that_fails_shows_its_items_then_the_error():
    async with connected(Demo(Counter())) as session:
        widget = StreamWidget(await session.root.callRemote("numbers", 4, fail=True))
        await until(widget, "outcome", lambda o: o != "streaming")
        assert widget.outcome == "failed" and widget.iterator.received == 4
        assert "failed" in widget.state.value and "#4  3" in widget.items.value
        assert "the source broke" in html_of(widget.error)
        assert (
            widget.progress.ending == "failed" and "failed</b>; last report: " in widget.progress.text.value
        )


async def test_a_stream_whose_connection_drops_says_connection_lost():
    async with connected(Demo(Counter())) as session:
        widget = StreamWidget(await session.root.callRemote("ticks", 0.01))
        await until(widget.counts, "value", lambda v: "<b>0</b>" not in v, timeout=30)
        await session.server.close()
        await until(widget, "outcome", lambda o: o != "streaming", timeout=30)
        assert widget.outcome == "connection lost"
        assert "connection lost" in widget.state.value and widget.stop.disabled
        assert "PBConnectionLost" in html_of(widget.error)


async def test_an_unawaited_streaming_call_turns_into_its_stream_widget():
    async with connected(Demo(Counter())) as session:
        widget = FutureWidget(session.root.callRemote("numbers", 3))
        await until(widget, "children", lambda c: isinstance(c[0], StreamWidget))
        [stream] = widget.children
        await until(stream, "outcome", lambda o: o == "done")
        assert list(stream.latest) == [0, 1, 2]


async def test_closing_the_widget_stops_a_running_stream():
    heard, demo = said_queue()
    async with connected(demo) as session:
        widget = StreamWidget(await session.root.callRemote("ticks", 0.01))
        widget.close()
        assert (await asyncio.wait_for(heard.get(), 30)).startswith("ticks closed after ")


@pytest.mark.parametrize(
    ("items", "seconds", "text"),
    [
        (0, 0.0, "… items/s"),
        (3, 2.0, "1.5 items/s"),
        (123456, 2.0, "61,728 items/s"),
        (1, 4.0, "0.25 items/s"),
    ],
)
def test_rate_text(items, seconds, text):
    assert rate_text(items, seconds) == text


async def test_outside_a_kernel_a_stream_displays_as_text_and_is_left_unread():
    async with connected(Demo(Counter())) as session:
        iterator = await session.root.callRemote("numbers", 3)
        assert isinstance(iterator, pb.RemoteIterator)
        assert stream_bundle(iterator) == {"text/plain": repr(iterator)}
        assert [item async for item in iterator] == [0, 1, 2]
