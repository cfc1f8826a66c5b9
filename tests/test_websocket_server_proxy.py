"""A broker reached through a real Jupyter server's jupyter-server-proxy, as from outside a hub.

The test starts ``jupyter server`` with its own runtime folder and a token, serves
a pbnb root on another port, and connects to ``{server}/proxy/{port}/`` with the
token: the proxy forwards the WebSocket upgrade and the PB stream. ``proxy_url``,
what ``%pb_serve`` prints, names that URL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from core_net import serving, within
from test_core_connections import free_port
from ws_service import Service

import pbnb as pb
from pbnb.notebook._proxy import proxy_url

pytestmark = pytest.mark.slow
TOKEN = "pbnb-test-token"


@asynccontextmanager
async def jupyter_server(tmp: Path) -> AsyncIterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "server",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            "--port-retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={tmp}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError(f"jupyter server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                await asyncio.to_thread(
                    urllib.request.urlopen, f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=1
                )
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError("jupyter server did not start")
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def test_a_broker_is_reached_through_jupyter_server_proxy(tmp_path, monkeypatch):
    async with jupyter_server(tmp_path) as jupyter, serving(Service()) as server:
        monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
        monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
        url = proxy_url(server.port)
        assert url == f"ws://127.0.0.1:{jupyter}/proxy/{server.port}/"
        client = await within(pb.connect(url, headers={"Authorization": f"token {TOKEN}"}))
        async with client:
            root = await within(client.getRootObject())
            assert await within(root.callRemote("echo", "through the proxy")) == "through the proxy"
            big = b"\x01" * (2 << 20)
            assert await within(root.callRemote("echo", big)) == big
        # Without the token the Jupyter server refuses the upgrade itself.
        with pytest.raises(pb.ProtocolError, match="refused the WebSocket upgrade: HTTP 403"):
            await within(pb.connect(url))


def test_on_a_hub_the_url_is_a_path_under_the_users_prefix(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    assert proxy_url(8787) == "/user/ada/proxy/8787/"
