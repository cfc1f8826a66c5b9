"""Streams and progress as a person sees them: widgets in Voila, in headless Debian chromium.

The fixture broker runs in another process. The page shows a call whose
progress the broker paces (``step``), and a stream that counts up until
stopped; the stop button must close the generator there (its ``finally``
reports back on the broker's stdout).
"""

from __future__ import annotations

import re

import pytest
from notebook_fixtures.harness import BrokerProcess
from notebook_fixtures.servers import UI_WAIT, browser_page, needs_chromium, voila

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240), needs_chromium]


def shown_count(page) -> int:
    text = page.locator(".pbnb-stream .pbnb-stream-count").inner_text()
    return int(re.match(r"([\d,]+) item", text)[1].replace(",", ""))


# How much of the progress bar is filled, in percent of its track.
FILLED = """() => { const bar = document.querySelector('.pbnb-progress-bar .progress-bar');
    return 100 * bar.getBoundingClientRect().width / bar.parentElement.getBoundingClientRect().width; }"""


def bar_width(page) -> float:
    return page.evaluate(FILLED)


def test_progress_moves_and_ends_true_and_a_stream_counts_until_stopped(tmp_path):
    from playwright.sync_api import expect

    with (
        BrokerProcess(tmp_path) as broker,
        voila("streams.ipynb", tmp_path, {"PBNB_TEST_PORT": str(broker.port)}) as url,
        browser_page(tmp_path, "voila-streams") as page,
    ):
        page.goto(url, timeout=120_000)
        expect(page.locator("body")).to_contain_text("all cells ran", timeout=120_000)

        # The un-awaited call's progress: it moves as the broker lets the method step.
        progress = page.locator(".pbnb-pending .pbnb-progress-text")
        expect(progress).to_contain_text("0% · 0 of 4 · step 1 of 4")
        assert bar_width(page) < 5
        assert broker.command("step") == "ok step"
        expect(progress).to_contain_text("25% · 1 of 4 · step 2 of 4")
        page.wait_for_function(f"() => ({FILLED})() > 20")
        assert 20 < bar_width(page) < 30
        for _ in range(3):
            assert broker.command("step") == "ok step"
        # It ended: the spinner and cancel button are gone, the bar is full and says so.
        ended = page.locator(".pbnb-future .pbnb-progress-text")
        expect(ended).to_contain_text("finished; last report: ")
        expect(page.locator(".pbnb-future")).to_contain_text("'crunched 4'")
        expect(page.locator(".pbnb-pending")).to_have_count(0)
        page.wait_for_function(f"() => ({FILLED})() > 99")

        stream = page.locator(".pbnb-stream")
        expect(stream.locator(".pbnb-stream-state")).to_contain_text("streaming ticks()")
        # The count goes up by itself, with no cell running, and the latest items show.
        page.wait_for_function(
            "() => /^([3-9]|\\d\\d)/.test(document.querySelector('.pbnb-stream-count').innerText)",
            timeout=UI_WAIT,
        )
        before = shown_count(page)
        page.wait_for_function(
            "n => parseInt(document.querySelector('.pbnb-stream-count').innerText.replace(/,/g, '')) > n",
            arg=before,
            timeout=UI_WAIT,
        )
        # The latest items, numbered from 1: item n is the number n - 1, newest last.
        latest = [line.split() for line in stream.locator(".pbnb-stream-items").inner_text().splitlines()]
        numbers = [int(number.lstrip("#").replace(",", "")) for number, _item in latest]
        assert len(latest) == 5 and numbers == list(range(numbers[0], numbers[0] + 5))
        assert all(int(item) == number - 1 for number, (_n, item) in zip(numbers, latest, strict=True))
        expect(stream.locator(".pbnb-stream-count")).to_contain_text("items/s")

        stream.locator(".pbnb-stream-stop").click()
        closed = broker.reply()  # the generator's finally ran in the broker's process
        assert closed.startswith("ticks closed after "), closed
        expect(stream.locator(".pbnb-stream-state")).to_contain_text("stopped: the stream was closed")
        expect(stream.locator(".pbnb-stream-stop")).to_be_disabled()
        final = shown_count(page)
        assert final >= before
        # Stopped means stopped: the count no longer moves.
        page.wait_for_timeout(500)  # a look after a pause; the assertion holds for any pause
        assert shown_count(page) == final
