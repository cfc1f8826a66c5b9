"""A kernel's broker reached through a real Jupyter server's jupyter-server-proxy, by a second kernel.

The test starts ``jupyter server`` with a token, and two real IPython kernels that
share its runtime folder, as the kernels of a Jupyter server do. The first runs
``%pb_serve``, which prints the URL under which its broker is reachable through the
proxy (``{server}/proxy/{port}/``); the second connects to that URL with the token:
the proxy forwards the WebSocket upgrade and the PB stream.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from notebook_fixtures.harness import Kernel, child_env
from test_core_connections import free_port

from pbnb.notebook._proxy import proxy_url

pytestmark = pytest.mark.slow
TOKEN = "pbnb-test-token"


@contextmanager
def jupyter_server(home: Path) -> Iterator[int]:
    """A Jupyter server with ``home``'s runtime folder (the kernels' too), on a free port."""
    port = free_port()
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
            f"--ServerApp.root_dir={home}",
        ],
        env=child_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("jupyter server did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


SERVE = """\
import pbnb as pb


class Greeter(pb.Root):
    def remote_hello(self, name):
        return f"hello {name}, from the first kernel"

    def remote_echo(self, value):
        return value


server = %pb_serve Greeter()
"""

CONNECT = """\
import pbnb as pb

client = await pb.connect({url!r}, headers={{"Authorization": "token {token}"}})
root = await client.getRootObject()
print(await root.callRemote("hello", "second kernel"))
big = bytes(range(256)) * 8192  # 2 MiB: several WebSocket messages through the proxy
print("2 MiB echoed:", await root.callRemote("echo", big) == big)
await client.close()
try:
    await pb.connect({url!r})
except pb.ProtocolError as error:
    print("without the token:", error)
"""


def test_a_second_kernel_reaches_a_kernels_broker_through_jupyter_server_proxy(tmp_path):
    with jupyter_server(tmp_path) as jupyter, Kernel(tmp_path) as first, Kernel(tmp_path) as second:
        # %load_ext in a cell of its own: the next cell's magic line is then awaited for it.
        [loaded, served] = first.run_all(["%load_ext pbnb", SERVE], timeout=120)
        assert loaded["errors"] == [], loaded
        assert served["errors"] == [], served
        found = re.search(r"through jupyter-server-proxy at (\S+)", served["text"])
        assert found is not None, served["text"]
        url = found[1]
        assert re.fullmatch(rf"ws://127\.0\.0\.1:{jupyter}/proxy/\d+/", url), url

        [connected] = second.run_all([CONNECT.format(url=url, token=TOKEN)], timeout=120)
        assert connected["errors"] == [], connected
        lines = connected["text"].splitlines()
        assert lines[0] == "hello second kernel, from the first kernel"
        assert lines[1] == "2 MiB echoed: True"
        # Without the token the Jupyter server refuses the upgrade itself.
        assert "refused the WebSocket upgrade: HTTP 403" in lines[2], lines[2]
        assert first.manager.is_alive() and second.manager.is_alive()


def test_on_a_hub_the_url_is_a_path_under_the_users_prefix(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    assert proxy_url(8787) == "/user/ada/proxy/8787/"
