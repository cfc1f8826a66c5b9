"""Connections over real loopback sockets: pb-behaviours.md items 27-30, and TLS."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme
from core_net import connected, released, serving, within

import pbnb as pb
from pbnb.core.wire import MAGIC, PREAMBLE, Kind, encode_frame


class Waiter(pb.Root):
    def __init__(self):
        self.started = asyncio.Event()
        self.listener = None

    async def remote_wait_forever(self):
        self.started.set()
        await asyncio.Event().wait()

    def remote_echo(self, value):
        return value

    def remote_subscribe(self, listener):
        self.listener = listener

    async def remote_call_back(self, value):
        return await self.listener.callRemote("hear", value)


class Listener(pb.Referenceable):
    def __init__(self):
        self.heard: list = []
        self.waiting = asyncio.Event()

    async def remote_wait(self):
        self.waiting.set()
        await asyncio.Event().wait()

    def remote_hear(self, value):
        self.heard.append(value)
        return value


class LogWatch(logging.Handler):
    """Sets an event when the pbnb logger emits a record containing ``text``."""

    def __init__(self, text: str):
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()

    def __enter__(self) -> LogWatch:
        logging.getLogger("pbnb").addHandler(self)
        return self

    def __exit__(self, *exc_info) -> None:
        logging.getLogger("pbnb").removeHandler(self)


def free_port() -> int:
    """A port nothing listens on (bound, then released, never listened on)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def raw_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A plain asyncio server (no pbnb) on a free loopback port; yields the port."""
    listener = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with listener:
        yield listener.sockets[0].getsockname()[1]


async def read_all(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while chunk := await reader.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------- disconnect


async def test_disconnect_fails_pending_then_later_calls():
    """Behaviour 27: pending calls get PBConnectionLost, later calls DeadReferenceError."""
    async with connected(Waiter()) as session:
        pending = session.root.callRemote("wait_forever")
        await within(session.server.root.started.wait())
        await session.server.close()  # the server goes away under the client
        with pytest.raises(pb.PBConnectionLost):
            await within(pending)
        with pytest.raises(pb.DeadReferenceError):
            await within(session.root.callRemote("echo", 1))
        assert not session.root.connected


async def test_notify_on_disconnect_runs_once_and_can_be_removed():
    """Behaviour 27: callbacks run once with their reference; dontNotifyOnDisconnect removes one."""
    async with connected(Waiter()) as session:
        fired: list = []
        removed: list = []
        session.root.notifyOnDisconnect(fired.append)
        session.root.notifyOnDisconnect(removed.append)
        session.root.dontNotifyOnDisconnect(removed.append)
        session.root.dontNotifyOnDisconnect(print)  # never added: no error
        await session.client.close()
        assert fired == [session.root]
        assert removed == []
        await session.client.close()
        assert fired == [session.root]


async def test_server_side_releases_everything_when_the_client_leaves():
    """Behaviour 27 on the server: its references to client objects die, its exports go."""
    waiter = Waiter()
    async with connected(waiter) as session:
        listener = Listener()
        await within(session.root.callRemote("subscribe", listener))
        assert await within(session.root.callRemote("call_back", "hi")) == "hi"
        connection = session.server_side
        root_released = released(connection, waiter)
        lost: list = []
        waiter.listener.notifyOnDisconnect(lost.append)
        blocked = waiter.listener.callRemote("wait")
        await within(listener.waiting.wait())
        await session.client.close()
        await within(asyncio.shield(connection.closed))
        await within(root_released.wait())
        assert lost == [waiter.listener]
        assert set(connection.broker.table_sizes().values()) == {0}
        assert set(session.client.broker.table_sizes().values()) == {0}
        with pytest.raises(pb.PBConnectionLost):
            await within(blocked)
        with pytest.raises(pb.DeadReferenceError):
            await within(waiter.listener.callRemote("hear", "after"))


async def test_abrupt_peer_loss_fails_pending_calls():
    """Behaviour 27 when the transport is aborted rather than closed."""
    async with connected(Waiter()) as session:
        pending = session.root.callRemote("wait_forever")
        await within(session.server.root.started.wait())
        session.server_side.abort()
        with pytest.raises(pb.PBConnectionLost):
            await within(pending)
        await within(session.client.wait_closed())
        assert not session.client.connected


async def test_client_close_fails_its_own_pending_calls():
    """Behaviour 27 when the caller itself closes the connection."""
    async with connected(Waiter()) as session:
        pending = session.root.callRemote("wait_forever")
        await within(session.server.root.started.wait())
        await session.client.close()
        with pytest.raises(pb.PBConnectionLost):
            await within(pending)
        with pytest.raises(pb.DeadReferenceError):
            await within(session.root.callRemote("echo", 1))


async def test_a_failing_disconnect_callback_is_logged_and_the_others_run(caplog):
    async with connected(Waiter()) as session:
        ran: list = []

        def broken(ref):
            raise RuntimeError("callback bug")

        session.root.notifyOnDisconnect(broken)
        session.root.notifyOnDisconnect(ran.append)
        await session.client.close()
    assert ran == [session.root]
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "disconnect callback" in logged.getMessage() and logged.exc_info[0] is RuntimeError


async def test_connections_in_one_loop_share_the_read_buffer_without_mixing_their_bytes():
    """Reads go through one buffer per thread; each message must still reach its own connection.

    Several clients echo different large values at once, so their frames arrive
    split over many reads that interleave across the connections.
    """
    async with serving(Waiter()) as server:
        clients = [await pb.connect("127.0.0.1", server.port) for _ in range(4)]
        try:
            roots = [await within(client.getRootObject()) for client in clients]
            values = [bytes([n]) * (700_000 + n) for n in range(len(roots))]
            calls = [root.callRemote("echo", value) for root, value in zip(roots, values, strict=True)]
            assert await within(asyncio.gather(*calls)) == values
            calls = [root.callRemote("echo", n) for n, root in enumerate(roots)]
            assert await within(asyncio.gather(*calls)) == list(range(len(roots)))
        finally:
            for client in clients:
                await client.close()


async def test_a_root_factory_gives_each_connection_its_own_root():
    """serve() accepts a factory: each connection gets a fresh root."""
    made: list = []

    def factory():
        made.append(Waiter())
        return made[-1]

    async with serving(factory) as server:
        async with await pb.connect("127.0.0.1", server.port) as first:
            async with await pb.connect("127.0.0.1", server.port) as second:
                one = await within(first.getRootObject())
                two = await within(second.getRootObject())
                await within(one.callRemote("subscribe", Listener()))
                assert await within(two.callRemote("echo", "separate")) == "separate"
        assert len(made) == 2
        assert made[0].listener is not None and made[1].listener is None


# ----------------------------------------------------------- connecting


async def test_connect_where_nothing_listens():
    """Behaviour 28: ConnectionRefusedError naming the address."""
    port = free_port()
    with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1:{port}"):
        await within(pb.connect("127.0.0.1", port))


async def test_connection_lost_before_any_byte_logs_no_error(caplog):
    """Behaviour 29: a client that connects and leaves at once is not an error on the server."""
    caplog.set_level(logging.DEBUG, logger="pbnb")
    async with serving(Waiter()) as server:
        with LogWatch("hung up before it said anything") as watch:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.close()
            await writer.wait_closed()
            await within(watch.seen.wait())
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        async with connected(Waiter()) as session:  # and the server is fine
            assert await within(session.root.callRemote("echo", 1)) == 1


async def test_server_that_closes_before_the_handshake():
    """Behaviour 29 from the client's side: a clear error, not a hang."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with raw_server(hang_up) as port:
        with pytest.raises(pb.PBConnectionLost, match="handshake"):
            await within(pb.connect("127.0.0.1", port))


