"""``python -m pbnb serve`` and ``python -m pbnb demo`` in real subprocesses over loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trustme
from showcase_helpers import REPO, PbnbProcess

import pbnb as pb
from pbnb.cred import FilePasswordChecker, UnauthorizedLogin, UsernamePassword
from pbnb.demo import DEMO_USERS, RemoteCounter, RemoteRecord, RemoteTicker

pytestmark = pytest.mark.slow

SERVED_MODULE = textwrap.dedent(
    """
    import pbnb as pb
    from pbnb.cred import InMemoryPasswordChecker, IPerspective, Portal

    class Greeter(pb.Root):
        def __init__(self):
            self.calls = 0

        def remote_hello(self, name):
            self.calls += 1
            return f"hello {name} ({self.calls})"

        def remote_call_me(self, callback):
            return callback.callRemote("ping", 21)

    greeter = Greeter()


    class Member(pb.Avatar):
        def __init__(self, name):
            self.name = name

        def perspective_whoami(self):
            return self.name


    class Realm:
        def requestAvatar(self, name, mind, *interfaces):
            return IPerspective, Member(name), lambda: None


    checker = InMemoryPasswordChecker()
    checker.addUser("ada", "lovelace")
    portal = Portal(Realm(), [checker])
    """
)


@pytest.fixture
def served_module(tmp_path):
    (tmp_path / "greetings.py").write_text(SERVED_MODULE)
    return {"PYTHONPATH": str(tmp_path)}


class Doubler(pb.Referenceable):
    def remote_ping(self, x):
        return x * 2


async def hello_twice(port: int) -> list[str]:
    answers = []
    for _ in range(2):
        async with await pb.connect("127.0.0.1", port) as client:
            root = await client.getRootObject()
            answers.append(await root.callRemote("hello", "ada"))
    return answers


async def test_serve_an_instance_then_ctrl_c_exits_cleanly(served_module):
    server = await PbnbProcess.start("serve", "greetings:greeter", "--port", "0", env=served_module)
    try:
        async with await pb.connect(server.host, server.port) as client:
            root = await client.getRootObject()
            assert await root.callRemote("hello", "ada") == "hello ada (1)"
            assert await root.callRemote("call_me", Doubler()) == 42
        # One instance serves everyone: its state carries over to the next client.
        assert await hello_twice(server.port) == ["hello ada (2)", "hello ada (3)"]
        status, out, err = await server.stop(signal.SIGINT)
    finally:
        await server.kill()
    assert status == 0, err
    assert "pbnb: stopped" in out
    assert "connection from 127.0.0.1" in err
    assert "Traceback" not in err


async def test_serve_a_factory_gives_each_connection_its_own_root(served_module):
    server = await PbnbProcess.start("serve", "greetings:Greeter", "--port", "0", env=served_module)
    try:
        assert await hello_twice(server.port) == ["hello ada (1)", "hello ada (1)"]
        status, _, err = await server.stop(signal.SIGTERM)
    finally:
        await server.kill()
    assert status == 0, err


async def test_serve_a_portal_requires_a_login(served_module):
    server = await PbnbProcess.start("serve", "greetings:portal", "--port", "0", env=served_module)
    try:
        async with await pb.connect(server.host, server.port) as client:
            with pytest.raises(UnauthorizedLogin):
                await client.login(UsernamePassword("ada", "babbage"))
            ada = await client.login(UsernamePassword("ada", "lovelace"))
            assert await ada.callRemote("whoami") == "ada"
        status, _, err = await server.stop(signal.SIGINT)
    finally:
        await server.kill()
    assert status == 0, err
    assert "'ada' logged in" in err


async def test_serve_with_max_connections_turns_the_extra_client_away(served_module):
    server = await PbnbProcess.start(
        "serve", "greetings:greeter", "--port", "0", "--max-connections", "1", env=served_module
    )
    try:
        async with await pb.connect(server.host, server.port) as client:
            with pytest.raises(pb.ServerFull, match=r"is full \(max_connections=1\)"):
                await pb.connect(server.host, server.port, timeout=30)
            root = await client.getRootObject()
            assert await root.callRemote("hello", "ada") == "hello ada (1)"
        status, _, err = await server.stop(signal.SIGINT)
    finally:
        await server.kill()
    assert status == 0, err
    assert err.count("refused connection from 127.0.0.1") == 1
    result = run_pbnb("serve", "greetings:greeter", "--max-connections", "0", env=served_module)
    assert result.returncode == 2
    assert "at least 1" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "greetings:greeter", "--port", "70000"], "0 to 65535"),
        (["demo", "--port", "x"], "0 to 65535"),
    ],
)
def test_a_bad_port_is_refused_before_anything_starts(served_module, args, message):
    result = run_pbnb(*args, env=served_module)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("greetings", "expected MODULE:ATTR"),
        ("no_such_module:x", "No module named"),
        ("greetings:nope", "nope"),
    ],
)
def test_serve_rejects_a_bad_target_with_a_useful_message(served_module, target, message):
    result = run_pbnb("serve", target, "--port", "0", env=served_module)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


class Listener(pb.Referenceable):
    def __init__(self):
        self.counts = []

    def remote_count(self, n):
        self.counts.append(n)


async def test_demo_broker_serves_callbacks_copies_and_live_caches():
    # The import log on stderr shows every module the demo server ever loaded.
    server = await PbnbProcess.start("demo", "--port", "0", env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        async with (
            await pb.connect(server.host, server.port) as alice,
            await pb.connect(server.host, server.port) as bob,
        ):
            root_a = await alice.getRootObject()
            root_b = await bob.getRootObject()
            listener = Listener()
            assert await root_a.callRemote("countdown", listener, 3) == "liftoff"
            assert listener.counts == [3, 2, 1]

            records = await root_a.callRemote("records")
            assert all(isinstance(r, RemoteRecord) for r in records)
            assert records[0].name == "ada"
            with pytest.raises(pb.InsecureJelly):
                await root_a.callRemote("gadget")

            ticker = await root_a.callRemote("ticker")
            assert isinstance(ticker, RemoteTicker)
            moved = asyncio.get_running_loop().create_future()
            ticker.observe(lambda change: moved.done() or moved.set_result(change.new), names="count")
            assert await asyncio.wait_for(moved, 10) >= 1

            counter_b = await root_b.callRemote("counter")
            assert isinstance(counter_b, RemoteCounter)
            seen = asyncio.get_running_loop().create_future()
            counter_b.observe(lambda change: seen.done() or seen.set_result(counter_b.last_by), names="value")
            start = counter_b.value
            assert await root_a.callRemote("increment", 5, by="alice") == start + 5
            assert await asyncio.wait_for(seen, 10) == "alice"
            assert counter_b.value == start + 5

            # A copy is writable: bob sets the value, alice's copy follows.
            counter_a = await root_a.callRemote("counter")
            followed = asyncio.get_running_loop().create_future()
            counter_a.observe(
                lambda change: followed.done() or followed.set_result(change.new), names="value"
            )
            counter_b.value = 1000
            assert await asyncio.wait_for(followed, 10) == 1000
        status, _, err = await server.stop(signal.SIGINT)
    finally:
        await server.kill()
    assert status == 0, err
    lines = [line for line in err.splitlines() if line.startswith("import time:")]
    imported = {line.rpartition("|")[2].strip() for line in lines}
    assert "pbnb.demo_service" in imported and "msgpack" in imported
    # A demo server (even one whose copies are written to by peers) is a plain asyncio program.
    assert not {"traitlets", "ipywidgets", "IPython"} & imported


class Mind(pb.Referenceable):
    def __init__(self):
        self.inbox = asyncio.Queue()

    def remote_message(self, sender, text):
        self.inbox.put_nowait((sender, text))


async def next_message_from(mind: Mind, sender: str) -> tuple[str, str]:
    while True:
        message = await asyncio.wait_for(mind.inbox.get(), 10)
        if message[0] == sender:
            return message


async def test_demo_broker_chat_pushes_messages_to_every_logged_in_mind():
    server = await PbnbProcess.start("demo", "--port", "0")
    try:
        async with (
            await pb.connect(server.host, server.port) as a,
            await pb.connect(server.host, server.port) as b,
        ):
            alice_mind, bob_mind = Mind(), Mind()
            alice = await a.login(UsernamePassword("alice", DEMO_USERS["alice"]), alice_mind)
            bob = await b.login(UsernamePassword("bob", DEMO_USERS["bob"]), bob_mind)
            assert await bob.callRemote("who") == ["alice", "bob"]
            assert await alice.callRemote("say", "hi bob") == 2
            assert await next_message_from(bob_mind, "alice") == ("alice", "hi bob")
            with pytest.raises(UnauthorizedLogin):
                await a.login(UsernamePassword("bob", "not bob's password"))
            # The demo calls still work on the same port as the login.
            assert await (await a.getRootObject()).callRemote("add", 2, 3) == 5
        status, _, err = await server.stop(signal.SIGINT)
    finally:
        await server.kill()
    assert status == 0, err


def run_pbnb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pbnb", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def test_passwd_subcommand_writes_a_password_file_the_checker_accepts(tmp_path):
    users = tmp_path / "users.txt"
    result = run_pbnb("passwd", str(users), "alice", "--password-env", "PW", env={"PW": "s3cret"})
    assert result.returncode == 0, result.stderr
    secret = FilePasswordChecker(users).secret_for("alice")
    assert secret is not None and secret.matches("s3cret") and not secret.matches("guess")
    assert "s3cret" not in users.read_text()


def test_help_lists_the_subcommands():
    result = run_pbnb("--help")
    assert result.returncode == 0
    for command in ("serve", "demo", "passwd"):
        assert command in result.stdout


async def test_a_busy_port_is_reported_without_a_traceback(served_module):
    first = await PbnbProcess.start("serve", "greetings:greeter", "--port", "0", env=served_module)
    try:
        result = await asyncio.to_thread(
            run_pbnb, "serve", "greetings:greeter", "--port", str(first.port), env=served_module
        )
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{first.port}" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        await first.kill()


async def test_serve_over_tls_with_a_certificate_file(served_module, tmp_path):
    authority = trustme.CA()
    certificate = authority.issue_cert("localhost")
    certificate.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    server = await PbnbProcess.start(
        "serve",
        "greetings:greeter",
        "--port",
        "0",
        "--certfile",
        str(tmp_path / "server.pem"),
        env=served_module,
    )
    try:
        async with await pb.connect(
            server.host, server.port, ssl=client_context, server_hostname="localhost"
        ) as client:
            root = await client.getRootObject()
            assert await root.callRemote("hello", "tls") == "hello tls (1)"
        with pytest.raises(pb.ProtocolError, match="requires TLS"):  # a plain client is told why
            await pb.connect(server.host, server.port, timeout=5)
        status, _, err = await server.stop(signal.SIGINT)
    finally:
        await server.kill()
    assert status == 0, err


def test_a_missing_certificate_is_reported(served_module, tmp_path):
    result = run_pbnb(
        "serve",
        "greetings:greeter",
        "--port",
        "0",
        "--certfile",
        str(tmp_path / "nope.pem"),
        env=served_module,
    )
    assert result.returncode == 2
    assert "cannot use the TLS certificate" in result.stderr


async def test_the_pbnb_script_serves_a_module_from_the_current_directory(tmp_path):
    (tmp_path / "greetings.py").write_text(SERVED_MODULE)
    script = Path(sys.executable).with_name("pbnb")
    process = await asyncio.create_subprocess_exec(
        str(script), "serve", "greetings:greeter", "--port", "0", cwd=tmp_path, stdout=asyncio.subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        port = int(line.decode().rsplit(":", 1)[1])
        async with await pb.connect("127.0.0.1", port) as client:
            assert await (await client.getRootObject()).callRemote("hello", "cwd") == "hello cwd (1)"
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


LOOP_MODULE = textwrap.dedent(
    """
    import asyncio

    import pbnb as pb

    class LoopRoot(pb.Root):
        def remote_loop(self):
            return type(asyncio.get_running_loop()).__module__

    root = LoopRoot()
    """
)


@pytest.mark.parametrize("uvloop_importable", [True, False], ids=["with-uvloop", "without"])
async def test_serve_runs_on_uvloop_when_it_is_installed(tmp_path, uvloop_importable):
    pytest.importorskip("uvloop")  # the speed extra
    (tmp_path / "looping.py").write_text(LOOP_MODULE)
    if not uvloop_importable:  # shadows the installed package, as if it were missing
        (tmp_path / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    server = await PbnbProcess.start("serve", "looping:root", "--port", "0", env=env)
    try:
        async with await pb.connect(server.host, server.port) as client:
            root = await client.getRootObject()
            loop_module = await root.callRemote("loop")
        status, _out, err = await server.stop(signal.SIGTERM)
    finally:
        await server.kill()
    assert status == 0, err
    if uvloop_importable:
        assert loop_module == "uvloop" and "event loop: uvloop" in err
    else:
        assert loop_module.startswith("asyncio") and "event loop: asyncio" in err
