"""Remote streams over loopback (issue 16): a generator's items, flow control, every way a stream ends."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

import pbnb as pb
from pbnb.aio import blocking
from pbnb.aio.connection import connection_of
from pbnb.aio.websocket import WebSocketTransport
from pbnb.core import events as ev
from pbnb.core.broker import Broker
from pbnb.core.wire import Kind, encode_frame
from pbnb.cred import InMemoryPasswordChecker, IPerspective, Portal, UsernamePassword
from tests.cache_helpers import Board, BoardCopy, empty_tables
from tests.core_net import TIMEOUT, connected, serving, within
from tests.ws_helpers import ws_client, ws_serving, ws_url


class Row(pb.Referenceable):
    def __init__(self, n):
        self.n = n

    def remote_n(self):
        return self.n


class Shortfall(pb.Error, pb.Copyable):
    def __init__(self, needed):
        super().__init__(f"need {needed} more")
        self.needed = needed


class ShortfallCopy(pb.RemoteCopy, Exception):
    pass


pb.setUnjellyableForClass(Shortfall, ShortfallCopy)


class Feed(pb.Root):
    """Streams of every kind, with what the server saw of them."""

    def __init__(self):
        self.produced = 0
        self.closed = asyncio.Event()  # set by the generators' finally
        self.shared = Row(-1)

    async def remote_count(self, n, start=0):
        try:
            for i in range(start, start + n):
                self.produced += 1
                yield i
        finally:
            self.closed.set()

    def remote_plain(self, n):
        yield from (f"row {i}" for i in range(n))

    async def remote_forever(self, size=1):
        try:
            i = 0
            while True:
                self.produced += 1
                yield b"x" * size if size > 1 else i
                i += 1
        finally:
            self.closed.set()

    @pb.survives_disconnect
    async def remote_slow(self):
        try:
            yield "first"
            await asyncio.Event().wait()  # never: only a close or a cancel gets it out
        finally:
            self.closed.set()

    async def remote_fails_after(self, n):
        for i in range(n):
            yield i
        raise pb.Error(f"row {n} is broken")

    async def remote_crashes(self):
        yield 1
        raise ZeroDivisionError("division by zero in the generator")

    async def remote_references(self):
        yield Row(1)
        yield self.shared
        yield [self.shared, self.shared]
        yield self.shared

    def remote_unsendable(self):
        yield 1
        yield object()

    def remote_value(self):
        return 42

    async def remote_boards(self):
        yield self.board
        yield {"again": self.board}

    async def remote_short(self):
        yield 1
        raise Shortfall(3)

    def remote_busy(self):
        """Never waits: only the pump's own turns let the loop run meanwhile."""
        while True:
            self.produced += 1
            yield self.produced


async def test_async_for_over_a_call_iterates_an_async_generator_and_the_tables_empty():
    feed = Feed()
    async with connected(feed) as s:
        items = [item async for item in s.root.callRemote("count", 5, start=10)]
        assert items == [10, 11, 12, 13, 14]
        await within(feed.closed.wait())
        assert empty_tables_but_root(s)


async def test_a_plain_generator_streams_too():
    async with connected(Feed()) as s:
        assert [row async for row in s.root.callRemote("plain", 3)] == ["row 0", "row 1", "row 2"]


async def test_awaiting_a_streaming_call_gives_a_remote_iterator_to_read_later():
    async with connected(Feed()) as s:
        iterator = await within(s.root.callRemote("count", 3))
        assert isinstance(iterator, pb.RemoteIterator)
        assert iterator.method == "count"
        assert iterator.received == 0
        assert [item async for item in iterator] == [0, 1, 2]
        assert iterator.received == 3
        assert iterator.done
        assert [item async for item in iterator] == []  # over: iterating again gives nothing


async def test_iterating_a_call_that_is_not_a_stream_says_so():
    async with connected(Feed()) as s:
        with pytest.raises(TypeError, match=r"value\(\) answered int 42, not a stream"):
            async for _ in s.root.callRemote("value"):
                pass
        assert await s.root.callRemote("value") == 42  # the call itself is fine
        with pytest.raises(pb.NoSuchMethod):
            async for _ in s.root.callRemote("missing"):
                pass
        assert empty_tables_but_root(s)


async def test_an_exception_mid_stream_arrives_after_the_items_before_it():
    async with connected(Feed()) as s:
        received = []
        with pytest.raises(pb.RemoteError) as caught:
            async for item in s.root.callRemote("fails_after", 3):
                received.append(item)
        assert received == [0, 1, 2]
        assert caught.value.check(pb.Error)
        assert caught.value.getErrorMessage() == "row 3 is broken"
        received.clear()
        with pytest.raises(pb.RemoteError, match="division by zero") as caught:
            async for item in s.root.callRemote("crashes"):
                received.append(item)
        assert received == [1]
        assert caught.value.check(ZeroDivisionError)
        assert empty_tables_but_root(s)


