"""The chat example: a server and two clients exchanging messages through it (minds get pushes)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from core_net import within

from pbnb.cred import UnauthorizedLogin
from pbnb.cred.passwd import set_password

CHAT = Path(__file__).resolve().parent.parent / "examples" / "chat"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"chat_{name}", CHAT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _start(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def _read_line(process: asyncio.subprocess.Process) -> str:
    line = await within(process.stdout.readline())
    assert line, f"process ended: {(await process.stderr.read()).decode()}"
    return line.decode().rstrip("\n")


@pytest.fixture
async def chat_server(tmp_path):
    users = tmp_path / "users.txt"
    set_password(users, "alice", "alice's secret")
    set_password(users, "bob", "bob's secret")
    server = await _start(str(CHAT / "server.py"), "--users", str(users), "--port", "0")
    try:
        match = re.search(r"on (\S+):(\d+)", await _read_line(server))
        assert match, "the chat server did not print its address"
        yield match[1], int(match[2])
    finally:
        server.send_signal(signal.SIGTERM)
        await within(server.communicate())
        assert server.returncode == 0


async def test_two_clients_chat_through_the_server(chat_server) -> None:
    host, port = chat_server
    client_module = _load("client")
    bob_heard: asyncio.Queue[str] = asyncio.Queue()
    bob = await within(
        client_module.ChatClient.join(
            host, port, "bob", "bob's secret", "lobby", client_module.ChatWindow(bob_heard.put_nowait)
        )
    )
    try:
        assert await within(bob_heard.get()) == "[lobby] *: bob joined"
        alice = await _start(
            str(CHAT / "client.py"),
            "alice",
            "--port",
            str(port),
            env={"PBNB_CHAT_PASSWORD": "alice's secret"},
        )
        assert await _read_line(alice) == "[lobby] *: alice joined"
        assert await _read_line(alice) == "chat: joined lobby as alice"
        assert await within(bob_heard.get()) == "[lobby] *: alice joined"
        assert await within(bob.who()) == ["alice", "bob"]

        alice.stdin.write(b"hello bob\n")
        await alice.stdin.drain()
        assert await within(bob_heard.get()) == "[lobby] alice: hello bob"
        assert await _read_line(alice) == "[lobby] alice: hello bob"

        assert await within(bob.say("hi alice")) == 2
        assert await _read_line(alice) == "[lobby] bob: hi alice"
        assert await within(bob_heard.get()) == "[lobby] bob: hi alice"

        alice.stdin.close()  # Ctrl-D: alice disconnects, her logout leaves the room
        await within(alice.wait())
        assert alice.returncode == 0
        assert await within(bob_heard.get()) == "[lobby] *: alice left"
        assert await within(bob.who()) == ["bob"]
    finally:
        await bob.close()


async def test_a_wrong_password_is_refused(chat_server) -> None:
    host, port = chat_server
    client_module = _load("client")
    with pytest.raises(UnauthorizedLogin):
        await within(
            client_module.ChatClient.join(host, port, "bob", "guess", "lobby", client_module.ChatWindow())
        )
    alice = await _start(
        str(CHAT / "client.py"), "alice", "--port", str(port), env={"PBNB_CHAT_PASSWORD": "no"}
    )
    _, err = await within(alice.communicate())
    assert alice.returncode == 1 and "wrong user name or password" in err.decode()
