"""Promise pipelining: calls addressed to an answer still in flight (issue 17).

Sans-IO with a ConnectionPair (whole and byte by byte), then over loopback,
through a relay that logs every frame in the order it crossed, so "one round
trip" is checked by what crossed the wire, not by a clock.
"""

from __future__ import annotations

import asyncio
import gc
import struct

import msgpack
import pytest

import pbnb as pb
from pbnb.aio.connection import connection_of
from pbnb.core.wire import Kind
from tests.cache_helpers import empty_tables
from tests.core_net import TIMEOUT, serving
from tests.pair import ConnectionPair, Outcome


class Inbox(pb.Referenceable):
    def __init__(self, items):
        self.items = items

    def remote_count(self):
        return len(self.items)

    def remote_first(self):
        return self.items[0]


class User(pb.Referenceable):
    def __init__(self, name, log=None):
        self.name = name
        self.log = log if log is not None else []
        self.inbox = Inbox([f"hello {name}", "second"])

    def remote_inbox(self):
        return self.inbox

    def remote_note(self, n):
        self.log.append(n)
        return n


class Service(pb.Root):
    def __init__(self):
        self.log = []
        self.gate = None  # an asyncio.Event that slow_user waits for, when set

    def remote_user(self, name):
        return User(name, self.log)

    async def remote_slow_user(self, name):
        await self.gate.wait()
        return User(name, self.log)

    def remote_number(self):
        return 42

    def remote_boom(self):
        raise pb.Error("no such user")

    def remote_echo(self, value):
        return value


class Mine(pb.Referenceable):
    def __init__(self):
        self.pinged = 0

    def remote_ping(self):
        self.pinged += 1
        return "pong"


def pipeline(pair, broker, promise: Outcome, name, *args, **kwargs) -> Outcome:
    """``promise.callRemote(name, ...)`` on the sans-IO bench."""
    outcome = Outcome()
    outcome.request_id = broker.call_on_answer(promise.request_id, name, args, kwargs, outcome)
    return outcome


def frame_kinds(data: bytes) -> list[int]:
    kinds = []
    while data:
        body, head_len = struct.unpack_from(">IH", data)
        header = msgpack.unpackb(data[6 : 6 + head_len], strict_map_key=False)
        kinds.append(header[0])
        data = data[4 + body :]
    return kinds


# ----------------------------------------------------------------- sans-IO


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_a_chain_goes_out_at_once_and_every_table_ends_empty(byte_by_byte):
    pair = ConnectionPair(server_root=Service(), byte_by_byte=byte_by_byte).handshake()
    root = pair.root()
    user = root.callRemote("user", "ada")
    inbox = pipeline(pair, pair.client, user, "inbox")
    count = pipeline(pair, pair.client, inbox, "count")
    # The three calls are on the wire together, before any answer came back.
    sent = pair.client.data_to_send()
    assert frame_kinds(sent) == [Kind.CALL, Kind.PIPELINE, Kind.PIPELINE]
    pair.feed(pair.server, sent)
    pair.pump()
    assert count.result() == 2
    assert isinstance(inbox.result(), pb.RemoteReference)
    del user, inbox, count, root
    gc.collect()
    pair.pump()
    assert empty_tables(pair.client) and empty_tables(pair.server)


def test_calls_wait_on_an_answer_still_running_then_run_in_order():
    service = Service()
    pair = ConnectionPair(server_root=service).handshake()
    root = pair.root()
    pair.defer_calls = True
    user = root.callRemote("user", "ada")
    notes = [pipeline(pair, pair.client, user, "note", n) for n in range(5)]
    pair.pump()
    assert pair.server.table_sizes()["inbound_calls"] == 6  # user() and five waiting on it
    assert not service.log
    pair.defer_calls = False
    pair.run_deferred()
    assert [note.result() for note in notes] == list(range(5))
    assert service.log == list(range(5))


def test_a_call_on_an_answer_that_is_not_a_reference_names_what_it_was():
    pair = ConnectionPair(server_root=Service()).handshake()
    root = pair.root()
    number = root.callRemote("number")
    bad = pipeline(pair, pair.client, number, "count")
    pair.pump()
    assert number.result() == 42
    with pytest.raises(pb.PipelineError, match="int 42, not a reference"):
        bad.result()
    sizes = pair.client.table_sizes()
    assert sizes["pipelined_calls"] == sizes["promise_outcomes"] == 0


def test_calls_on_a_failed_answer_fail_with_that_same_error():
    pair = ConnectionPair(server_root=Service()).handshake()
    root = pair.root()
    failing = root.callRemote("boom")
    first = pipeline(pair, pair.client, failing, "inbox")
    second = pipeline(pair, pair.client, first, "count")
    pair.pump()
    original = failing.exception()
    assert isinstance(original, pb.RemoteError) and "no such user" in str(original)
    assert first.exception() is original
    assert second.exception() is original
    assert pair.client.table_sizes()["promise_outcomes"] == 0
    assert pair.client.table_sizes()["pipelined_calls"] == 0


