"""The showcase as a person sees it, in headless Debian chromium.

Every notebook goes through JupyterLab's own "Run All" (every cell queued at
once, as a Binder visitor does it), and the live dashboard is opened in Voila,
where its widgets must follow the demo broker with no cell running.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys

import nbformat
import pytest
from notebook_fixtures.harness import child_env
from notebook_fixtures.servers import (
    BIN,
    KERNEL_IDLE,
    UI_WAIT,
    browser_page,
    free_port,
    lab_server,
    needs_chromium,
    voila_server,
    wait_listening,
)
from showcase_helpers import NOTEBOOKS, REPO

from pbnb.aio import blocking

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), needs_chromium]

# Run All reads from JupyterLab's own notebook model, not the DOM: Lab 4 renders only
# the cells near the viewport, so prompts scrolled out of view can read as unrun.
# Lab sets a cell's execution count to null when it queues the cell and to a number
# when the cell has run.
_CODE_CELLS = """const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
    const code = [];
    for (let i = 0; i < cells.length; i++) {
        if (cells.get(i).type === 'code') code.push(cells.get(i));
    }"""
# Settled: every code cell has run, or one raised (after an error the rest stay unrun:
# the test then reports the error).
SETTLED = (
    "n => { "
    + _CODE_CELLS
    + """
    if (code.length !== n) return false;
    if (code.every(c => typeof c.executionCount === 'number')) return true;
    return code.some(c => { const o = c.outputs; for (let j = 0; o && j < o.length; j++)
        { if (o.get(j).toJSON().output_type === 'error') return true; } return false; });
}"""
)
UNRUN = "() => { " + _CODE_CELLS + " return code.filter(c => typeof c.executionCount !== 'number').length; }"

# The error outputs (exceptions) of the visible notebook, from JupyterLab's own model.
# Log lines on stderr are not errors: a server in the kernel logs, say, a failed login.
ERROR_OUTPUTS = """() => {
    const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
    const errors = [];
    for (let i = 0; i < cells.length; i++) {
        const outputs = cells.get(i).outputs;
        for (let j = 0; outputs && j < outputs.length; j++) {
            const output = outputs.get(j).toJSON();
            if (output.output_type === 'error') errors.push(output.ename + ': ' + output.evalue);
        }
    }
    return errors;
}"""


# The tick labels of the dashboard plot's axes that an axis label overlaps (none, we hope).
AXIS_LABEL_OVERLAPS = """() => {
    const overlaps = [];
    for (const axis of document.querySelectorAll('.pbnb-plot g.axis')) {
        const label = axis.querySelector('text.axislabel');
        if (label === null || !label.textContent) continue;
        const a = label.getBoundingClientRect();
        for (const tick of axis.querySelectorAll('.tick text')) {
            const b = tick.getBoundingClientRect();
            if (b.width && a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom)
                overlaps.push(label.textContent + ' over ' + tick.textContent);
        }
    }
    return overlaps;
}"""


@pytest.fixture
def demo_broker():
    """``python -m pbnb demo`` on a free port; yields (host, port)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pbnb", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        match = re.search(r"on (\S+):(\d+)", process.stdout.readline())
        assert match, "the demo broker did not start"
        yield match[1], int(match[2])
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_every_notebook_survives_run_all_in_jupyterlab(tmp_path, demo_broker):
    from playwright.sync_api import expect

    for notebook in NOTEBOOKS:
        # Saved outputs cleared: a numbered prompt must mean "ran now".
        cells = nbformat.read(notebook, 4)
        for cell in cells.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(cells, tmp_path / notebook.name)
    env = {"PBNB_DEMO": "{}:{}".format(*demo_broker)}
    with lab_server(tmp_path, env) as url, browser_page(tmp_path, "showcase-run-all") as page:
        for notebook in NOTEBOOKS:
            code_cells = sum(cell.cell_type == "code" for cell in nbformat.read(notebook, 4).cells)
            page.goto(f"{url}/lab/tree/{notebook.name}?reset", timeout=120_000)
            page.wait_for_function(KERNEL_IDLE, timeout=120_000)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            page.wait_for_function(SETTLED, arg=code_cells, timeout=180_000)
            errors = page.evaluate(ERROR_OUTPUTS)
            assert errors == [], f"{notebook.name}: {errors}"
            assert page.evaluate(UNRUN) == 0, notebook.name
            page.wait_for_function(KERNEL_IDLE, timeout=30_000)
            expect(page.locator("body")).not_to_contain_text("Kernel Restarting")


