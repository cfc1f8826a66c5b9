"""``serve(max_connections=N)``: a full server turns newcomers away with ``ServerFull`` and keeps serving.

Over real loopback sockets, plus the refusal's bytes fed to a sans-IO broker.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest
import trustme
from core_net import serving, within

import pbnb as pb
import pbnb.aio.server as server_module
from pbnb.core import events as ev
from pbnb.core.broker import Broker, refusal_handshake
from pbnb.core.wire import PREAMBLE, ConnectionState, Kind, encode_frame


class Counter(pb.Root):
    def __init__(self):
        self.calls = 0

    def remote_bump(self):
        self.calls += 1
        return self.calls


def full_message(server: pb.Server) -> str:
    return f"server at 127.0.0.1:{server.port} is full (max_connections={server.max_connections})"


def refusal_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage().startswith("refused connection from")]


async def bump(client: pb.Client) -> int:
    root = await within(client.getRootObject())
    return await within(root.callRemote("bump"))


async def test_a_full_server_refuses_the_next_client_and_keeps_serving_the_others(caplog):
    caplog.set_level(logging.INFO, logger="pbnb")
    async with serving(Counter(), max_connections=2) as server:
        async with await pb.connect("127.0.0.1", server.port) as first:
            async with await pb.connect("127.0.0.1", server.port) as second:
                assert [await bump(first), await bump(second)] == [1, 2]
                for _ in range(2):
                    with pytest.raises(pb.ServerFull) as refused:
                        await within(pb.connect("127.0.0.1", server.port))
                    assert str(refused.value) == full_message(server)
                assert isinstance(refused.value, pb.PBConnectionLost)  # a retrying client retries it
                assert len(server.connections) == 2
                assert [await bump(first), await bump(second)] == [3, 4]
    warnings = refusal_records(caplog)
    assert [record.levelno for record in warnings] == [logging.WARNING, logging.WARNING]
    for record in warnings:
        assert full_message(server) in record.getMessage() and "\n" not in record.getMessage()
    # The refused clients raised ServerFull; they do not also warn about it.
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and r not in warnings] == []


async def test_a_place_freed_by_a_leaving_client_is_taken_by_the_next():
    async with serving(Counter(), max_connections=1) as server:
        client = await pb.connect("127.0.0.1", server.port)
        assert await bump(client) == 1
        with pytest.raises(pb.ServerFull):
            await within(pb.connect("127.0.0.1", server.port))
        (served,) = server.connections
        await client.close()
        await within(asyncio.shield(served.closed))
        assert not server.connections
        async with await pb.connect("127.0.0.1", server.port) as newcomer:
            assert await bump(newcomer) == 2
            assert len(server.connections) == 1


async def test_a_refused_client_gets_a_goodbye_instead_of_a_hello_and_close_drops_it():
    """A raw client that never hangs up: it reads why, then the server's close() drops it."""
    async with serving(Counter(), max_connections=1) as server:
        async with await pb.connect("127.0.0.1", server.port) as client:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(PREAMBLE)  # a server waits for the client's first bytes
            try:
                reply = await within(reader.read())  # the server half-closes after saying why
                assert reply == refusal_handshake(pb.ServerFull(full_message(server)))
                assert reply == PREAMBLE + encode_frame(
                    [Kind.GOODBYE, "pbnb.errors.ServerFull", full_message(server)]
                )
                assert len(server._refusals) == 1  # still open: the client has not hung up
                assert await bump(client) == 1
                await within(server.close())
                assert not server._refusals
            finally:
                writer.close()


async def test_a_refused_client_that_never_hangs_up_is_dropped_after_a_grace(monkeypatch):
    monkeypatch.setattr(server_module, "_REFUSAL_GRACE", 0.05)
    async with serving(Counter(), max_connections=1) as server:
        async with await pb.connect("127.0.0.1", server.port):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(PREAMBLE)
            try:
                assert (await within(reader.read())).startswith(PREAMBLE)
                # Nobody but the grace timer closes it (it may already have, on a slow machine).
                for refusal in list(server._refusals):
                    await within(asyncio.shield(refusal.closed))
                assert not server._refusals
            finally:
                writer.close()


@pytest.fixture(scope="module")
def tls():
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    return server_context, client_context


async def test_a_full_server_refuses_over_tls_too(tls):
    server_context, client_context = tls
    async with serving(Counter(), ssl=server_context, max_connections=1) as server:
        async with await pb.connect("127.0.0.1", server.port, ssl=client_context) as client:
            with pytest.raises(pb.ServerFull, match="is full"):
                await within(pb.connect("127.0.0.1", server.port, ssl=client_context))
            assert await bump(client) == 1


def test_the_refusal_fails_the_handshake_however_it_is_split():
    """No HELLO comes first, so no split of the bytes can make the handshake look complete."""
    data = refusal_handshake(pb.ServerFull("server at here is full (max_connections=1)"))
    for size in (1, 3, len(data)):
        broker = Broker(None)
        events = []
        for start in range(0, len(data), size):
            broker.receive_data(data[start : start + size])
            events += broker.next_events()
        (failed,) = events
        assert isinstance(failed, ev.ConnectionFailed) and failed.by_peer
        assert type(failed.error) is pb.ServerFull
        assert str(failed.error) == "server at here is full (max_connections=1)"
        assert broker.state is ConnectionState.CLOSING


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "at least 1, got 0"),
        (-3, ValueError, "at least 1, got -3"),
        (2.5, TypeError, "an int or None, not float"),
        ("2", TypeError, "an int or None, not str"),
        (True, TypeError, "an int or None, not bool"),
    ],
)
async def test_invalid_max_connections_is_refused(value, error, message):
    with pytest.raises(error, match=message):
        await pb.serve(Counter(), port=0, max_connections=value)


async def test_no_cap_by_default():
    async with serving(Counter()) as server:
        assert server.max_connections is None
        clients = [await pb.connect("127.0.0.1", server.port) for _ in range(5)]
        try:
            assert [await bump(client) for client in clients] == [1, 2, 3, 4, 5]
            assert len(server.connections) == 5
        finally:
            await asyncio.gather(*(client.close() for client in clients))
