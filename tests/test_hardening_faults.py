"""Faults: a peer killed mid-call, a reset connection, a peer that stops reading, a slow peer.

Each test ends with the right exceptions on the survivor's side, a bystander
that was never disturbed, and every id table empty.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import sys
import textwrap

import msgpack
import pytest

import pbnb as pb
from pbnb.aio.connection import connection_of
from pbnb.core import serialize
from pbnb.core.wire import PREAMBLE, Kind, encode_frame

# A hang detector, not an assertion: generous, so a loaded 2-core CI machine never trips it.
WAIT = 60.0


class Service(pb.Root):
    def __init__(self):
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.answered = 0
        self.lengths: list[int] = []

    def remote_echo(self, value):
        self.answered += 1
        return value

    def remote_blob(self, size: int) -> bytes:
        self.answered += 1
        return b"b" * size

    def remote_length(self, data: bytes) -> int:
        self.lengths.append(len(data))
        return len(data)

    async def remote_hang(self, callback=None):
        self.started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


def tables_empty(broker) -> bool:
    return all(size == 0 for size in broker.table_sizes().values())


@pytest.fixture
async def served():
    """A server, its root, and a bystander whose calls must keep working throughout."""
    root = Service()
    server = await pb.serve(root)
    bystander = await pb.connect("127.0.0.1", server.port)
    bystander_root = await bystander.getRootObject()
    yield server, root, bystander_root
    assert await bystander_root.callRemote("echo", "undisturbed") == "undisturbed"
    await bystander.close()
    await asyncio.wait_for(until(lambda: not server.connections), WAIT)
    await server.close()


def only_other_connection(server: pb.Server, bystander_root: pb.RemoteReference):
    """The server-side connection that is not the bystander's."""
    local = connection_of(bystander_root).transport.get_extra_info("sockname")[1]
    (connection,) = [c for c in server.connections if not c.peer.endswith(f":{local}")]
    return connection


# ---------------------------------------------------------- killed mid-call

SERVER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import pbnb as pb

    class Root(pb.Root):
        async def remote_hang(self):
            print("started", flush=True)
            await asyncio.get_running_loop().create_future()

    async def main():
        server = await pb.serve(Root())
        print(server.port, flush=True)
        await server.serve_forever()

    asyncio.run(main())
    """
)

CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import pbnb as pb

    class Callback(pb.Referenceable):
        def remote_ping(self):
            return "pong"

    async def main():
        client = await pb.connect("127.0.0.1", int(sys.argv[1]))
        root = await client.getRootObject()
        call = root.callRemote("hang", Callback())
        print("calling", flush=True)
        await call

    asyncio.run(main())
    """
)


async def spawn(script: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE
    )


async def test_server_killed_mid_call():
    process = await spawn(SERVER_SCRIPT)
    try:
        port = int(await asyncio.wait_for(process.stdout.readline(), WAIT))
        client = await pb.connect("127.0.0.1", port)
        root = await client.getRootObject()
        call = root.callRemote("hang")
        assert await asyncio.wait_for(process.stdout.readline(), WAIT) == b"started\n"
        process.send_signal(signal.SIGKILL)
        with pytest.raises(pb.PBConnectionLost):
            await asyncio.wait_for(call, WAIT)
        with pytest.raises(pb.DeadReferenceError):
            await root.callRemote("hang")
        assert tables_empty(client.broker)
        assert not client.connected
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_client_killed_mid_call(served):
    server, root, bystander_root = served
    process = await spawn(CLIENT_SCRIPT, str(server.port))
    try:
        assert await asyncio.wait_for(process.stdout.readline(), WAIT) == b"calling\n"
        await asyncio.wait_for(root.started.wait(), WAIT)
        connection = only_other_connection(server, bystander_root)
        assert connection.broker.table_sizes()["imports"] == 1  # the callback it sent
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.shield(connection.closed), WAIT)
        await asyncio.wait_for(root.cancelled.wait(), WAIT)  # its running call was stopped
        assert tables_empty(connection.broker)
        assert len(server.connections) == 1
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


# ----------------------------------------------------------- reset connection