async def test_an_item_that_cannot_be_sent_fails_the_stream_there():
    async with connected(Feed()) as s:
        received = []
        with pytest.raises(pb.InsecureJelly, match=r"builtins\.object"):
            async for item in s.root.callRemote("unsendable"):
                received.append(item)
        assert received == [1]
        assert empty_tables_but_root(s)


async def test_items_keep_identity_and_references():
    feed = Feed()
    async with connected(feed) as s:
        items = [item async for item in s.root.callRemote("references")]
        first, shared, pair, shared_again = items
        assert isinstance(first, pb.RemoteReference)
        assert await first.callRemote("n") == 1
        assert pair[0] is pair[1]  # identity within one item
        assert shared is shared_again is pair[0]  # one reference per object on the connection
        assert await shared.callRemote("n") == -1
        server_side = s.server_side.broker
        assert server_side.table_sizes()["exports"] == 3  # the root, Row(1), the shared row
        del items, first, shared, pair, shared_again
        gc.collect()
        for _ in range(100):
            if server_side.table_sizes()["exports"] == 1:
                break
            await asyncio.sleep(0.02)
        assert server_side.table_sizes()["exports"] == 1


async def test_aclose_stops_the_remote_generator_and_runs_its_finally():
    feed = Feed()
    async with connected(feed) as s:
        iterator = await s.root.callRemote("forever")
        assert await anext(iterator) == 0
        await iterator.aclose()
        assert iterator.done
        await within(feed.closed.wait())
        with pytest.raises(StopAsyncIteration):
            await anext(iterator)
        await settle(s)


async def test_break_stops_the_remote_generator():
    feed = Feed()
    async with connected(feed) as s:
        async for item in s.root.callRemote("forever"):
            if item == 1000:
                break
        await within(feed.closed.wait())  # the iterator was dropped with the loop
        await settle(s)


async def test_dropping_an_iterator_stops_the_remote_generator():
    feed = Feed()
    async with connected(feed) as s:
        iterator = await s.root.callRemote("slow")
        assert await anext(iterator) == "first"
        del iterator
        gc.collect()
        await within(feed.closed.wait())
        await settle(s)


async def test_cancelling_the_consuming_task_stops_the_remote_generator():
    feed = Feed()
    async with connected(feed) as s:
        received = []
        started = asyncio.Event()

        async def consume(iterator):
            async for item in iterator:
                received.append(item)
                started.set()

        iterator = await s.root.callRemote("slow")
        task = asyncio.ensure_future(consume(iterator))
        await within(started.wait())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert iterator.done  # still held here, yet closed: its reader was cancelled
        await within(feed.closed.wait())
        assert received == ["first"]
        await settle(s)


async def test_a_lost_connection_fails_the_reader_and_closes_the_remote_generator():
    """Even for a method marked survives_disconnect: that keeps a call running, never a stream."""
    feed = Feed()
    async with connected(feed) as s:
        iterator = await s.root.callRemote("slow")
        assert await anext(iterator) == "first"
        connection_of(s.root).abort()
        with pytest.raises(pb.PBConnectionLost):
            await within(anext(iterator))
        await within(feed.closed.wait())
        assert iterator.done
        assert empty_tables(connection_of(s.root).broker)


async def test_a_slow_reader_holds_a_bounded_window_on_both_sides():
    feed = Feed()
    async with connected(feed) as s:
        iterator = await s.root.callRemote("forever").window(items=50, bytes=1 << 20)
        for expected in range(5):
            assert await anext(iterator) == expected
            # Let the producer run as far as it may: it is held at the window.
            await quiet(lambda: feed.produced)
            assert feed.produced <= iterator.received + 50
            assert iterator.queued <= 50
        await iterator.aclose()
        await within(feed.closed.wait())
        await settle(s)


async def test_a_reader_widens_the_window_of_a_running_stream():
    feed = Feed()
    async with connected(feed) as s:
        iterator = await s.root.callRemote("forever").window(items=10)
        assert await anext(iterator) == 0
        await quiet(lambda: feed.produced)
        assert feed.produced <= 11
        assert iterator.window(items=100) is iterator
        for _ in range(int(TIMEOUT / 0.01)):  # more credit went at once: the producer goes on
            if feed.produced > 11:
                break
            await asyncio.sleep(0.01)
        await quiet(lambda: feed.produced)
        assert 11 < feed.produced <= 101
        await iterator.aclose()
        await within(feed.closed.wait())