def test_a_cancelled_waiting_call_never_runs_and_its_dependents_fail():
    service = Service()
    pair = ConnectionPair(server_root=service).handshake()
    root = pair.root()
    pair.defer_calls = True
    user = root.callRemote("user", "ada")
    note = pipeline(pair, pair.client, user, "note", 1)
    pair.pump()
    pair.client.cancel(note.request_id)
    pair.pump()
    pair.defer_calls = False
    pair.run_deferred()
    assert isinstance(user.result(), pb.RemoteReference)
    assert service.log == []  # the note never ran
    assert pair.server.table_sizes()["inbound_calls"] == 0


def test_held_answers_are_bounded_and_a_call_past_the_bound_fails_clearly():
    limits = pb.Limits(max_held_answers=1)
    pair = ConnectionPair(server_root=Service(), server_options={"limits": limits}).handshake()
    root = pair.root()
    pair.defer_calls = True
    users = [root.callRemote("user", name) for name in ("ada", "bob")]
    pair.transfer(pair.client)
    # The server answers both before the pipelined calls arrive: it can hold only one answer.
    deferred, pair.deferred = pair.deferred, []
    for broker, event in deferred:
        pair.run(broker, event)
    notes = [pipeline(pair, pair.client, user, "note", 1) for user in users]
    pair.defer_calls = False
    pair.pump()
    assert notes[0].result() == 1
    with pytest.raises(pb.LimitExceeded, match="max_held_answers"):
        notes[1].result()


def test_connection_lost_fails_every_link_and_empties_the_tables():
    pair = ConnectionPair(server_root=Service()).handshake()
    root = pair.root()
    pair.defer_calls = True
    user = root.callRemote("user", "ada")
    inbox = pipeline(pair, pair.client, user, "inbox")
    count = pipeline(pair, pair.client, inbox, "count")
    pair.pump()
    pair.disconnect()
    for link in (user, inbox, count):
        assert isinstance(link.exception(), pb.PBConnectionLost)
    sizes = pair.client.table_sizes()
    assert sizes["pipelined_calls"] == sizes["promise_outcomes"] == sizes["held_answers"] == 0
    assert pair.server.table_sizes()["held_answers"] == 0


def test_a_pipelined_call_needs_a_pending_promise():
    pair = ConnectionPair(server_root=Service()).handshake()
    root = pair.root()
    user = pair.call(root, "user", "ada")
    with pytest.raises(ValueError, match="not pending"):
        pipeline(pair, pair.client, user, "inbox")


# ---------------------------------------------------------------- loopback


class Relay:
    """A TCP relay between a client and a server that logs each frame's kind in crossing order."""

    def __init__(self, target_port: int, delay: float = 0.0):
        self.target_port = target_port
        self.delay = delay
        self.log: list[tuple[str, int]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pipe("up", client_reader, server_writer),
            self._pipe("down", server_reader, client_writer),
            return_exceptions=True,
        )

    async def _pipe(self, direction, reader, writer):
        buffer = b""
        preamble = 8
        try:
            while data := await reader.read(65536):
                buffer += data
                if preamble:
                    taken = min(preamble, len(buffer))
                    buffer, preamble = buffer[taken:], preamble - taken
                while len(buffer) >= 6:
                    body = struct.unpack_from(">I", buffer)[0]
                    if len(buffer) < 4 + body:
                        break
                    self.log.append((direction, frame_kinds(buffer[: 4 + body])[0]))
                    buffer = buffer[4 + body :]
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def close(self):
        self.server.close()


async def test_a_chain_of_three_costs_one_round_trip_through_a_relay():
    async with serving(Service()) as server:
        relay = Relay(server.port)
        port = await relay.start()
        async with await pb.connect("127.0.0.1", port) as client:
            root = await client.getRootObject()
            start = len(relay.log)
            count = root.callRemote("user", "ada").callRemote("inbox").callRemote("count")
            assert await asyncio.wait_for(count, TIMEOUT) == 2
            calls = (Kind.CALL, Kind.PIPELINE, Kind.ANSWER)  # not PING, DECREF, FINISH
            chain = [entry for entry in relay.log[start:] if entry[1] in calls]
            first_answer = chain.index(("down", Kind.ANSWER))
            assert chain[:first_answer] == [("up", Kind.CALL), ("up", Kind.PIPELINE), ("up", Kind.PIPELINE)]
        await relay.close()


async def test_attribute_style_and_fire_and_forget_on_a_promise():
    service = Service()
    async with serving(service) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        assert await root.remote.user("ada").remote.inbox().remote.first() == "hello ada"
        user = root.callRemote("user", "bob")
        user.callRemoteNoAnswer("note", "quiet")
        assert await user.callRemote("note", "loud") == "loud"
        assert service.log == ["quiet", "loud"]


async def test_e_order_calls_on_the_promise_run_before_calls_on_the_resolved_reference():
    service = Service()
    service.gate = asyncio.Event()
    async with serving(service) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        promise = root.callRemote("slow_user", "ada")
        early = [promise.callRemote("note", n) for n in (1, 2)]
        service.gate.set()
        user = await asyncio.wait_for(promise, TIMEOUT)
        late = [user.callRemote("note", 3), promise.callRemote("note", 4)]
        await asyncio.wait_for(asyncio.gather(*early, *late), TIMEOUT)
        assert service.log == [1, 2, 3, 4]


