"""Client and server in separate processes, including a process killed mid-call."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from core_net import serving, within

import pbnb as pb

pytestmark = pytest.mark.slow

PROCS = Path(__file__).parent / "procs"
REPO = Path(__file__).parent.parent


@asynccontextmanager
async def process(script: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``tests/procs/<script>`` with this interpreter; kill it on the way out."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROCS / script), *args, stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await within(proc.wait())


async def next_line(proc: asyncio.subprocess.Process) -> str:
    """The process's next line of output; fails the test if none comes in time."""
    line = await within(proc.stdout.readline(), 30)
    assert line, f"the process exited with {await proc.wait()} before saying anything"
    return line.decode().strip()


@asynccontextmanager
async def server_process() -> AsyncIterator[tuple[asyncio.subprocess.Process, pb.RemoteReference]]:
    async with process("serve_root.py") as proc:
        word, port = (await next_line(proc)).split()
        assert word == "PORT"
        async with await pb.connect("127.0.0.1", int(port)) as client:
            yield proc, await within(client.getRootObject())


class Listener(pb.Referenceable):
    def remote_hear(self, value):
        return f"heard {value}"


async def test_calls_to_a_server_in_another_process():
    """Behaviours 3, 4 and 8 across processes: values, identity, callbacks."""
    async with server_process() as (proc, root):
        assert await within(root.callRemote("pid")) == proc.pid != os.getpid()
        shared = {"k": (1, 2**90)}
        got = await within(root.callRemote("echo", [shared, shared, {frozenset({1}), b"\x00"}]))
        assert got[0] is got[1] and got[0] == shared and got[2] == {frozenset({1}), b"\x00"}
        assert await within(root.callRemote("call_back", Listener(), 7)) == "heard 7"


async def test_server_process_killed_mid_call():
    """Behaviour 27 across processes: the survivor's pending call fails with PBConnectionLost."""
    async with server_process() as (proc, root):
        lost: list = []
        root.notifyOnDisconnect(lost.append)
        pending = root.callRemote("hang")
        assert await next_line(proc) == "HANGING"
        proc.kill()
        with pytest.raises(pb.PBConnectionLost):
            await within(pending)
        assert lost == [root]
        with pytest.raises(pb.DeadReferenceError):
            await within(root.callRemote("pid"))


class Host(pb.Root):
    def __init__(self):
        self.registered = asyncio.Event()
        self.listener = None

    async def remote_register(self, listener):
        return await listener.callRemote("hear", "welcome")

    def remote_register_hanging(self, listener):
        self.listener = listener
        self.registered.set()

    def remote_echo(self, value):
        return value


async def test_client_in_another_process():
    """The same points with the client in the other process: identity, cycles, callback."""
    async with serving(Host()) as server:
        async with process("call_server.py", str(server.port), "values") as proc:
            lines = [await next_line(proc) for _ in range(4)]
        assert lines == ["OK identity", "OK cycles", "OK callback", "DONE"]


async def test_client_process_killed_mid_call():
    """The server's pending call into a killed client fails; the connection's tables empty."""
    host = Host()
    async with serving(host) as server:
        async with process("call_server.py", str(server.port), "hang") as proc:
            await within(host.registered.wait())
            (connection,) = server.connections
            lost: list = []
            host.listener.notifyOnDisconnect(lost.append)
            pending = host.listener.callRemote("hear", "are you there?")
            assert await next_line(proc) == "HANGING"
            proc.kill()
            with pytest.raises(pb.PBConnectionLost):
                await within(pending)
            assert lost == [host.listener]
            await within(asyncio.shield(connection.closed))
            assert set(connection.broker.table_sizes().values()) == {0}
            assert server.connections == set()
