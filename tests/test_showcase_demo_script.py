"""``bash scripts/demo.sh``, the README's demo command: broker and JupyterLab up, URL printed, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import pytest
from showcase_helpers import REPO

import pbnb as pb

pytestmark = pytest.mark.slow

# Run argv[1:] with SIGINT at its default, as a shell started from a terminal has it.
# pytest run in the background inherits SIGINT ignored, and a non-interactive bash that
# starts with a signal ignored cannot trap it: demo.sh would never see our Ctrl-C.
AS_FROM_A_TERMINAL = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pids_with(marker: str) -> list[int]:
    """The processes whose environment holds ``marker`` (everything demo.sh starts inherits it)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
    return found


async def stop_everything(process: asyncio.subprocess.Process, marker: str) -> None:
    """After a failure: end demo.sh and what it started, so nothing outlives the test.

    JupyterLab runs in its own session (setsid), out of reach of a kill of demo.sh's
    group, and it holds our stdout pipe: until it exits, ``process.wait()`` never returns.
    """
    process.send_signal(signal.SIGTERM)  # demo.sh's trap stops JupyterLab's process group
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 60)
    for pid in pids_with(marker):  # demo.sh could not clean up: do it for it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(process.wait(), 60)


@pytest.mark.timeout(300)
async def test_demo_script_starts_broker_and_lab_then_stops_both(tmp_path):
    lab_port, broker_port = free_port(), free_port()
    stderr = (tmp_path / "stderr").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AS_FROM_A_TERMINAL,
        "bash",
        "scripts/demo.sh",
        cwd=REPO,
        env={
            **os.environ,
            "HOME": str(tmp_path),
            "PBNB_LAB_PORT": str(lab_port),
            "PBNB_DEMO_PORT": str(broker_port),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )
    try:
        url = None
        while url is None:
            line = (await asyncio.wait_for(process.stdout.readline(), 240)).decode()
            assert line, "demo.sh ended before printing the URL"
            if line.startswith("pbnb demo ready: open "):
                url = line.split("open ", 1)[1].strip()
        assert url == f"http://127.0.0.1:{lab_port}/lab/tree/01-quickstart.ipynb"
        page = await asyncio.to_thread(urllib.request.urlopen, url, timeout=30)
        assert page.status == 200  # no token asked
        listing = await asyncio.to_thread(
            urllib.request.urlopen, f"http://127.0.0.1:{lab_port}/api/contents", timeout=30
        )
        names = {item["name"] for item in json.load(listing)["content"]}
        assert "01-quickstart.ipynb" in names and "04-live-dashboard.ipynb" in names

        async with await pb.connect("127.0.0.1", broker_port) as client:
            root = await asyncio.wait_for(client.getRootObject(), 60)
            assert await asyncio.wait_for(root.callRemote("add", 20, 22), 60) == 42

        process.send_signal(signal.SIGINT)  # Ctrl-C
        await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            await stop_everything(process, f"PBNB_LAB_PORT={lab_port}")
        stderr.close()
    assert not is_listening(lab_port)
    assert not is_listening(broker_port)
    logged = (tmp_path / "stderr").read_text()
    assert "deprecat" not in logged.lower(), logged