async def test_the_byte_window_bounds_large_items():
    feed = Feed()
    async with connected(feed) as s:
        size = 100_000
        iterator = await s.root.callRemote("forever", size).window(items=1000, bytes=4 * size)
        assert len(await anext(iterator)) == size
        await quiet(lambda: feed.produced)
        # At most four items' worth of bytes granted ahead (the last may overshoot by one),
        # whether they wait here, in flight, or in the server's send buffer.
        assert feed.produced <= iterator.received + 5
        assert iterator.queued <= 5
        assert s.server_side.transport.get_write_buffer_size() <= 5 * (size + 64)
        assert connection_of(s.root).broker.table_sizes()["streams_receiving"] == 1
        await iterator.aclose()
        await within(feed.closed.wait())


async def test_a_window_beyond_the_limits_is_refused_locally():
    async with connected(Feed()) as s:
        with pytest.raises(pb.LimitExceeded, match="max_stream_window"):
            s.root.callRemote("count", 3).window(items=10**9)
        with pytest.raises(ValueError, match="positive"):
            s.root.callRemote("count", 3).window(items=0)


async def test_many_items_flow_without_a_round_trip_each():
    feed = Feed()
    async with connected(feed) as s:
        n = 20_000
        total = 0
        async for item in s.root.callRemote("count", n):
            total += item
        assert total == n * (n - 1) // 2
        assert empty_tables_but_root(s)


async def test_streams_go_over_websocket_alike():
    feed = Feed()
    async with ws_serving(feed, "ws", None) as server, ws_client(ws_url(server, "ws"), None) as client:
        assert isinstance(client.connection.transport, WebSocketTransport)
        root = await within(client.getRootObject())
        assert [item async for item in root.callRemote("count", 1000)] == list(range(1000))
        async for item in root.callRemote("forever"):
            if item == 10:
                break
        await within(feed.closed.wait())


