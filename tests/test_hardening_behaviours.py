"""pb-behaviours 38-40: keepalive and reconnect, cancellation, collection after close."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from core_net import connected

import pbnb as pb
from pbnb.aio.reconnect import backoff_delays
from pbnb.core.wire import PREAMBLE, Kind, decode_header, encode_frame

# A hang detector, not an assertion: generous, so a loaded 2-core CI machine never trips it.
WAIT = 60.0


class Account(pb.Referenceable):
    def __init__(self, server_name: str, user: str):
        self.server_name = server_name
        self.user = user

    def remote_whoami(self) -> str:
        return f"{self.user}@{self.server_name}"


class Gate(pb.Root):
    """A root with a login method: stands in for a Portal in reconnect tests."""

    def __init__(self, name: str):
        self.name = name
        self.logins: list[str] = []

    def remote_login(self, user: str) -> Account:
        if user == "mallory":
            raise pb.Error("unknown user")
        self.logins.append(user)
        return Account(self.name, user)


async def login_as(client: pb.Client, user: str = "ada") -> pb.RemoteReference:
    root = await client.getRootObject()
    return await root.callRemote("login", user)


async def silent_peer(received: list[bytes]) -> asyncio.Server:
    """A server that completes the handshake, then never says another word."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": 1 << 20}]))
        while chunk := await reader.read(65536):
            received.append(chunk)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def kinds_sent(stream: bytes) -> list[int]:
    """The message kinds in a captured byte stream (preamble first)."""
    kinds, pos = [], len(PREAMBLE)
    while pos + 4 <= len(stream):
        body = int.from_bytes(stream[pos : pos + 4], "big")
        header = decode_header(stream[pos + 6 : pos + 6 + int.from_bytes(stream[pos + 4 : pos + 6], "big")])
        kinds.append(header[0])
        pos += 4 + body
    return kinds


# ------------------------------------------------------------------ 38: keepalive


async def test_keepalive_detects_a_silent_server_and_fails_pending_calls():
    received: list[bytes] = []
    listener = await silent_peer(received)
    port = listener.sockets[0].getsockname()[1]
    client = await pb.connect("127.0.0.1", port, keepalive=0.05, dead_peer_timeout=0.3)
    # The silent server exports nothing, so make a reference by hand to call it.
    ref = pb.RemoteReference(client.broker, 1)
    pending = ref.callRemote("anything")
    await asyncio.wait_for(client.wait_closed(), WAIT)
    with pytest.raises(pb.PBConnectionLost, match="silent"):
        await pending
    assert Kind.PING in kinds_sent(b"".join(received)), "the client never pinged"
    with pytest.raises(pb.DeadReferenceError):
        await ref.callRemote("anything")
    assert client.broker.table_sizes()["pending_calls"] == 0
    listener.close()
    await listener.wait_closed()


