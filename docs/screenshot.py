"""Retake the docs' pictures of live widgets: notebooks in Voila, in headless chromium.

Usage: ``.venv/bin/python docs/screenshot.py`` (needs Debian's chromium at /usr/bin/chromium).
It starts a demo broker and, for each picture, serves part of a notebook with Voila:

- ``docs/img/live-dashboard.png``: the dashboard notebook (as far as its widgets),
  while another client changes the shared counter and the ticker moves;
- ``docs/img/streams-and-progress.png``: notebook 08's stream widget, live plot and
  progress bar, taken while they run (the stream and the call made longer for it).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
from playwright.sync_api import sync_playwright

from pbnb.aio import blocking

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "docs" / "img"
PORT = 8899


def dashboard_only(target: Path) -> None:
    """Write the dashboard notebook up to its widgets, without showing the root reference."""
    notebook = nbformat.read(REPO / "notebooks" / "04-live-dashboard.ipynb", 4)
    last = next(i for i, cell in enumerate(notebook.cells) if "dashboard.add_class" in cell.source)
    cells = [cell for cell in notebook.cells[: last + 1] if cell.cell_type == "code"]
    for cell in cells:
        cell.source = re.sub(r"\ndemo$", "", cell.source.rstrip())
    title = nbformat.v4.new_markdown_cell(
        "### pbnb: live copies of the demo broker's Ticker and shared Counter"
    )
    notebook.cells = [title, *cells]
    nbformat.write(notebook, target)


def another_client_changes_the_counter(host: str, port: int) -> None:
    with blocking.connect(host, port) as client:
        root = client.getRootObject()
        for _ in range(7):
            root.callRemote("increment", 17, by="bob's kernel")
            time.sleep(0.5)


def streams_running(target: Path) -> None:
    """Write notebook 08 as far as its progress bar, with a stream and a call still running."""
    notebook = nbformat.read(REPO / "notebooks" / "08-streams-and-progress.ipynb", 4)
    wanted = ("%load_ext", "demo_address", "samples =", "feeding =", "job = demo.remote.crunch(30")
    cells = [
        cell for cell in notebook.cells if cell.cell_type == "code" and any(w in cell.source for w in wanted)
    ]
    for cell in cells:
        cell.source = (
            cell.source.replace("wave(60,", "wave(100_000,")
            .replace("follow(200)", "follow(100_000)")
            .replace("crunch(30, pause=0.1)", "crunch(300, pause=0.1)")
        )
    title = nbformat.v4.new_markdown_cell("### pbnb: a stream read live, a plot it feeds, a call's progress")
    notebook.cells = [title, *cells]
    nbformat.write(notebook, target)


def shoot(work: Path, notebook: str, env: dict[str, str], output: Path, ready: str, act: Any) -> None:
    """Serve ``notebook`` with Voila, wait for the selector ``ready``, run ``act()``, save the page."""
    voila = Path(sys.executable).parent / "voila"
    server = subprocess.Popen(
        [str(voila), notebook, "--no-browser", f"--port={PORT}", "--Voila.ip=127.0.0.1"],
        cwd=work,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):  # listening: Voila runs the notebook when the page opens
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--headless=new"]
            )
            page = browser.new_page(viewport={"width": 900, "height": 700}, device_scale_factor=2)
            page.goto(f"http://127.0.0.1:{PORT}/", timeout=120_000, wait_until="commit")
            page.wait_for_selector(ready, timeout=120_000)
            act()
            page.screenshot(path=str(output), full_page=True)
            browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    print(f"wrote {output}")


def main() -> None:
    """Take the screenshots."""
    work = Path(tempfile.mkdtemp(prefix="pbnb-shot-"))
    dashboard_only(work / "dashboard.ipynb")
    streams_running(work / "streams.ipynb")
    env = {**os.environ, "HOME": str(work)}
    broker = subprocess.Popen(
        [sys.executable, "-m", "pbnb", "demo", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    host, port = re.search(r"on (\S+):(\d+)", broker.stdout.readline()).groups()  # type: ignore[union-attr]
    env["PBNB_DEMO"] = f"{host}:{port}"

    def counter_changes_and_plot_fills() -> None:
        changer = threading.Thread(target=another_client_changes_the_counter, args=(host, int(port)))
        changer.start()
        changer.join()
        time.sleep(8)  # let the plot fill: this is a picture, not a test

    try:
        shoot(
            work,
            "dashboard.ipynb",
            env,
            IMAGES / "live-dashboard.png",
            ".pbnb-dashboard",
            counter_changes_and_plot_fills,
        )
        # Mid-run: the stream and the call are still going (a picture, not a test).
        shoot(
            work,
            "streams.ipynb",
            env,
            IMAGES / "streams-and-progress.png",
            ".pbnb-progress-bar",
            lambda: time.sleep(5),
        )
    finally:
        broker.send_signal(signal.SIGINT)
        broker.wait(30)


if __name__ == "__main__":
    main()
