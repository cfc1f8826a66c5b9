"""Blocking helpers: a script without a loop calls a server running in another thread's loop."""

import asyncio
import threading

import pytest

import pbnb as pb
from pbnb.aio import blocking


class Counter(pb.Root):
    def __init__(self):
        self.count = 0

    def remote_add(self, n):
        self.count += n
        return self.count

    def remote_child(self):
        return Child()

    def remote_fail(self):
        raise pb.Error("expected failure")


class Child(pb.Referenceable):
    def remote_name(self):
        return "child"


async def _close(server: pb.Server) -> None:
    await server.close()  # close() starts on the loop it is called from: call it there


@pytest.fixture
def server_port():
    """A pbnb server on its own loop thread, as if in another program."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(pb.serve(Counter()), loop).result(10)
    yield server.port
    asyncio.run_coroutine_threadsafe(_close(server), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_blocking_calls_return_answers_and_wrap_references(server_port):
    with blocking.connect("127.0.0.1", server_port, timeout=10) as client:
        root = client.getRootObject()
        assert root.callRemote("add", 2) == 2
        assert root.callRemote("add", 3) == 5
        child = root.callRemote("child")
        assert isinstance(child, blocking.BlockingReference)
        assert child.callRemote("name") == "child"


@pytest.mark.parametrize("scheme", ["ws", "pb"])
def test_blocking_connect_takes_a_url_like_connect(server_port, scheme):
    with blocking.connect(f"{scheme}://127.0.0.1:{server_port}/", timeout=10) as client:
        assert client.getRootObject().callRemote("add", 4) == 4


def test_blocking_call_raises_the_remote_error(server_port):
    with blocking.connect("127.0.0.1", server_port, timeout=10) as client:
        root = client.getRootObject()
        with pytest.raises(pb.RemoteError, match="expected failure"):
            root.callRemote("fail")


def test_blocking_connect_to_nothing_fails_clearly():
    with pytest.raises(ConnectionRefusedError, match="no pbnb server"):
        blocking.connect("127.0.0.1", 1, timeout=10)
