"""JupyterLab's own "Run All" in headless Debian chromium: every cell is queued at once.

This is where a magic that ran the loop re-entrantly used to kill the kernel;
pbnb's magics are awaited instead, so the kernel must live and the live cache
widget must follow the broker afterwards.
"""

from __future__ import annotations

import pytest
from notebook_fixtures.servers import KERNEL_IDLE, UI_WAIT, jupyterlab, live_notebook, needs_chromium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240), needs_chromium]


def test_run_all_in_jupyterlab(tmp_path):
    from playwright.sync_api import expect

    with live_notebook(jupyterlab, tmp_path, "lab-run-all") as (broker, url, page):
        page.goto(f"{url}/lab/tree/live.ipynb", timeout=120_000)
        page.wait_for_function(KERNEL_IDLE, timeout=120_000)
        # Fire and forget: awaiting the command's promise from evaluate() can hang.
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        notebook = page.locator(".jp-NotebookPanel")
        expect(notebook).to_contain_text("all cells ran", timeout=60_000)
        prompts = page.locator(".jp-NotebookPanel .jp-InputPrompt")
        # The last prompt turns from [*] to [5] only when its execute_reply arrives, after its output.
        expect(prompts).to_have_text(["[1]:", "[2]:", "[3]:", "[4]:", "[5]:"], timeout=UI_WAIT)

        value = page.locator(".jp-NotebookPanel .pbnb-cache .pbnb-field-value input")
        expect(value).to_have_value("0", timeout=30_000)
        assert broker.command("set 31") == "ok 31"
        expect(value).to_have_value("31", timeout=UI_WAIT)

        hello = page.locator(".jp-NotebookPanel .pbnb-method-hello").first
        hello.locator(".pbnb-call").click()  # with no arguments: name is required
        expect(hello.locator(".pbnb-output")).to_contain_text("TypeError", timeout=UI_WAIT)
        hello.locator(".pbnb-args input").fill("'lab'")
        hello.locator(".pbnb-call").click()
        expect(hello.locator(".pbnb-output")).to_contain_text("hello lab!", timeout=UI_WAIT)
        # The kernel is alive and well: still idle, never restarted.
        page.wait_for_function(KERNEL_IDLE, timeout=UI_WAIT)
        expect(page.locator("body")).not_to_contain_text("Kernel Restarting")
