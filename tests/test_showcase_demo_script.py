"""``bash scripts/demo.sh``, the README's demo command: broker and JupyterLab up, URL printed, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import urllib.request

import pytest
from showcase_helpers import REPO

import pbnb as pb


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(300)
async def test_demo_script_starts_broker_and_lab_then_stops_both(tmp_path):
    lab_port, broker_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
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
        stderr=asyncio.subprocess.DEVNULL,
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
            root = await client.getRootObject()
            assert await root.callRemote("add", 20, 22) == 42

        process.send_signal(signal.SIGINT)  # Ctrl-C
        await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert not is_listening(lab_port)
    assert not is_listening(broker_port)
