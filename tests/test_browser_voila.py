"""A person's view: a notebook in Voila, rendered by headless Debian chromium.

The page connects to a broker in another process and shows a RemoteReference
widget and a live cache widget; the broker changes the cache and the page
follows with no cell running; a click on a method's call button shows its
result; an edit in the page reaches the broker.
"""

from __future__ import annotations

import pytest
from notebook_fixtures.servers import UI_WAIT, live_notebook, needs_chromium, voila

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240), needs_chromium]

# How far apart an element's lines of text are, in font sizes.
LINE_PITCH = """(element) => {
    const lines = element.textContent.split("\\n").length;
    return element.getBoundingClientRect().height / lines / parseFloat(getComputedStyle(element).fontSize);
}"""


def test_live_cache_and_method_call_in_voila(tmp_path):
    from playwright.sync_api import expect

    with live_notebook(voila, tmp_path, "voila-live") as (broker, url, page):
        page.goto(url, timeout=120_000)
        expect(page.locator("body")).to_contain_text("all cells ran", timeout=120_000)
        value = page.locator(".pbnb-cache .pbnb-field-value input")
        expect(value).to_have_value("0", timeout=30_000)

        # The owner changes the state in its own process; the page follows by itself.
        assert broker.command("set 123") == "ok 123"
        expect(value).to_have_value("123", timeout=UI_WAIT)
        assert broker.command("set 124") == "ok 124"
        expect(value).to_have_value("124", timeout=UI_WAIT)

        # A click on a method's call button shows the result under it.
        hello = page.locator(".pbnb-reference .pbnb-method-hello").first
        expect(page.locator(".pbnb-reference .pbnb-status").first).to_contain_text("connected")
        hello.locator(".pbnb-args input").fill("'browser', punctuation='?'")
        hello.locator(".pbnb-call").click()
        expect(hello.locator(".pbnb-output")).to_contain_text("hello browser?", timeout=UI_WAIT)

        # A result of several lines reads as a block of text, not one line per widget row.
        hello.locator(".pbnb-args input").fill(r"'one\ntwo\nthree\nfour'")
        hello.locator(".pbnb-call").click()
        shown = hello.locator(".pbnb-output pre.pbnb-value")
        expect(shown).to_have_text("hello one\ntwo\nthree\nfour!", timeout=UI_WAIT)
        pitch = shown.evaluate(LINE_PITCH)
        assert 1.0 < pitch < 1.6, f"lines {pitch:.2f} font sizes apart"  # were 2.15: 28 px rows, 13 px text

        # An error shows the remote type and message.
        boom = page.locator(".pbnb-reference .pbnb-method-boom").first
        boom.locator(".pbnb-call").click()
        expect(boom.locator(".pbnb-output")).to_contain_text("pbnb.errors.Error: kaboom", timeout=UI_WAIT)

        # An edit in the page goes to the owner, exactly once.
        value.fill("55")
        value.press("Enter")
        assert broker.reply() == "wrote value 55"
        assert broker.command("get") == "value 55 writes 1"

        # The owner goes away: the reference widget says so.
        broker.close()
        expect(page.locator(".pbnb-reference .pbnb-status").first).to_contain_text(
            "disconnected", timeout=UI_WAIT
        )
