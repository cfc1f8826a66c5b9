"""One peer's flood of messages is handled a turn's worth at a time: the others are served meanwhile."""

from __future__ import annotations

import asyncio
import socket

import msgpack
from core_net import serving, within

import pbnb as pb
from pbnb.aio.connection import _FRAMES_PER_TURN
from pbnb.core import serialize
from pbnb.core.wire import PREAMBLE, Kind, encode_frame

FLOOD = 20_000  # about 500 KB of calls: more than one socket read holds


class Ledger(pb.Root):
    """Notes who called, in the order the calls ran, and how the flooding connection stood then."""

    def __init__(self) -> None:
        self.notes: list = []
        self.flooder: pb.aio.connection.Connection | None = None  # type: ignore[name-defined]
        self.seen_at_200: tuple[bool, int] | None = None

    def remote_note(self, who):
        self.notes.append(who)
        if who == 200 and self.flooder is not None:
            self.seen_at_200 = (self.flooder.transport.is_reading(), self.flooder.broker.backlog)

    def remote_echo(self, value):
        return value


def call(request_id: int, method: str, *args) -> bytes:
    return encode_frame([Kind.CALL, request_id, 1, method, serialize.PLAIN], msgpack.packb([list(args), {}]))


async def raw_peer(server: pb.Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A socket that has done the handshake and holds the root (export 1), and nothing more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(PREAMBLE + encode_frame([Kind.HELLO, {}]) + encode_frame([Kind.ROOT, 1]))
    await within(_answer_to(reader, 1, preamble=True))
    return reader, writer


async def next_header(reader: asyncio.StreamReader) -> list:
    frame = await reader.readexactly(int.from_bytes(await reader.readexactly(4), "big"))
    return msgpack.unpackb(frame[2 : 2 + int.from_bytes(frame[:2], "big")])


async def _answer_to(reader: asyncio.StreamReader, request_id: int, preamble: bool = False) -> list:
    if preamble:
        await reader.readexactly(len(PREAMBLE))
    while True:
        header = await next_header(reader)
        if header[0] in (Kind.ANSWER, Kind.ERROR) and header[1] == request_id:
            return header


def server_side(server: pb.Server, writer: asyncio.StreamWriter):
    port = writer.get_extra_info("sockname")[1]
    (connection,) = [c for c in server.connections if c.peer.endswith(f":{port}")]
    return connection


async def test_a_flood_in_one_read_is_handled_in_turns_and_a_bystander_is_served_among_them():
    ledger = Ledger()
    async with serving(ledger) as server, await pb.connect("127.0.0.1", server.port) as bystander:
        bystander_root = await within(bystander.getRootObject())
        _, writer = await raw_peer(server)
        ledger.flooder = server_side(server, writer)
        writer.write(b"".join(call(0, "note", n) for n in range(FLOOD)))  # fire and forget, one write
        await within(bystander_root.callRemote("note", "bystander"))
        position = ledger.notes.index("bystander")
        await within(_until(lambda: len(ledger.notes) == FLOOD + 1))
        writer.close()
    # Served after a few turns of the flood, not after the whole read it came in.
    assert position < 8 * _FRAMES_PER_TURN, position
    # While the rest of the read waited, the server read no more from that peer.
    is_reading, backlog = ledger.seen_at_200
    assert not is_reading and backlog > 0
    # Nothing lost, nothing reordered.
    assert [n for n in ledger.notes if n != "bystander"] == list(range(FLOOD))


async def test_a_peer_that_half_closes_behind_a_flood_gets_every_answer():
    ledger = Ledger()
    async with serving(ledger) as server:
        reader, writer = await raw_peer(server)
        count = 5_000
        writer.write(b"".join(call(n + 2, "echo", n) for n in range(count)))
        await writer.drain()
        writer.get_extra_info("socket").shutdown(socket.SHUT_WR)
        answered = set()
        for _ in range(count):
            header = await within(next_header(reader))
            if header[0] == Kind.ANSWER:
                answered.add(header[1])
        assert answered == set(range(2, count + 2))
        assert await within(reader.read()) == b""  # then the server closes
        writer.close()


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
