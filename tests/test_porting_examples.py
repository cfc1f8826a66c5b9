"""The porting suite: every pbnb port of a Twisted PB howto listing, run as real processes.

Each server starts on a free port (``0``) and says which; each client runs to
its end against it; both outputs are checked for what the listing prints.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest
from showcase_helpers import REPO

pytestmark = pytest.mark.slow  # every example runs as processes

EXAMPLES = REPO / "examples" / "porting"
_PORT = re.compile(r"(?:port |:)(\d+)\s*$")
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(REPO)]), "PYTHONUNBUFFERED": "1"}
TIMEOUT = 60.0


class Server:
    """A server program running in the background, its output read as it comes."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, lines: list[str]):
        self.process = process
        self.port = port
        self.lines = lines

    @classmethod
    async def start(cls, *args: str) -> Server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=EXAMPLES, env=_ENV,
        )  # fmt: skip
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
            if not raw:
                _, err = await process.communicate()
                raise AssertionError(f"{args} ended before listening: {lines} {err.decode()}")
            lines.append(raw.decode().rstrip("\n"))
            match = _PORT.search(lines[-1])
            if match:
                return cls(process, int(match[1]), lines)

    async def expect(self, *texts: str) -> None:
        """Read output until each of ``texts`` appeared in some line."""
        for text in texts:
            while not any(text in line for line in self.lines):
                raw = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
                assert raw, f"the server ended without printing {text!r}: {self.lines}"
                self.lines.append(raw.decode().rstrip("\n"))

    async def exited(self) -> tuple[int, str]:
        """Wait for the server to stop by itself; return its status and stderr."""
        out, err = await asyncio.wait_for(self.process.communicate(), TIMEOUT)
        self.lines.extend(out.decode().splitlines())
        return self.process.returncode, err.decode()

    async def stop(self) -> str:
        """Stop a server that serves forever; return its stderr."""
        if self.process.returncode is None:
            self.process.terminate()
        out, err = await asyncio.wait_for(self.process.communicate(), TIMEOUT)
        self.lines.extend(out.decode().splitlines())
        return err.decode()


async def served(*args: str) -> Server:
    """A server script (``name.py 0``) or a served module (``-m pbnb serve module:attr``)."""
    if ":" in args[0]:
        return await Server.start("-m", "pbnb", "serve", args[0], "--port", "0")
    return await Server.start(args[0], "0")