def test_the_blocking_client_reads_a_stream_with_a_plain_for_loop():
    feed = Feed()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(pb.serve(feed, host="127.0.0.1", port=0), loop).result(TIMEOUT)
    try:
        with blocking.connect("127.0.0.1", server.port, timeout=TIMEOUT) as client:
            root = client.getRootObject()
            assert list(root.callRemote("plain", 3)) == ["row 0", "row 1", "row 2"]
            rows = root.callRemote("references")
            assert isinstance(rows, blocking.BlockingIterator)
            first = next(rows)
            assert isinstance(first, blocking.BlockingReference) and first.callRemote("n") == 1
            assert rows.received == 1
            with root.callRemote("forever") as endless:
                assert next(endless) == 0
            assert endless.done
            assert asyncio.run_coroutine_threadsafe(within(feed.closed.wait()), loop).result(TIMEOUT)
    finally:
        asyncio.run_coroutine_threadsafe(close(server), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


async def test_a_cacheable_yielded_arrives_as_a_cache_and_is_released_after():
    board = Board("live")
    feed = Feed()
    feed.board = board
    async with connected(feed) as s:
        first, again = [item async for item in s.root.callRemote("boards")]
        assert isinstance(first, BoardCopy) and first.text == "live"
        assert again["again"] is first  # one copy per connection
        del first, again
        gc.collect()
        await within(board.wait_stopped())
        await settle(s)


async def test_a_registered_exception_mid_stream_arrives_as_its_copy():
    async with connected(Feed()) as s:
        received = []
        with pytest.raises(ShortfallCopy) as caught:
            async for item in s.root.callRemote("short"):
                received.append(item)
        assert received == [1] and caught.value.needed == 3


async def test_a_generator_that_never_waits_still_lets_the_loop_turn():
    feed = Feed()
    async with connected(feed) as s:
        window = 50_000
        iterator = await s.root.callRemote("busy").window(items=window, bytes=1 << 26)
        assert await anext(iterator) == 1
        # The answer comes while the generator still has credit: it yields the loop now and then.
        assert await within(s.root.callRemote("value")) == 42
        assert feed.produced < window
        await iterator.aclose()


async def test_streams_per_connection_are_limited_and_the_connection_carries_on():
    feed = Feed()
    async with connected(feed, server_options={"max_streams": 1}) as s:
        first = await s.root.callRemote("slow")
        with pytest.raises(pb.LimitExceeded, match="max_streams"):
            async for _ in s.root.callRemote("count", 3):
                pass
        assert await anext(first) == "first"
        await first.aclose()
        await within(feed.closed.wait())
        await settle(s)
        assert [item async for item in s.root.callRemote("count", 2)] == [0, 1]


async def test_a_peer_sending_items_without_credit_fails_that_stream_only():
    """A server whose broker is real but whose driver forges ITEM frames past the credit."""
    forged = asyncio.Event()

    async def handle(reader, writer):
        broker = Broker(Feed())
        writer.write(broker.data_to_send())
        while data := await reader.read(65536):
            broker.receive_data(data)
            for event in broker.next_events():
                if isinstance(event, ev.CallReceived) and event.name == "forever":
                    broker.open_stream(event.request_id)
                    writer.write(broker.data_to_send())  # STREAM, then items it has no credit for
                    for i in range(10):  # the window below is 4 items
                        writer.write(encode_frame([Kind.ITEM, event.request_id, 0], bytes([i])))
                    forged.set()
                elif isinstance(event, ev.CallReceived):
                    broker.answer(event.request_id, event.method(*event.args, **event.kwargs))
            writer.write(broker.data_to_send())
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        client = await pb.connect("127.0.0.1", listener.sockets[0].getsockname()[1])
        async with client:
            root = await within(client.getRootObject())
            received = []
            with pytest.raises(pb.ProtocolError, match="beyond its credit"):
                async for item in root.callRemote("forever").window(items=4, bytes=1000):
                    received.append(item)
            assert received == [0, 1, 2, 3]
            assert forged.is_set()
            assert await within(root.callRemote("value")) == 42  # the connection survives
            assert all(
                count == 0
                for key, count in client.connection.broker.table_sizes().items()
                if key != "imports"
            )
    finally:
        listener.close()


class Shelf(pb.Viewable):
    def view_titles(self, perspective, n):
        for i in range(n):
            yield f"{perspective.name}'s title {i}"


class Reader(pb.Avatar):
    def __init__(self, name, shelf):
        self.name = name
        self.shelf = shelf

    async def perspective_history(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield (pb.current_perspective.get().name, i)  # each step acts for this avatar

    def perspective_shelf(self):
        return self.shelf


class Library:
    def __init__(self):
        self.shelf = Shelf()

    def requestAvatar(self, avatar_id, mind, *interfaces):
        return IPerspective, Reader(avatar_id, self.shelf), lambda: None


async def test_perspective_and_view_generators_stream_for_the_user_who_called():
    portal = Portal(Library(), [InMemoryPasswordChecker({"ada": "pw", "bob": "pw"})])
    async with serving(portal) as server:
        ada_client = await pb.connect("127.0.0.1", server.port)
        bob_client = await pb.connect("127.0.0.1", server.port)
        async with ada_client, bob_client:
            ada = await within(ada_client.login(UsernamePassword("ada", "pw")))
            bob = await within(bob_client.login(UsernamePassword("bob", "pw")))
            assert [item async for item in ada.callRemote("history", 2)] == [("ada", 0), ("ada", 1)]
            ada_shelf = await ada.callRemote("shelf")
            bob_shelf = await bob.callRemote("shelf")
            # Interleaved on one server, each generator keeps its own caller.
            ada_titles, bob_titles = await asyncio.gather(
                collect(ada_shelf.callRemote("titles", 2)), collect(bob_shelf.callRemote("titles", 2))
            )
            assert ada_titles == ["ada's title 0", "ada's title 1"]
            assert bob_titles == ["bob's title 0", "bob's title 1"]


# ----------------------------------------------------------------- helpers


async def collect(stream):
    return [item async for item in stream]


def empty_tables_but_root(s) -> bool:
    """Both sides' tables are empty but for the client's reference to the root (and its export)."""
    client = connection_of(s.root).broker.table_sizes()
    server = s.server_side.broker.table_sizes()
    return all(v == (1 if k == "imports" else 0) for k, v in client.items()) and all(
        v == (1 if k == "exports" else 0) for k, v in server.items()
    )


async def close(server) -> None:
    await server.close()  # close() starts on the loop it is called from: call it there


async def quiet(value, turns: int = 20) -> None:
    """Wait until ``value()`` stops changing for a few loop turns (a bound, not a timing)."""
    last, still = value(), 0
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while still < turns and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
        current = value()
        still = still + 1 if current == last else 0
        last = current


async def settle(s) -> None:
    """Wait until every stream table on both sides is empty again."""
    for _ in range(int(TIMEOUT / 0.01)):
        if empty_tables_but_root(s):
            return
        await asyncio.sleep(0.01)
    assert empty_tables_but_root(s), (
        connection_of(s.root).broker.table_sizes(),
        s.server_side.broker.table_sizes(),
    )