async def test_a_server_that_never_answers_the_handshake_times_out():
    """A silent listener: connect() gives up after its timeout with a clear error."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async with raw_server(silent) as port:
        with pytest.raises(pb.PBConnectionLost, match="did not complete the pbnb handshake"):
            await within(pb.connect("127.0.0.1", port, timeout=0.3))


# ------------------------------------------------------ bad peers (item 30)


@pytest.mark.parametrize(
    ("opening", "message"),
    [
        # A TLS ClientHello: neither PB nor HTTP (HTTP gets an HTTP answer: test_websocket_refusals).
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00", b"does not speak pbnb"),
        (MAGIC + b"\x00\x09\x00\x00", b"version 9"),
        (PREAMBLE + b"\xff\xff\xff\xff\x00\x01", b"limit"),
    ],
    ids=["garbage", "other-version", "oversized-frame"],
)
async def test_bad_peer_is_refused_and_others_are_unaffected(opening, message, caplog):
    """Behaviour 30: the bad peer gets a GOODBYE saying why; a good client keeps working."""
    async with connected(Waiter()) as session:
        pending = session.root.callRemote("echo", "before")
        reader, writer = await asyncio.open_connection("127.0.0.1", session.server.port)
        writer.write(opening)
        reply = await within(read_all(reader))  # the server closes the connection
        writer.close()
        assert reply.startswith(PREAMBLE)
        assert message in reply
        assert await within(pending) == "before"
        assert await within(session.root.callRemote("echo", "after")) == "after"
        assert len(session.server.connections) == 1
    refusals = [r for r in caplog.records if "closing connection" in r.getMessage()]
    assert refusals and refusals[0].levelno == logging.WARNING


@pytest.mark.parametrize(
    ("opening", "error"),
    [
        (b"SSH-2.0-OpenSSH_9.0\r\n", "does not speak pbnb"),
        (MAGIC + b"\x00\x02\x00\x00", "version 2"),
        (PREAMBLE + encode_frame([Kind.PING, 1]), "before HELLO"),
    ],
    ids=["garbage", "other-version", "no-hello"],
)
async def test_client_refuses_a_bad_server(opening, error):
    """Behaviour 30 from the client's side: connect() raises ProtocolError."""

    async def speak(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(opening)
        await reader.read()  # until the client hangs up
        writer.close()

    async with raw_server(speak) as port:
        with pytest.raises(pb.ProtocolError, match=error):
            await within(pb.connect("127.0.0.1", port))


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls():
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    authority.configure_trust(client_context)
    return server_context, client_context


async def test_calls_and_callbacks_over_tls(tls):
    """serve/connect accept ssl= contexts; everything works the same inside TLS."""
    server_context, client_context = tls
    async with connected(
        Waiter(), server_options={"ssl": server_context}, client_options={"ssl": client_context}
    ) as session:
        assert session.server_side.transport.get_extra_info("ssl_object") is not None
        listener = Listener()
        await within(session.root.callRemote("subscribe", listener))
        assert await within(session.root.callRemote("call_back", {"x": (1, 2)})) == {"x": (1, 2)}
        big = b"\x01" * (3 * 1024 * 1024)
        assert await within(session.root.callRemote("echo", big)) == big


async def test_tls_client_refuses_an_untrusted_server(tls):
    server_context, _ = tls
    async with serving(Waiter(), ssl=server_context) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            await within(pb.connect("127.0.0.1", server.port, ssl=ssl.create_default_context()))
        with pytest.raises((pb.PBConnectionLost, pb.ProtocolError, ConnectionError)):
            await within(pb.connect("127.0.0.1", server.port, timeout=5))  # plaintext to TLS