async def test_a_promise_of_our_own_object_runs_here_without_deadlock():
    mine = Mine()
    async with serving(Service()) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        promise = root.callRemote("echo", mine)
        pipelined = promise.callRemote("ping")  # goes to the server, which calls us back
        assert await asyncio.wait_for(pipelined, TIMEOUT) == "pong"
        assert await promise is mine
        assert await promise.callRemote("ping") == "pong"  # resolved: runs here
        assert mine.pinged == 2


async def test_errors_through_a_chain_and_a_never_awaited_failure_is_not_reported_as_lost(caplog):
    async with serving(Service()) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        with pytest.raises(pb.RemoteError, match="no such user"):
            await root.callRemote("boom").callRemote("inbox").callRemote("count")
        with pytest.raises(pb.PipelineError, match="int 42"):
            await root.callRemote("number").callRemote("count")
        gc.collect()
        await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_cancelling_a_link_cancels_what_depends_on_it():
    service = Service()
    service.gate = asyncio.Event()
    async with serving(service) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        promise = root.callRemote("slow_user", "ada")
        inbox = promise.callRemote("inbox")
        count = inbox.callRemote("count")
        promise.cancel()
        assert inbox.cancelled() and count.cancelled()
        service.gate.set()
        assert await asyncio.wait_for(root.callRemote("number"), TIMEOUT) == 42
        (side,) = server.connections
        await wait_for_empty(side.broker, client)


async def test_after_a_chain_every_answer_table_is_empty_on_both_sides():
    async with serving(Service()) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        for name in ("ada", "bob", "cy"):
            assert await root.callRemote("user", name).callRemote("inbox").callRemote("count") == 2
        (side,) = server.connections
        await wait_for_empty(side.broker, client)


async def test_a_lost_connection_fails_every_link():
    service = Service()
    service.gate = asyncio.Event()
    async with serving(service) as server:
        client = await pb.connect("127.0.0.1", server.port)
        root = await client.getRootObject()
        promise = root.callRemote("slow_user", "ada")
        links = [promise, promise.callRemote("inbox"), promise.callRemote("inbox").callRemote("count")]
        (side,) = server.connections
        side.abort()
        for link in links:
            with pytest.raises(pb.PBConnectionLost):
                await asyncio.wait_for(link, TIMEOUT)
        await client.close()


async def wait_for_empty(server_broker, client):
    """Collect, let DECREF and FINISH cross (two round trips), then check both sides' answer tables."""
    root = await client.getRootObject()
    client_broker = connection_of(root).broker
    for _ in range(2):
        gc.collect()
        await asyncio.wait_for(root.callRemote("number"), TIMEOUT)
    keys = ("held_answers", "awaited_answers", "pipelined_calls", "promise_outcomes", "inbound_calls")
    assert {k: server_broker.table_sizes()[k] for k in keys} == dict.fromkeys(keys, 0)
    assert {k: client_broker.table_sizes()[k] for k in keys} == dict.fromkeys(keys, 0)


async def test_the_notebook_shows_a_pending_chain_like_any_pending_call():
    from pbnb.notebook._widgets import FutureWidget, future_bundle

    service = Service()
    service.gate = asyncio.Event()
    async with serving(service) as server, await pb.connect("127.0.0.1", server.port) as client:
        root = await client.getRootObject()
        count = root.callRemote("slow_user", "ada").callRemote("inbox").callRemote("count")
        chain = f"count() on the answer of inbox() on the answer of slow_user() on {root!r}"
        assert future_bundle(count)["text/plain"] == f"<pending {chain}>"
        widget = FutureWidget(count)  # the live widget a kernel shows for it
        service.gate.set()
        assert await asyncio.wait_for(count, TIMEOUT) == 2
        assert future_bundle(count)["text/plain"] == f"<done {chain}: 2>"
        widget.close()


def test_a_call_cancelled_while_calls_wait_on_it_leaves_no_waiting_entry():
    pair = ConnectionPair(server_root=Service()).handshake()
    root = pair.root()
    pair.defer_calls = True
    user = root.callRemote("user", "ada")
    pair.client.call_on_answer(user.request_id, "note", (1,), {}, None, answer=False)
    inbox = pipeline(pair, pair.client, user, "inbox")
    pair.pump()
    pair.client.cancel(inbox.request_id)
    pair.client.cancel(user.request_id)
    pair.pump()
    # The callee's method ends after the cancel (its task was told to stop): it fails.
    (broker, event), *_ = pair.deferred
    broker.fail(event.request_id, RuntimeError("cancelled"))
    pair.drain(broker)
    pair.pump()
    assert pair.server.table_sizes()["inbound_calls"] == 0
    assert pair.server.table_sizes()["held_answers"] == 0
    assert pair.server.table_sizes()["awaited_answers"] == 0