async def run_client(script: str, port: int, *args: str) -> list[str]:
    """Run a client to its end; return its output lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, script, str(port), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=EXAMPLES, env=_ENV,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0, f"{script} failed: {err.decode()}"
    assert "Traceback" not in err.decode(), err.decode()
    return out.decode().splitlines()


def has(lines: list[str], *texts: str) -> None:
    """Each of ``texts`` starts some line, in this order."""
    at = 0
    for text in texts:
        found = next((i for i in range(at, len(lines)) if lines[i].startswith(text)), None)
        assert found is not None, f"{text!r} missing (in order) from {lines}"
        at = found + 1


@pytest.fixture
async def servers():
    started: list[Server] = []

    async def start(*args: str) -> Server:
        started.append(await served(*args))
        return started[-1]

    yield start
    for server in started:
        await server.stop()


async def test_pbsimple(servers):
    server = await servers("pbsimple.py")
    has(await run_client("pbsimpleclient.py", server.port), "server echoed: hello network")
    await server.expect("echoing: hello network")


async def test_pb1_a_method_returns_a_reference(servers):
    server = await servers("pb1server.py")
    lines = await run_client("pb1client.py", server.port)
    has(
        lines,
        "got first object: <RemoteReference",
        "asking it to getTwo",
        "got second object: <RemoteReference",
        "telling it to do three(12)",
    )
    await server.expect("returning a Two called <__main__.Two", "Two.three was given 12")


async def test_pb1_reports_a_server_that_is_not_there():
    server = await served("pb1server.py")
    port = server.port
    await server.stop()
    has(await run_client("pb1client.py", port), "error getting first object")


async def test_pb2_a_reference_comes_home_as_the_original(servers):
    server = await servers("pb2server.py")
    has(await run_client("pb2client.py", server.port), "got one object:", "got two object:", "one is")
    await server.expect("One.checkTwo(): our twos are the same")


async def test_pb3_the_server_calls_the_client_back(servers):
    server = await servers("pb3server.py")
    has(await run_client("pb3client.py", server.port), "got One:", "Two.print() called with 12")
    await server.expect("received a Two called <RemoteReference", "telling it to print(12)")


async def test_pb5_pb6_each_user_gets_an_avatar(servers):
    server = await servers("pb6server.py")
    one, two = await asyncio.gather(
        run_client("pb6client.py", server.port, "user1", "pass1", "13"),
        run_client("pb6client.py", server.port, "user2", "pass2", "14"),
    )
    has(one, "got perspective ref: <RemoteReference", "asking it to foo(13)")
    has(two, "got perspective ref: <RemoteReference", "asking it to foo(14)")
    await server.expect("I am user1 perspective_foo( 13 )", "I am user2 perspective_foo( 14 )")


async def test_copy_a_copyable_arrives_as_its_remote_copy(servers):
    receiver = await servers("copy_receiver:root")
    lines = await run_client("copy_sender.py", receiver.port)
    has(lines, "7 frogs", "copy_sender.CopyPond", "pond arrived safe and sound")
    await receiver.expect(" got pond: <copy_receiver.ReceiverPond", "7 frogs")


async def test_copy_an_unregistered_copy_is_insecure_jelly(servers):
    receiver = await servers("copy2_receiver:root")  # it knows SenderPond, not CopyPond
    has(await run_client("copy_sender.py", receiver.port), "error during takePond:", " InsecureJelly")


async def test_copy2_the_sender_chooses_the_state(servers):
    receiver = await servers("copy2_receiver:root")
    has(await run_client("copy2_sender.py", receiver.port), "count 7", "pond arrived safe and sound")
    await receiver.expect(" got pond: <copy2_classes.ReceiverPond", " count 7")


async def test_cache_copies_follow_the_original_and_shutdown_stops_the_server(servers):
    receiver = await servers("cache_receiver:root")
    lines = await run_client("cache_sender.py", receiver.port)
    has(lines, "I have [2] ducks", "I have [3] ducks", "I have [2] ducks", "observers left: 0")
    status, err = await receiver.exited()  # remote_shutdown closed the server
    assert status == 0, err
    has(
        receiver.lines,
        " cache - sitting, er, setting ducks",
        "got pond: <cache_classes.DuckPondCache",
        "[2] ducks:  ['one duck', 'two duck']",
        " cache - addDuck",
        "[3] ducks:  ['one duck', 'two duck', 'ugly duckling']",
        " cache - removeDuck",
        "[2] ducks:  ['two duck', 'ugly duckling']",
        "dropping pond",
        "pbnb: stopped",
    )


async def test_chat_minds_avatars_and_viewables(servers):
    server = await servers("chatserver.py")
    has(
        await run_client("chatclient.py", server.port),
        "connected, joining group #NeedAFourth",
        "joined group, now sending a message to all members",
        "<alice> says: You can call me Al.",
    )


async def test_pbanon_two_logins_on_one_connection(servers):
    server = await servers("pbAnonServer.py")
    lines = await run_client("pbAnonClient.py", server.port)
    assert sum(line.startswith("got perspective1 ref: <RemoteReference") for line in lines) == 2
    await server.expect("I am Anonymous.  perspective_foo(13) called on", "I am user1.  perspective_foo(13)")


async def test_exc_expected_and_unexpected_errors(servers):
    server = await servers("exc_server.py")
    has(
        await run_client("exc_client.py", server.port, "broken"),
        "got remote Exception",
        " .__class__ = <class 'pbnb.errors.RemoteError'>",
        " .getErrorMessage() = fall down go boom",
        " .type = __main__.MyError",
    )
    has(
        await run_client("exc_client.py", server.port, "broken2"),
        " .getErrorMessage() = hadda owie",
        " .type = __main__.MyError2",
    )
    await server.expect("raising a MyError exception with data 'fall down go boom'", "raising a MyError2")
    err = await server.stop()
    assert "unhandled error in One.broken2" in err  # the unexpected one is logged as a crash
    assert "One.broken " not in err  # the pb.Error is not


async def test_trap_every_kind_of_failure(servers):
    server = await servers("trap_server:root")
    has(
        await run_client("trap_client.py", server.port),
        "callOne: call with safe object",
        " method successful, response: response",
        "callTwo: call with dangerous object",
        " InsecureJelly: you tried to send something unsafe to them",
        "callThree: call that raises remote exception",
        " remote raised a MyException",
        "telling them to shut down",
        "callFour: call on stale reference",
        " stale reference: the client disconnected or crashed",
    )
    status, err = await server.exited()
    assert status == 0, err


async def test_pbecho_login_and_trap(servers):
    pytest.importorskip("zope.interface")  # the realm keeps the original's @implementer(IRealm)
    server = await servers("pbecho:portal")
    has(
        await run_client("pbechoclient.py", server.port),
        "connected.",
        "Message received: hello world",
        "error received: <class 'pbecho.DefinedError'>",
    )
    await server.expect("echoing hello world", "logged out")
