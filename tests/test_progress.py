"""pb.progress over loopback: reports reach the caller, rate-limited, from methods, tasks and threads."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

import pbnb as pb
from pbnb.core.progress import INTERVAL
from pbnb.core.wire import Kind
from tests.core_net import TIMEOUT, connected, serving, within
from tests.test_pipelining import Relay

MILLION = 1_000_000


class Worker(pb.Root):
    def __init__(self):
        self.release = asyncio.Event()
        self.thread_release = threading.Event()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()

    async def remote_count(self, n):
        """Report ``n`` times in a tight loop, then wait for the test to let it answer."""
        for i in range(1, n + 1):
            pb.progress(i, n, "counting")
        await self.release.wait()
        return n

    def remote_plain(self, n):
        for i in range(1, n + 1):
            pb.progress(i, n)
        return "plain"

    async def remote_in_thread(self, n):
        def work():
            for i in range(1, n + 1):
                pb.progress(i, n, "in a thread")
            self.thread_release.wait(TIMEOUT)
            return "threaded"

        return await asyncio.to_thread(work)

    async def remote_in_task(self):
        async def child():
            pb.progress(1, 1, "from a task")
            await self.release.wait()

        await asyncio.create_task(child())
        return "tasked"

    async def remote_until_cancelled(self):
        self.started.set()
        try:
            i = 0
            while True:
                i += 1
                pb.progress(i)
                await asyncio.sleep(0.001)
        finally:
            self.stopped.set()

    async def remote_rows(self, n):
        """A generator that reports as it goes, then waits for the test before it ends."""
        for i in range(n):
            yield i
            pb.progress(i + 1, n, "rows")
        await self.release.wait()

    def remote_quiet(self):
        return "quiet"

    def remote_note(self):
        pb.progress(1, 1, "nobody waits")


def reached(future: pb.CallFuture, done: float) -> asyncio.Event:
    """An event set once ``future`` has reported at least ``done``."""
    event = asyncio.Event()

    def check(progress: pb.Progress) -> None:
        if progress.done >= done:
            event.set()

    future.on_progress(check)
    return event


@asynccontextmanager
async def relayed(worker: Worker) -> AsyncIterator[tuple[pb.RemoteReference, Relay]]:
    """A client connected to ``worker`` through a relay that logs the kind of every frame."""
    async with serving(worker) as server:
        relay = Relay(server.port)
        port = await relay.start()
        try:
            async with await pb.connect("127.0.0.1", port) as client:
                yield await within(client.getRootObject()), relay
        finally:
            await relay.close()


def progress_frames(relay: Relay) -> int:
    return relay.log.count(("down", Kind.PROGRESS))


async def test_a_million_reports_cost_few_frames_and_the_last_one_arrives():
    worker = Worker()
    async with relayed(worker) as (root, relay):
        seen: list[pb.Progress] = []
        started = time.monotonic()
        future = root.callRemote("count", MILLION)
        future.on_progress(seen.append)
        # The last report is held back by the rate limit, then sent: the method waits for it.
        await within(reached(future, MILLION).wait())
        elapsed = time.monotonic() - started
        worker.release.set()
        assert await within(future) == MILLION
        assert progress_frames(relay) == len(seen)
    assert future.progress == pb.Progress(MILLION, MILLION, "counting")
    assert seen[-1] == future.progress and future.progress.fraction == 1.0
    # One frame per interval at most: the whole run could not have carried more.
    assert len(seen) <= elapsed / INTERVAL + 2
    assert [p.done for p in seen] == sorted(p.done for p in seen)


async def test_a_plain_method_reports_at_once_and_its_answer_supersedes_the_rest():
    async with connected(Worker()) as session:
        seen: list[pb.Progress] = []
        future = session.root.callRemote("plain", 1000)
        future.on_progress(seen.append)
        assert await within(future) == "plain"
        # The first report went at once, during the method; the rest were held back
        # by the rate limit, and the answer made them moot.
        assert seen and seen[0] == pb.Progress(1, 1000)
        assert future.progress == seen[-1]
        await asyncio.sleep(2 * INTERVAL)  # a held-back report would go now: it must not
        assert future.progress == seen[-1]


async def test_reports_from_a_worker_thread_and_from_a_task():
    worker = Worker()
    async with connected(worker) as session:
        threaded = session.root.callRemote("in_thread", 500)
        await within(reached(threaded, 500).wait())
        assert threaded.progress == pb.Progress(500, 500, "in a thread")
        worker.thread_release.set()
        assert await within(threaded) == "threaded"

        tasked = session.root.callRemote("in_task")
        await within(reached(tasked, 1).wait())
        assert tasked.progress.message == "from a task"
        worker.release.set()
        assert await within(tasked) == "tasked"


async def test_each_call_gets_its_own_reports():
    worker = Worker()
    async with connected(worker) as session:
        small = session.root.callRemote("count", 3)
        large = session.root.callRemote("count", 7)
        await within(asyncio.gather(reached(small, 3).wait(), reached(large, 7).wait()))
        assert (small.progress.total, large.progress.total) == (3, 7)
        worker.release.set()
        assert await within(asyncio.gather(small, large)) == [3, 7]


async def test_a_callback_that_raises_is_logged_and_the_others_still_run(caplog):
    worker = Worker()
    async with connected(worker) as session:
        future = session.root.callRemote("count", 10)

        def broken(progress):
            raise RuntimeError("callback bug")

        future.on_progress(broken)
        done = reached(future, 10)
        with caplog.at_level(logging.ERROR, logger="pbnb"):
            await within(done.wait())
        assert any("progress callback" in r.message and r.exc_info for r in caplog.records)
        worker.release.set()
        assert await within(future) == 10


async def test_a_callback_added_late_gets_the_latest_report_soon():
    worker = Worker()
    async with connected(worker) as session:
        future = session.root.callRemote("count", 4)
        await within(reached(future, 4).wait())
        late: asyncio.Future[pb.Progress] = asyncio.get_running_loop().create_future()
        future.on_progress(late.set_result)
        assert not late.done()  # called in a later loop turn, like add_done_callback
        assert await within(late) == pb.Progress(4, 4, "counting")
        worker.release.set()
        await within(future)


async def test_a_call_that_never_reports_costs_nothing():
    async with connected(Worker()) as session:
        future = session.root.callRemote("quiet")
        assert await within(future) == "quiet"
        assert future.progress is None
        assert not hasattr(future, "_progress") and not hasattr(future, "_progress_callbacks")


async def test_cancelling_stops_the_reports_and_leaves_no_entry():
    worker = Worker()
    async with connected(worker) as session:
        future = session.root.callRemote("until_cancelled")
        await within(reached(future, 3).wait())
        future.cancel()
        await within(worker.stopped.wait())
        assert (await within(session.root.callRemote("quiet"))) == "quiet"  # the connection is fine
        sizes = session.server_side.broker.table_sizes()
        assert sizes["inbound_calls"] == 0 and sizes["pending_calls"] == 0
        assert session.client.broker.table_sizes()["pending_calls"] == 0


async def test_a_call_that_wants_no_answer_sends_no_report():
    async with relayed(Worker()) as (root, relay):
        root.callRemoteNoAnswer("note")
        assert await within(root.callRemote("plain", 1)) == "plain"  # ran after note
        assert progress_frames(relay) == 1  # plain's, not note's


def test_outside_a_remote_call_it_does_nothing_but_still_checks_its_arguments():
    pb.progress(1, 2, "local use")
    pb.progress(0.5)
    with pytest.raises(TypeError, match="progress done must be a real number"):
        pb.progress("1")
    with pytest.raises(ValueError, match="progress total must be finite"):
        pb.progress(1, float("inf"))
    with pytest.raises(TypeError, match="progress message must be a str"):
        pb.progress(1, 2, message=3)


async def test_a_generators_reports_reach_its_iterator_and_the_calls_callbacks():
    worker = Worker()
    async with connected(worker) as session:
        from_call: list[pb.Progress] = []
        call = session.root.callRemote("rows", 2000)
        call.on_progress(from_call.append)  # given before the call answered with a stream
        rows = await within(call)
        assert isinstance(rows, pb.RemoteIterator)
        from_iterator: list[pb.Progress] = []
        rows.on_progress(from_iterator.append)
        seen = [row async for row in _first(rows, 2000)]
        assert seen == list(range(2000))
        last = asyncio.Event()
        rows.on_progress(lambda progress: progress.done == 2000 and last.set())
        await within(last.wait())  # held back by the rate limit, then sent before the end
        assert rows.progress == call.progress == pb.Progress(2000, 2000, "rows")
        assert from_iterator and from_iterator[-1] == rows.progress
        assert from_call[-1] == rows.progress  # the call's callbacks went on with its stream
        worker.release.set()
        assert [row async for row in rows] == []  # then it ends


async def _first(rows: pb.RemoteIterator, n: int):
    async for row in rows:
        yield row
        n -= 1
        if not n:
            return


async def test_a_thread_that_outlives_its_loop_may_still_report():
    outlived = threading.Event()
    errors: list[BaseException] = []

    def late_reports() -> None:
        outlived.wait(TIMEOUT)
        try:
            pb.progress(1, 2, "the caller, its connection and its loop are gone")
        except BaseException as exc:
            errors.append(exc)

    class Spawner(pb.Root):
        def remote_spawn(self) -> str:
            served = contextvars.copy_context()  # the call's context, as to_thread passes it on
            self.thread = threading.Thread(target=served.run, args=(late_reports,))
            self.thread.start()
            return "spawned"

    spawner = Spawner()
    await asyncio.to_thread(_serve_once, spawner)  # a loop of its own, closed when it returns
    outlived.set()
    spawner.thread.join(TIMEOUT)
    assert not errors


def _serve_once(root: pb.Root) -> None:
    async def main() -> None:
        async with connected(root) as session:
            assert await within(session.root.callRemote("spawn")) == "spawned"

    asyncio.run(main())
