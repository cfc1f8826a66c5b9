"""Blocking helpers: a script without a loop calls a server running in another thread's loop."""

import asyncio
import concurrent.futures
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

    async def remote_work(self, total):
        """Report once, then wait for ``release`` (or be cancelled)."""
        self.released = asyncio.Event()
        self.cancelled = asyncio.Event()
        pb.progress(1, total, "first step")
        try:
            await self.released.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "finished"

    def remote_release(self):
        self.released.set()

    async def remote_was_cancelled(self):
        await asyncio.wait_for(self.cancelled.wait(), 10)
        return True

    async def remote_rows(self, n):
        for i in range(n):
            yield i
            if i == 0:
                pb.progress(1, n, "first row out")


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


def test_a_started_call_shows_progress_then_answers(server_port):
    with blocking.connect("127.0.0.1", server_port, timeout=10) as client:
        root = client.getRootObject()
        call = root.start("work", 4)
        assert isinstance(call, blocking.BlockingCall) and "work()" in repr(call)
        reports, reported = [], threading.Event()
        call.on_progress(lambda progress: (reports.append(progress), reported.set()))
        assert reported.wait(10)
        assert reports == [pb.Progress(1, 4, "first step")]
        assert call.progress == pb.Progress(1, 4, "first step")
        assert not call.done()
        with pytest.raises(TimeoutError):
            call.result(timeout=0)  # not in yet; the call goes on
        root.callRemote("release")
        assert call.result() == "finished" and call.done()
        late = threading.Event()
        call.on_progress(lambda progress: late.set())  # a report in hand is handed on
        assert late.wait(10)


def test_a_started_call_can_be_cancelled_and_the_server_hears_it(server_port):
    with blocking.connect("127.0.0.1", server_port, timeout=10) as client:
        root = client.getRootObject()
        call = root.start("work", 2)
        reported = threading.Event()
        call.on_progress(lambda progress: reported.set())
        assert reported.wait(10)
        assert call.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            call.result()
        assert root.callRemote("was_cancelled") is True
        assert root.callRemote("add", 1) == 1  # the connection goes on


def test_a_started_call_that_fails_raises_from_result(server_port):
    with blocking.connect("127.0.0.1", server_port, timeout=10) as client:
        call = client.getRootObject().start("fail")
        with pytest.raises(pb.RemoteError, match="expected failure"):
            call.result()
        assert call.progress is None


def test_a_blocking_stream_shows_its_generators_progress(server_port):
    with blocking.connect("127.0.0.1", server_port, timeout=10) as client:
        rows = client.getRootObject().callRemote("rows", 3)
        assert isinstance(rows, blocking.BlockingIterator)
        reported = threading.Event()
        rows.on_progress(lambda progress: reported.set())
        assert list(rows) == [0, 1, 2]
        assert rows.progress == pb.Progress(1, 3, "first row out")
        assert reported.wait(10)
