"""Voila and JupyterLab servers, and headless Debian chromium, for the browser tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import HERE, BrokerProcess, child_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--headless=new",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
#: Mark for a test that needs the browser: skipped where Debian's chromium is missing.
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"needs Debian's chromium at {CHROMIUM}"
)
BIN = Path(sys.executable).parent
#: How long (ms) a page may take to show what a test expects. A hang detector, not an
#: assertion: chromium, a Jupyter server and a kernel share a loaded 2-core CI machine.
UI_WAIT = 60_000
#: A JavaScript predicate: JupyterLab's status bar shows a kernel, and it is idle.
KERNEL_IDLE = (
    "[...document.querySelectorAll('.jp-StatusBar-TextItem')]"
    ".some(e => / \\| Idle$/.test(e.innerText) && !e.innerText.startsWith('No Kernel'))"
)


def free_port() -> int:
    """A loopback port that is free now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Return once something accepts connections on ``port``; fail if the server died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"server not listening on {port} after {timeout}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def server(argv: list[str], port: int, home: Path, env: dict[str, str]) -> Iterator[str]:
    """Run a web server in a child process; yield its base URL; stop it afterwards."""
    log = home / f"server-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**child_env(home), **env}, cwd=home
        )
    try:
        wait_listening(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def voila(notebook: str, home: Path, env: dict[str, str]) -> contextlib.AbstractContextManager[str]:
    """Serve a fixture notebook with Voila (which runs every cell when the page opens)."""
    shutil.copy(HERE / notebook, home / notebook)
    return voila_server(notebook, home, env)


def voila_server(notebook: str, home: Path, env: dict[str, str]) -> contextlib.AbstractContextManager[str]:
    """Serve ``home / notebook`` with Voila."""
    port = free_port()
    argv = [
        str(BIN / "voila"),
        notebook,
        "--no-browser",
        f"--port={port}",
        "--Voila.port_retries=0",  # if the port was taken meanwhile, fail rather than listen elsewhere
        "--Voila.ip=127.0.0.1",
        "--show_tracebacks=True",
    ]
    return server(argv, port, home, env)


def jupyterlab(notebook: str, home: Path, env: dict[str, str]) -> contextlib.AbstractContextManager[str]:
    """Serve a fixture notebook with JupyterLab."""
    shutil.copy(HERE / notebook, home / notebook)
    return lab_server(home, env)


def lab_server(home: Path, env: dict[str, str]) -> contextlib.AbstractContextManager[str]:
    """JupyterLab on the notebooks in ``home`` (no token, news and update checks off)."""
    settings = home / "lab-settings"
    settings.mkdir(exist_ok=True)
    (settings / "overrides.json").write_text(
        '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}'
    )
    port = free_port()
    argv = [
        str(BIN / "jupyter-lab"),
        "--no-browser",
        "--allow-root",
        "--IdentityProvider.token=",
        f"--port={port}",
        "--port-retries=0",
        f"--ServerApp.root_dir={home}",
        f"--LabApp.app_settings_dir={settings}",
        "--LabApp.expose_app_in_browser=True",
    ]
    return server(argv, port, home, env)


@contextlib.contextmanager
def browser_page(home: Path, name: str) -> Iterator[Any]:
    """A headless chromium page with its own HOME; on failure, a screenshot is saved."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=child_env(home)
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.set_default_timeout(UI_WAIT)
        expect.set_options(timeout=UI_WAIT)  # for the expectations that name no timeout
        try:
            yield page
        except BaseException:
            artifacts = artifacts_dir(home)
            artifacts.mkdir(parents=True, exist_ok=True)
            shot = artifacts / f"{name}.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot saved: {shot}")
            raise
        finally:
            browser.close()


def artifacts_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $PBNB_ARTIFACTS if set (CI keeps it), else the test's tmp dir."""
    return Path(os.environ.get("PBNB_ARTIFACTS", tmp_path / "artifacts"))


@contextlib.contextmanager
def live_notebook(
    serve: Callable[[str, Path, dict[str, str]], contextlib.AbstractContextManager[str]],
    home: Path,
    name: str,
) -> Iterator[tuple[BrokerProcess, str, Any]]:
    """``live.ipynb`` served by ``serve`` (``voila`` or ``jupyterlab``) and a page to open it.

    The fixture broker runs in a child process and the notebook reaches it through
    ``PBNB_TEST_PORT``. Yields ``(broker, base URL, page)``; ``name`` names the
    screenshot saved on failure.
    """
    with BrokerProcess(home) as broker:
        env = {"PBNB_TEST_PORT": str(broker.port)}
        with serve("live.ipynb", home, env) as url, browser_page(home, name) as page:
            yield broker, url, page