async def test_keepalive_on_the_server_drops_a_silent_client():
    server = await pb.serve(Gate("s"), keepalive=0.05, dead_peer_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": 1 << 20}]))
    await reader.readexactly(len(PREAMBLE))
    (connection,) = server.connections
    # Never answer pings: the server must hang up on its own.
    await asyncio.wait_for(asyncio.shield(connection.closed), WAIT)
    assert isinstance(connection.close_reason, pb.PBConnectionLost)
    assert not server.connections
    assert all(size == 0 for size in connection.broker.table_sizes().values())
    writer.close()
    await server.close()


async def test_keepalive_keeps_a_quiet_but_alive_peer_connected():
    server = await pb.serve(Gate("s"), keepalive=0.05, dead_peer_timeout=1.0)
    client = await pb.connect("127.0.0.1", server.port, keepalive=0.05, dead_peer_timeout=1.0)
    account = await login_as(client)
    (connection,) = server.connections
    # Pings flow both ways while nobody calls anything: after 25 ping periods,
    # longer than the dead-peer timeout, both ends must still be up.
    while client.connection._ping_token < 25 or connection._ping_token < 25:
        await asyncio.sleep(0.02)
        assert client.connected and not connection.closed.done()
    assert await account.callRemote("whoami") == "ada@s"
    await client.close()
    await server.close()


def test_backoff_grows_to_the_cap_and_jitter_only_shortens():
    delays = backoff_delays(initial=0.1, maximum=1.0, factor=2.0, jitter=0.5)
    bounds = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for bound in bounds:
        delay = next(delays)
        assert bound * 0.5 <= delay <= bound
    spread = {round(next(backoff_delays(1.0, 1.0, 2.0, 0.5)), 6) for _ in range(20)}
    assert len(spread) > 1, "jitter must spread the first retry"
    with pytest.raises(ValueError):
        next(backoff_delays(jitter=2))


async def test_reconnecting_client_logs_in_again_and_old_references_die():
    first = await pb.serve(Gate("one"))
    port = first.port
    seen: list[pb.ReconnectStatus] = []
    reconnecting = pb.ReconnectingClient(
        "127.0.0.1", port, login=login_as, initial_delay=0.01, max_delay=0.05
    )
    reconnecting.watch(seen.append)
    async with reconnecting:
        old = await asyncio.wait_for(reconnecting.root(), WAIT)
        assert await old.callRemote("whoami") == "ada@one"
        assert reconnecting.status is pb.ReconnectStatus.CONNECTED

        await first.close()
        await asyncio.wait_for(reconnecting.wait_for(pb.ReconnectStatus.WAITING), WAIT)
        with pytest.raises(pb.DeadReferenceError):
            await old.callRemote("whoami")

        second = await pb.serve(Gate("two"), port=port)
        await asyncio.wait_for(reconnecting.wait_for(pb.ReconnectStatus.CONNECTED), WAIT)
        new = await reconnecting.root()
        assert await new.callRemote("whoami") == "ada@two"
        assert second.root.logins == ["ada"]
        # The old reference never reaches the new server, even though it is up.
        with pytest.raises(pb.DeadReferenceError):
            await old.callRemote("whoami")
        assert reconnecting.connections == 2
    assert reconnecting.status is pb.ReconnectStatus.CLOSED
    assert seen[0] is pb.ReconnectStatus.CONNECTING
    assert seen[-1] is pb.ReconnectStatus.CLOSED
    assert seen.count(pb.ReconnectStatus.CONNECTED) == 2
    assert pb.ReconnectStatus.WAITING in seen
    await asyncio.wait_for(_until(lambda: not second.connections), WAIT)
    await second.close()


async def test_reconnecting_client_reconnects_after_keepalive_finds_the_server_silent():
    received: list[bytes] = []
    listener = await silent_peer(received)
    port = listener.sockets[0].getsockname()[1]
    attempts = 0

    async def login(client: pb.Client) -> pb.RemoteReference:
        nonlocal attempts
        attempts += 1
        if attempts == 1:  # the silent server cannot answer: hand back a reference by hand
            return pb.RemoteReference(client.broker, 1)
        return await login_as(client)

    reconnecting = pb.ReconnectingClient(
        "127.0.0.1", port, login=login, initial_delay=0.01, keepalive=0.05, dead_peer_timeout=0.5
    )
    async with reconnecting:
        await asyncio.wait_for(reconnecting.wait_for(pb.ReconnectStatus.CONNECTED), WAIT)
        listener.close()  # the next attempt finds a real server on the same port
        await listener.wait_closed()
        server = await pb.serve(Gate("real"), port=port)
        await asyncio.wait_for(reconnecting.wait_for(pb.ReconnectStatus.WAITING), WAIT)
        assert isinstance(reconnecting.last_error, pb.PBConnectionLost)
        await asyncio.wait_for(reconnecting.wait_for(pb.ReconnectStatus.CONNECTED), WAIT)
        account = await reconnecting.root()
        assert await account.callRemote("whoami") == "ada@real"
    await server.close()


async def test_reconnecting_client_gives_up_when_login_is_refused():
    server = await pb.serve(Gate("s"))
    reconnecting = pb.ReconnectingClient(
        "127.0.0.1", server.port, login=lambda client: login_as(client, "mallory"), initial_delay=0.01
    )
    async with reconnecting:
        with pytest.raises(pb.RemoteError, match="unknown user"):
            await asyncio.wait_for(reconnecting.root(), WAIT)
        assert reconnecting.status is pb.ReconnectStatus.FAILED
    await asyncio.wait_for(_until(lambda: not server.connections), WAIT)
    await server.close()


async def test_reconnecting_client_stops_after_max_attempts():
    probe = await pb.serve(Gate("gone"))
    port = probe.port
    await probe.close()
    reconnecting = pb.ReconnectingClient("127.0.0.1", port, initial_delay=0.001, max_attempts=3)
    async with reconnecting:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(reconnecting.root(), WAIT)
        assert reconnecting.status is pb.ReconnectStatus.FAILED


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------- 39: cancelling


class Worker(pb.Root):
    def __init__(self):
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.finished = 0

    async def remote_wait(self):
        self.started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def remote_echo(self, value):
        self.finished += 1
        return value


async def test_cancelling_a_call_cancels_the_remote_coroutine():
    worker = Worker()
    async with connected(worker) as session:
        call = session.root.callRemote("wait")
        await asyncio.wait_for(worker.started.wait(), WAIT)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(worker.cancelled.wait(), WAIT)
        assert await session.root.callRemote("echo", 5) == 5  # the connection carries on
        assert session.server_side.broker.table_sizes()["inbound_calls"] == 0
        assert session.client.broker.table_sizes()["pending_calls"] == 0
        assert not session.server_side._tasks


async def test_a_timeout_around_a_call_tells_the_peer():
    worker = Worker()
    async with connected(worker) as session:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(session.root.callRemote("wait"), 0.05)
        await asyncio.wait_for(worker.cancelled.wait(), WAIT)


async def test_cancelling_after_the_answer_left_is_harmless():
    worker = Worker()
    async with connected(worker) as session:
        root = session.root
        # Cancel many calls the server answers at once: answers and CANCELs cross on the wire.
        calls = [root.callRemote("echo", i) for i in range(200)]
        await asyncio.sleep(0)
        for call in calls[::2]:
            call.cancel()
        results = await asyncio.gather(*calls[1::2])
        assert results == list(range(1, 200, 2))
        assert await root.callRemote("echo", "still fine") == "still fine"
        assert session.server_side.broker.table_sizes()["inbound_calls"] == 0
        assert session.client.broker.table_sizes()["pending_calls"] == 0


# ------------------------------------------------------------- 40: collection


class Note(pb.Cacheable):
    def __init__(self):
        self.observers = []

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {"text": "hi"}

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)


