"""pbnb in JupyterLite: the site scripts/jupyterlite.py builds, in headless Debian chromium.

The site is built from this checkout with everything it loads inside it (Pyodide
from the npm package, micropip, the kernel's packages, pbnb's wheel, msgpack's
pure-Python build); its notebook (``lite/pbnb-in-jupyterlite.ipynb``) installs
pbnb with JupyterLite's ``%pip``, connects to a demo broker over the browser's
WebSocket, calls it and shows the live ticker and the shared counter as widgets.
The test follows the page's every request: none may leave the loopback site.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from notebook_fixtures.harness import child_env
from notebook_fixtures.servers import KERNEL_IDLE, browser_page, free_port, needs_chromium, wait_listening

from pbnb.aio import blocking

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "lite" / "pbnb-in-jupyterlite.ipynb"
NOTEBOOK_URL = 'URL = "ws://localhost:8787/"'
#: The Pyodide kernel starts (interpreter, micropip, IPython) and %pip installs pbnb:
#: tens of seconds on a loaded 2-core machine.
LITE_WAIT = 240_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), needs_chromium]


@contextmanager
def process(argv: list[str], home: Path, name: str) -> Iterator[subprocess.Popen]:
    log = home / f"{name}.log"
    with log.open("w") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env(home))
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def build_site(tmp: Path, broker_url: str) -> Path:
    """The site, with the notebook pointed at this test's broker."""
    notebook = json.loads(NOTEBOOK.read_text())
    assert all(not cell.get("outputs") for cell in notebook["cells"]), "commit the notebook without outputs"
    sources = ["".join(cell["source"]) for cell in notebook["cells"]]
    assert any(NOTEBOOK_URL in source for source in sources)
    for cell, source in zip(notebook["cells"], sources, strict=True):
        cell["source"] = source.replace(NOTEBOOK_URL, f'URL = "{broker_url}"')
    contents = tmp / "contents"
    contents.mkdir()
    (contents / NOTEBOOK.name).write_text(json.dumps(notebook))
    site = tmp / "site"
    build = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "jupyterlite.py"),
            "build",
            str(site),
            "--contents",
            str(contents),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, f"{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    return site


def test_a_jupyterlite_notebook_calls_a_broker_and_shows_live_widgets(tmp_path):
    from playwright.sync_api import expect

    home = tmp_path
    http_port, broker_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{http_port}"
    broker_url = f"ws://127.0.0.1:{broker_port}/"
    site = build_site(tmp_path, broker_url)
    assert sorted(path.name for path in (site / "static" / "pyodide").glob("*.whl")) == [
        "micropip-0.11.1-py3-none-any.whl"
    ]
    assert any(path.name.startswith("pbnb-") for path in (site / "pypi").glob("*.whl"))
    broker = [sys.executable, "-m", "pbnb", "demo", "--host", "127.0.0.1", "--port", str(broker_port)]
    broker += ["--websocket-origin", origin]
    web = [sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1", "-d", str(site)]
    with (
        process(broker, home, "broker") as broker_process,
        process(web, home, "http") as web_process,
        browser_page(home, "jupyterlite") as page,
    ):
        wait_listening(broker_port, broker_process, home / "broker.log")
        wait_listening(http_port, web_process, home / "http.log")
        asked: list[str] = []  # every URL the page and its kernel's worker ask for
        page.on(
            "request",
            lambda request: (
                None if request.url.startswith((origin, broker_url)) else asked.append(request.url)
            ),
        )
        page.goto(f"{origin}/lab/index.html?path={NOTEBOOK.name}")
        page.wait_for_function(KERNEL_IDLE, timeout=LITE_WAIT, polling=500)
        expect(page.locator(".jp-StatusBar-TextItem").filter(has_text="Pyodide")).to_be_visible()
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.click('.lm-Menu li[data-command="runmenu:run-all"]')

        notebook = page.locator(".jp-NotebookPanel")
        expect(notebook).to_contain_text("pbnb 0.1.0", timeout=LITE_WAIT)
        expect(notebook).to_contain_text("'hello from the browser'", timeout=LITE_WAIT)
        # The ticker moves on the broker; its widgets follow with no cell running.
        count = page.locator(".pbnb-cache .pbnb-field-count input")
        expect(count).to_have_count(1, timeout=LITE_WAIT)
        expect(count).not_to_have_value("0", timeout=LITE_WAIT)
        seen = int(count.input_value())
        expect(count).not_to_have_value(str(seen))
        assert int(count.input_value()) > seen
        # The shared counter: the page's increment shows, and so does one from a CPython client.
        counter = page.locator(".pbnb-cache .pbnb-field-value input").last
        expect(counter).to_have_value("5", timeout=LITE_WAIT)
        with blocking.connect(broker_url) as client:  # Playwright's sync API holds this thread's loop
            client.getRootObject().callRemote("increment", 10, by="the test")
        expect(counter).to_have_value("15")
        expect(page.locator(".pbnb-cache .pbnb-field-last_by input").last).to_have_value("the test")
        assert not page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        ).count()
        beyond = [url for url in asked if not url.startswith((origin, broker_url))]
        assert beyond == [], f"the page reached beyond the site and the broker: {beyond[:5]}"