def reset(transport: asyncio.BaseTransport) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@pytest.mark.parametrize("side", ["client", "server"])
async def test_connection_reset(served, side):
    """A RST from either side fails the pending call and empties every table."""
    server, root, bystander_root = served
    client = await pb.connect("127.0.0.1", server.port)
    client_root = await client.getRootObject()
    call = client_root.callRemote("hang")
    await asyncio.wait_for(root.started.wait(), WAIT)
    connection = only_other_connection(server, bystander_root)
    reset(client.connection.transport if side == "client" else connection.transport)
    with pytest.raises(pb.PBConnectionLost, match=r"reset|lost"):
        await asyncio.wait_for(call, WAIT)
    await asyncio.wait_for(asyncio.shield(connection.closed), WAIT)
    await asyncio.wait_for(client.wait_closed(), WAIT)
    if side == "client":
        await asyncio.wait_for(root.cancelled.wait(), WAIT)
    with pytest.raises(pb.DeadReferenceError):
        await client_root.callRemote("echo", 1)
    assert tables_empty(connection.broker)
    assert tables_empty(client.broker)


# ------------------------------------------------------ a peer that stops reading


async def test_a_peer_that_stops_reading_is_paused_with_bounded_buffers(served):
    server, _root, bystander_root = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": 1 << 20}]) + encode_frame([Kind.ROOT, 1]))
    args = msgpack.packb([[4096], {}])

    def batch(first: int) -> bytes:
        return b"".join(
            encode_frame([Kind.CALL, n, 1, "blob", serialize.PLAIN], args) for n in range(first, first + 1000)
        )

    await writer.drain()
    await asyncio.wait_for(until(lambda: len(server.connections) == 2), WAIT)
    connection = only_other_connection(server, bystander_root)
    transport = connection.transport
    sent = 0
    # Keep asking for 4 KiB answers and never read one; the server must stop reading.
    while transport.is_reading():
        writer.write(batch(2 + sent))
        sent += 1000
        await asyncio.sleep(0)
        assert sent < 2_000_000, "the server never stopped reading a peer that does not read"
    # Bystander calls complete while the stalled peer is paused.
    for i in range(50):
        assert await bystander_root.callRemote("echo", i) == i
    buffered = transport.get_write_buffer_size()
    assert buffered < 64 * 1024 * 1024, f"{buffered} bytes buffered for a peer that does not read"
    # Once the peer reads again, every call it made is answered.
    answers = 0
    expected = sent + 1
    replies = reader

    async def read_all() -> None:
        nonlocal answers
        await replies.readexactly(len(PREAMBLE))
        while answers < expected:
            body = int.from_bytes(await replies.readexactly(4), "big")
            frame = await replies.readexactly(body)
            if msgpack.unpackb(frame[2 : 2 + int.from_bytes(frame[:2], "big")])[0] == Kind.ANSWER:
                answers += 1

    await asyncio.wait_for(read_all(), 120)
    assert answers == expected
    assert connection.broker.table_sizes()["inbound_calls"] == 0
    writer.close()


async def test_a_big_answer_goes_to_the_transport_in_pieces_as_the_peer_reads(served):
    """32 MiB to a peer that has stopped reading: asyncio holds about one piece of it, not all.

    The rest waits in the connection and goes out as the transport drains, so no
    step of the event loop copies the whole answer; others are served meanwhile,
    and the peer gets the answer whole, then the next one, in order.
    """
    server, _root, bystander_root = served
    client = await pb.connect("127.0.0.1", server.port)
    root = await client.getRootObject()
    connection = only_other_connection(server, bystander_root)
    client.connection.transport.pause_reading()
    size = 32 * 1024 * 1024
    big = root.callRemote("blob", size)
    await asyncio.wait_for(until(lambda: not connection.transport.is_reading()), WAIT)  # back-pressure
    buffered = connection.transport.get_write_buffer_size()
    assert buffered < 8 * 1024 * 1024, f"{buffered} bytes of a {size}-byte answer handed to asyncio at once"
    for i in range(20):  # answered while the big answer waits to be written
        assert await asyncio.wait_for(bystander_root.callRemote("echo", i), WAIT) == i
    after = root.callRemote("echo", "after")
    client.connection.transport.resume_reading()
    assert await asyncio.wait_for(big, WAIT) == b"b" * size
    assert await asyncio.wait_for(after, WAIT) == "after"
    assert client.connected
    await client.close()


