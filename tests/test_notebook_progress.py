"""Progress of a pending call in its widget, over real loopback connections, without a browser."""

from __future__ import annotations

import asyncio
import re

import pytest
from core_net import connected
from notebook_fixtures.counter_fixture import Counter, Demo
from notebook_fixtures.waiting import until
from test_notebook_widgets import described, form, html_of

import pbnb as pb
from pbnb.notebook import FutureWidget
from pbnb.notebook._numbers import format_duration, format_rate
from pbnb.notebook._progress_widget import ProgressLine, progress_text
from pbnb.notebook._widgets import future_text


def line_of(widget: FutureWidget) -> ProgressLine:
    return widget.pending.progress


async def test_an_unawaited_call_shows_its_progress_live_then_how_it_finished():
    demo = Demo(Counter())
    async with connected(demo) as session:
        job = session.root.callRemote("crunch", 4)
        widget = FutureWidget(job)
        line = line_of(widget)
        assert line.layout.display == "none"  # no report yet: no bar
        await until(line.text, "value", lambda v: "step 1 of 4" in v)
        assert line.layout.display is None and line.bar.value == 0.0
        assert "0% · 0 of 4 · step 1 of 4" in line.text.value
        assert future_text(job).endswith(": 0% · 0 of 4 · step 1 of 4>")
        demo.go.put_nowait(None)
        await until(line.bar, "value", lambda v: v == 0.25)
        assert "25% · 1 of 4 · step 2 of 4 · " in line.text.value and "/s" in line.text.value
        assert job.progress == pb.Progress(1, 4, "step 2 of 4")
        for _ in range(3):
            demo.go.put_nowait(None)
        assert await job == "crunched 4"
        await until(widget, "children", lambda c: len(c) == 2)
        frozen, outcome = widget.children
        assert frozen is line and line.bar.bar_style == "success" and line.bar.value == 1.0
        # The answer may overtake reports the sender held back (rate limit): the last one that came.
        assert f"finished</b>; last report: {progress_text(job.progress)}</span>" in line.text.value
        assert not re.search(r"\d/s|left", line.text.value)  # no rate, no time left: nothing is live any more
        assert "crunched 4" in html_of(outcome)


@pytest.mark.parametrize(
    ("how", "ending", "style"),
    [("fail", "failed", "danger"), ("cancel", "cancelled", "warning"), ("drop", "connection lost", "danger")],
)
async def test_a_call_that_ends_badly_freezes_its_bar_and_says_how(how, ending, style):
    demo = Demo(Counter())
    async with connected(demo) as session:
        job = session.root.callRemote("crunch", 2, fail=how == "fail")
        widget = FutureWidget(job)
        line = line_of(widget)
        await until(line.text, "value", lambda v: "step 1 of 2" in v)
        if how == "fail":
            demo.go.put_nowait(None)
            demo.go.put_nowait(None)
        elif how == "cancel":
            widget.pending.cancel.click()
        else:
            await session.server.close()
        await until(widget, "children", lambda c: len(c) == 2)
        assert line.ending == ending and line.bar.bar_style == style
        assert f"{ending}</b>; last report: " in line.text.value
        assert line.bar.value < 1.0
        with pytest.raises((pb.Error, pb.RemoteError, asyncio.CancelledError, pb.PBConnectionLost)):
            await job


async def test_a_call_without_reports_shows_no_bar_and_a_method_form_shows_progress_too():
    demo = Demo(Counter())
    async with connected(demo) as session:
        quick = FutureWidget(session.root.callRemote("hello", "ada"))
        await until(quick, "children", lambda c: "hello ada!" in html_of(c[0]))
        assert len(quick.children) == 1  # no progress came: only the outcome
        widget = await described(session.root)
        crunch = form(widget, "crunch")
        crunch.call("2")
        [pending] = crunch.output.children
        await until(pending.progress.text, "value", lambda v: "step 1 of 2" in v)
        demo.go.put_nowait(None)
        demo.go.put_nowait(None)
        await until(crunch.output, "children", lambda c: len(c) == 2)
        assert "finished" in crunch.output.children[0].text.value
        assert "crunched 2" in html_of(crunch.output.children[1])


def test_report_texts():
    assert progress_text(pb.Progress(3, 12, "reading")) == "25% · 3 of 12 · reading"
    assert progress_text(pb.Progress(1500)) == "1,500"
    assert progress_text(pb.Progress(0.5, 0)) == "0.5 of 0"
    assert format_rate(12345.6) == "12,346" and format_rate(0.25) == "0.25"
    assert [format_duration(s) for s in (2.25, 42, 150, 7200)] == ["2.2 s", "42 s", "2.5 min", "2.0 h"]