class NoteCopy(pb.RemoteCache):
    def setCopyableState(self, state):
        self.text = state["text"]


pb.setUnjellyableForClass(Note, NoteCopy)


class Hub(pb.Root):
    def __init__(self):
        self.note = Note()
        self.callbacks = []

    def remote_share(self):
        return [Account("hub", "x"), self.note]

    def remote_hold(self, callback):
        self.callbacks.append(callback)
        return len(self.callbacks)

    async def remote_wait(self):
        await asyncio.get_running_loop().create_future()


async def test_brokers_and_connections_are_collected_after_close():
    hub = Hub()
    # Keepalive on, so its timers are part of what must not keep anything alive.
    server = await pb.serve(hub, keepalive=0.05, dead_peer_timeout=10)
    client = await pb.connect("127.0.0.1", server.port, keepalive=0.05, dead_peer_timeout=10)
    root = await client.getRootObject()
    account, note = await root.callRemote("share")
    assert await account.callRemote("whoami") == "x@hub"
    assert await root.callRemote("hold", Account("client", "y")) == 1
    pending = root.callRemote("wait")
    (connection,) = server.connections
    watched = [weakref.ref(obj) for obj in (connection, connection.broker, client.connection, client.broker)]
    await client.close()
    with pytest.raises(pb.PBConnectionLost):
        await pending
    await asyncio.wait_for(asyncio.shield(connection.closed), WAIT)
    await server.close()
    assert not hub.note.observers
    del connection, client, root, account, note, pending
    hub.callbacks.clear()  # the application's own references are its business
    await asyncio.sleep(0)  # let the loop drop handles it already ran
    gc.collect()
    alive = [ref() for ref in watched if ref() is not None]
    assert not alive, f"still alive after close: {alive}: {[gc.get_referrers(a) for a in alive]}"


# ------------------------------------------------------- 38: re-login via a Portal


class Member(pb.Avatar):
    def __init__(self, name: str, server_name: str):
        self.name = name
        self.server_name = server_name

    def perspective_whoami(self) -> str:
        return f"{self.name}@{self.server_name}"