async def test_closing_sends_a_big_message_still_waiting_to_be_written(served):
    server, root, _bystander_root = served
    client = await pb.connect("127.0.0.1", server.port)
    remote = await client.getRootObject()
    size = 32 * 1024 * 1024
    call = remote.callRemote("length", b"x" * size)
    await client.close()  # at once: most of the argument has not gone out yet
    with pytest.raises(pb.PBConnectionLost):
        await asyncio.wait_for(call, WAIT)
    await asyncio.wait_for(until(lambda: root.lengths == [size]), WAIT)


# -------------------------------------------------------- one byte at a time


async def test_a_peer_sending_one_byte_at_a_time_does_not_slow_others(served):
    server, _root, bystander_root = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": 1 << 20}]) + encode_frame([Kind.ROOT, 1]))
    slow_frame = encode_frame([Kind.CALL, 2, 1, "echo", serialize.PLAIN], msgpack.packb([["slow" * 10], {}]))
    await asyncio.wait_for(reader.readexactly(len(PREAMBLE)), WAIT)

    # The slow peer sends one byte of its call between two of the bystander's round
    # trips (paced by the bystander's answers, not by a clock), all but the last byte:
    # the server holds a partial frame from it throughout, and serves the bystander.
    for i in range(200):
        if i < len(slow_frame) - 1:
            writer.write(slow_frame[i : i + 1])
            await writer.drain()
        assert await asyncio.wait_for(bystander_root.callRemote("echo", i), WAIT) == i

    async def answer_to_the_slow_call() -> list:
        while True:  # the HELLO, the root's ANSWER, then the slow call's
            frame = await reader.readexactly(int.from_bytes(await reader.readexactly(4), "big"))
            header = msgpack.unpackb(frame[2 : 2 + int.from_bytes(frame[:2], "big")])
            if header[0] == Kind.ANSWER and header[1] == 2:
                return header

    # The last byte completes the frame: the call assembled from single bytes is answered.
    writer.write(slow_frame[-1:])
    await asyncio.wait_for(answer_to_the_slow_call(), WAIT)
    writer.close()


@pytest.mark.slow  # waits out a timeout of seconds, by design
async def test_keepalive_keeps_a_peer_that_reads_a_big_answer_slowly():
    """Back-pressure stops the server reading the peer's pongs; draining must count as alive."""
    server = await pb.serve(Service(), keepalive=0.05, dead_peer_timeout=1.0)
    client = await pb.connect("127.0.0.1", server.port)
    root = await client.getRootObject()
    # Small kernel buffers, so what the peer has read is what the server sees drain.
    client.connection.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16
    )
    (connection,) = server.connections
    connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    transport = client.connection.transport
    size = 16 * 1024 * 1024
    answer = root.callRemote("blob", size)
    started = asyncio.get_running_loop().time()

    async def read_slowly() -> None:
        while not answer.done():  # about one read every 20 ms
            transport.pause_reading()
            await asyncio.sleep(0.02)
            transport.resume_reading()
            await asyncio.sleep(0)  # the loop polls the socket...
            await asyncio.sleep(0)  # ...and runs the read before we pause again

    reader = asyncio.create_task(read_slowly())
    assert len(await asyncio.wait_for(answer, 60)) == size
    await reader
    assert asyncio.get_running_loop().time() - started > 1.0, "too quick to prove anything"
    assert await root.callRemote("echo", "alive") == "alive"
    await client.close()
    await server.close()


async def test_keepalive_drops_a_peer_that_stops_reading():
    server = await pb.serve(Service(), keepalive=0.05, dead_peer_timeout=0.4)
    client = await pb.connect("127.0.0.1", server.port)
    root = await client.getRootObject()
    (connection,) = server.connections
    client.connection.transport.pause_reading()  # and never again
    answer = root.callRemote("blob", 24 * 1024 * 1024)
    await asyncio.wait_for(asyncio.shield(connection.closed), WAIT)
    assert "silent" in str(connection.close_reason)
    assert tables_empty(connection.broker)
    client.connection.transport.resume_reading()
    with pytest.raises(pb.PBConnectionLost):
        await asyncio.wait_for(answer, WAIT)
    await server.close()
