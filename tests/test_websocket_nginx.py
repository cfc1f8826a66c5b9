"""PB over wss:// through a real reverse proxy: Debian's nginx, TLS terminated there, on loopback.

Each test starts its own nginx with its own configuration in a temporary folder
(a certificate from a throwaway authority, no system configuration touched) in
front of a pbnb server, and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from core_net import serving, within
from cred_helpers import ALICE, make_portal
from test_core_connections import free_port
from ws_helpers import Tls
from ws_service import Service

import pbnb as pb
from pbnb.cred import UnauthorizedLogin, UsernamePassword

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONFIG = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        location /pb {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_read_timeout 1h;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def tls() -> Tls:
    return Tls()


@asynccontextmanager
async def nginx(tmp: Path, tls: Tls, upstream: int) -> AsyncIterator[int]:
    """Run nginx on a free loopback port, proxying /pb to ``upstream``; yield its port."""
    if not os.path.exists(NGINX):
        pytest.fail("nginx is needed: run scripts/setup.sh")
    cert = tls.authority.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    port = free_port()
    (tmp / "nginx.conf").write_text(CONFIG.format(tmp=tmp, port=port, upstream=upstream))
    process = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
        start_new_session=True,  # its workers too are stopped with the group
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError("nginx did not start listening")
        yield port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def kill_proxy(tmp: Path) -> None:
    """Kill nginx's master and workers at once, as a crashing proxy would vanish."""
    pid = int((tmp / "nginx.pid").read_text())
    os.killpg(os.getpgid(pid), signal.SIGKILL)


async def wss(port: int, tls: Tls, **options) -> pb.Client:
    return await within(pb.connect(f"wss://localhost:{port}/pb", ssl=tls.client, **options))


async def test_calls_references_and_a_live_cache_through_nginx(tmp_path, tls):
    service = Service()
    async with serving(service, websocket_path="/pb") as server, nginx(tmp_path, tls, server.port) as port:
        async with await wss(port, tls) as one, await wss(port, tls) as two:
            root = await within(one.getRootObject())
            assert await within(root.callRemote("echo", "through nginx")) == "through nginx"
            big = b"\x5a" * (3 << 20)
            assert await within(root.callRemote("echo", big)) == big

            class Twicer(pb.Referenceable):
                def remote_twice(self, value):
                    return value * 2

            assert await within(root.callRemote("call_back", Twicer(), 4)) == 8
            copy = await within(root.callRemote("notes"))
            changed = asyncio.Event()
            copy.changed = lambda fields: changed.set()
            await within((await within(two.getRootObject())).callRemote("add", "via the proxy"))
            await within(changed.wait())
            assert copy.items == ["via the proxy"]
            # The broker saw WebSocket connections from nginx, TLS ending at the proxy.
            assert {c.transport.get_extra_info("websocket_path") for c in server.connections} == {"/pb"}
            assert all(c.transport.get_extra_info("ssl_object") is None for c in server.connections)
            del copy
            gc.collect()
    access = (tmp_path / "access.log").read_text()
    assert '"GET /pb HTTP/1.1" 101' in access


async def test_login_and_a_bad_password_through_nginx(tmp_path, tls):
    async with (
        serving(make_portal(), websocket_path="/pb") as server,
        nginx(tmp_path, tls, server.port) as port,
    ):
        async with await wss(port, tls) as client:
            avatar = await within(client.login(ALICE))
            assert await within(avatar.callRemote("whoami")) == "alice"
        async with await wss(port, tls) as client:
            with pytest.raises(UnauthorizedLogin):
                await within(client.login(UsernamePassword("alice", "nope")))


async def test_a_browser_page_served_by_the_proxy_is_same_origin(tmp_path, tls):
    """nginx passes the Host header on: a page from the proxy's own origin may connect, others not."""
    async with serving(Service(), websocket_path="/pb") as server, nginx(tmp_path, tls, server.port) as port:
        async with await wss(port, tls, origin=f"https://localhost:{port}") as client:
            assert await within((await within(client.getRootObject())).callRemote("echo", 1)) == 1
        with pytest.raises(pb.ProtocolError, match="403 Forbidden"):
            await wss(port, tls, origin="https://evil.example")


async def test_a_proxy_that_dies_mid_call_fails_the_call_and_the_server_serves_on(tmp_path, tls):
    class Slow(Service):
        def __init__(self):
            super().__init__()
            self.entered = asyncio.Event()
            self.release = asyncio.Event()

        async def remote_slow(self):
            self.entered.set()
            await self.release.wait()
            return b"late" * 500_000

    service = Slow()
    async with serving(service, websocket_path="/pb") as server:
        async with nginx(tmp_path, tls, server.port) as port:
            client = await wss(port, tls)
            root = await within(client.getRootObject())
            pending = asyncio.ensure_future(root.callRemote("slow"))
            await within(service.entered.wait())
            kill_proxy(tmp_path)
            with pytest.raises(pb.PBConnectionLost):
                await within(pending)
            assert not client.connected
            service.release.set()
            await within(until(lambda: not server.connections))
        # Others, direct or over WebSocket, are served on.
        async with await within(pb.connect(f"ws://127.0.0.1:{server.port}/pb")) as direct:
            assert await within((await within(direct.getRootObject())).callRemote("echo", "on")) == "on"


async def until(condition, step: float = 0.01) -> None:
    while not condition():
        await asyncio.sleep(step)