class Club:
    """A realm that counts logins and logouts."""

    def __init__(self, name: str):
        self.name = name
        self.logins = 0
        self.logouts = 0

    def requestAvatar(self, avatar_id, mind, *interfaces):
        self.logins += 1

        def logout() -> None:
            self.logouts += 1

        return interfaces[0], Member(avatar_id, self.name), logout


async def test_reconnecting_client_logs_in_through_a_portal_after_a_restart():
    from pbnb.cred import InMemoryPasswordChecker, Portal, UsernamePassword

    def portal(realm: Club) -> Portal:
        return Portal(realm, [InMemoryPasswordChecker(ada="lovelace", iterations=4096)])

    first_realm, second_realm = Club("one"), Club("two")
    first = await pb.serve(portal(first_realm))
    port = first.port
    reconnecting = pb.ReconnectingClient(
        "127.0.0.1",
        port,
        login=lambda client: client.login(UsernamePassword("ada", "lovelace")),
        initial_delay=0.01,
        max_delay=0.05,
    )
    async with reconnecting:
        old = await asyncio.wait_for(reconnecting.root(), WAIT)
        assert await old.callRemote("whoami") == "ada@one"
        await first.close()
        await asyncio.wait_for(reconnecting.wait_for(pb.ReconnectStatus.WAITING), WAIT)
        assert first_realm.logouts == 1
        second = await pb.serve(portal(second_realm), port=port)
        await asyncio.wait_for(reconnecting.wait_for(pb.ReconnectStatus.CONNECTED), WAIT)
        new = await reconnecting.root()
        assert await new.callRemote("whoami") == "ada@two"
        with pytest.raises(pb.DeadReferenceError):
            await old.callRemote("whoami")
    assert second_realm.logins == 1
    await asyncio.wait_for(_until(lambda: second_realm.logouts == 1), WAIT)
    await second.close()


async def test_a_status_watcher_can_stop_watching_and_a_failing_one_harms_nothing():
    server = await pb.serve(Gate("s"))
    seen: list[pb.ReconnectStatus] = []

    def broken(status: pb.ReconnectStatus) -> None:
        raise RuntimeError("a broken status widget")

    reconnecting = pb.ReconnectingClient("127.0.0.1", server.port)
    reconnecting.watch(broken)
    unwatch = reconnecting.watch(seen.append)
    await asyncio.wait_for(reconnecting.root(), WAIT)
    unwatch()
    unwatch()  # twice is harmless
    await reconnecting.close()
    assert seen == [pb.ReconnectStatus.CONNECTING, pb.ReconnectStatus.CONNECTED]
    assert "closed" in repr(reconnecting)
    await server.close()


async def test_a_reconnecting_client_lets_its_old_connections_be_collected():
    server = await pb.serve(Gate("s"))
    port = server.port
    reconnecting = pb.ReconnectingClient("127.0.0.1", port, initial_delay=0.01, max_delay=0.05)
    async with reconnecting:
        await asyncio.wait_for(reconnecting.root(), WAIT)
        old = weakref.ref(reconnecting.client.connection)
        old_broker = weakref.ref(reconnecting.client.broker)
        await server.close()
        await asyncio.wait_for(reconnecting.wait_for(pb.ReconnectStatus.WAITING), WAIT)
        server = await pb.serve(Gate("s"), port=port)
        await asyncio.wait_for(reconnecting.wait_for(pb.ReconnectStatus.CONNECTED), WAIT)
        await asyncio.sleep(0)
        gc.collect()
        assert old() is None and old_broker() is None
    await server.close()


async def test_a_login_that_never_answers_counts_as_a_failed_attempt():
    received: list[bytes] = []
    listener = await silent_peer(received)
    port = listener.sockets[0].getsockname()[1]
    reconnecting = pb.ReconnectingClient(
        "127.0.0.1", port, login=login_as, login_timeout=0.1, initial_delay=0.01, max_attempts=2
    )
    async with reconnecting:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reconnecting.root(), WAIT)
        assert reconnecting.status is pb.ReconnectStatus.FAILED
    assert received, "the client never asked the silent server for anything"
    listener.close()
    await listener.wait_closed()