@contextlib.contextmanager
def dashboard_command(home):
    """The documented dashboard command, ``binder/start voila notebooks/04-live-dashboard.ipynb``.

    Yields (Voila's URL, the demo broker's "host:port"); stops Voila and the broker.
    """
    port = free_port()
    log = home / "dashboard.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(REPO / "binder" / "start"),
                "voila",
                str(REPO / "notebooks" / "04-live-dashboard.ipynb"),
                "--no-browser",
                f"--port={port}",
                "--Voila.port_retries=0",
                "--Voila.ip=127.0.0.1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**child_env(home), "PATH": f"{BIN}:{os.environ['PATH']}", "TMPDIR": str(home)},
            cwd=REPO,
            start_new_session=True,  # the broker binder/start leaves running is in this group
        )
    try:
        wait_listening(port, process, log)
        broker = re.search(r"pbnb demo broker on (\S+)", log.read_text())
        assert broker, log.read_text()
        yield f"http://127.0.0.1:{port}", broker[1]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_the_voila_dashboard_is_live_and_shared_by_every_visitor(tmp_path):
    """The README's screenshot, live: the whole dashboard notebook in Voila, twice, one broker."""
    from playwright.sync_api import expect

    with dashboard_command(tmp_path) as (url, broker), browser_page(tmp_path, "showcase-dashboard") as page:
        page.goto(url, timeout=120_000)
        expect(page.locator(".pbnb-dashboard")).to_be_visible(timeout=120_000)
        # %pb_status, near the end, ran:
        expect(page.locator("body")).to_contain_text("exported (our Cacheables observed)", timeout=120_000)
        assert "Error" not in page.locator("body").inner_text()
        count = page.locator(".pbnb-cache .pbnb-field-count input")
        first = int(count.input_value().replace(",", ""))
        page.wait_for_function(
            "n => Number(document.querySelector('.pbnb-cache .pbnb-field-count input')"
            ".value.replaceAll(',', '')) >= n",
            arg=first + 2,
            timeout=30_000,
        )
        # The plot of the ticker's history redraws by itself.
        plotted = page.locator(".pbnb-plot path.line").first.get_attribute("d")
        page.wait_for_function(
            "d => { const p = document.querySelector('.pbnb-plot path.line');"
            " return p !== null && p.getAttribute('d') !== d; }",
            arg=plotted,
            timeout=30_000,
        )
        # Each axis label stands clear of its tick labels (the y label once sat on top of them).
        assert page.evaluate(AXIS_LABEL_OVERLAPS) == []
        second = page.context.browser.new_page()  # another visitor
        second.goto(url, timeout=120_000)
        expect(second.locator(".pbnb-dashboard")).to_be_visible(timeout=120_000)
        host, port = broker.rsplit(":", 1)
        with blocking.connect(host, int(port)) as other_client:
            new_value = other_client.getRootObject().callRemote("increment", 17, by="another client")
        for visitor in (page, second):
            readout = visitor.locator(".pbnb-dashboard .widget-readout")
            expect(readout).to_have_text(str(new_value), timeout=UI_WAIT)
            expect(visitor.locator(".pbnb-dashboard")).to_contain_text("last changed by another client")
            expect(visitor.locator(".pbnb-cache").first).to_contain_text("live copy")


def test_the_streams_notebook_plots_the_stream_and_ends_its_widgets_true(tmp_path, demo_broker):
    """Notebook 08 in Voila: the bqplot line holds every streamed point, and every widget ended."""
    from playwright.sync_api import expect

    name = "08-streams-and-progress.ipynb"
    shutil.copy(REPO / "notebooks" / name, tmp_path / name)
    env = {"PBNB_DEMO": "{}:{}".format(*demo_broker)}
    with voila_server(name, tmp_path, env) as url, browser_page(tmp_path, "showcase-streams") as page:
        page.goto(url, timeout=120_000)
        expect(page.locator("body")).to_contain_text("plotted 200 samples", timeout=180_000)
        # The line drawn in the page has a vertex for each of the 200 samples.
        page.wait_for_function(
            "() => { const p = document.querySelector('.pbnb-stream-plot path.line');"
            " return p !== null && ((p.getAttribute('d') || '').match(/L/g) || []).length === 199; }",
            timeout=UI_WAIT,
        )
        expect(page.locator(".pbnb-stream .pbnb-stream-state")).to_contain_text("done: the stream ended")
        expect(page.locator(".pbnb-stream .pbnb-stream-count")).to_contain_text("60 items")
        expect(page.locator(".pbnb-future .pbnb-progress-text")).to_contain_text("finished; last report:")
        expect(page.locator("body")).to_contain_text("crunched 20 steps", timeout=UI_WAIT)
        assert "Error" not in page.locator("body").inner_text()
