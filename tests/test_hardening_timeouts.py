"""Connections that never finish the handshake, and peers that never read our pushes."""

from __future__ import annotations

import asyncio

import pytest
from core_net import connected, serving, within

import pbnb as pb


class Echo(pb.Root):
    def remote_echo(self, value):
        return value


class Board(pb.ObservedCacheable):
    observed_fields = ("text",)

    def __init__(self):
        self.text = ""


class RemoteBoard(pb.ObservedRemoteCache):
    observed_fields = ("text",)


pb.setUnjellyableForClass(Board, RemoteBoard)


class BoardRoot(pb.Root):
    def __init__(self, board):
        self.board = board

    def remote_board(self):
        return self.board


@pytest.mark.slow  # waits out a timeout of seconds, by design
@pytest.mark.parametrize("opening", [b"", b"PBNB\x00\x01\x00\x00"], ids=["silent", "preamble-only"])
async def test_a_peer_that_never_completes_the_handshake_is_dropped_after_the_handshake_timeout(opening):
    # Long enough for the bystander's own handshake on a loaded machine.
    async with serving(Echo(), handshake_timeout=2.0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(opening)
        try:
            # A server waits for the client's first bytes: a silent peer hears nothing.
            # After a preamble it answers with its own and HELLO. Then it gives up on us: EOF.
            received = await within(reader.read())
            assert received.startswith(b"PBNB") if opening else received == b""
            async with await pb.connect("127.0.0.1", server.port) as bystander:
                root = await within(bystander.getRootObject())
                assert await within(root.callRemote("echo", "still serving")) == "still serving"
        finally:
            writer.close()


@pytest.mark.slow  # waits out a timeout of seconds, by design
async def test_a_completed_handshake_is_not_timed_out():
    async with connected(Echo(), server_options={"handshake_timeout": 1.0}) as session:
        closed = asyncio.ensure_future(asyncio.shield(session.client.connection.closed))
        for _ in range(50):
            assert await within(session.root.callRemote("echo", 1)) == 1
        # Past the timeout: the connection must still be up (an absence, so a bounded wait).
        await asyncio.wait({closed}, timeout=1.5)
        assert not closed.done()
        assert await within(session.root.callRemote("echo", 2)) == 2
        closed.cancel()


async def test_a_peer_that_stops_reading_pushes_is_dropped_at_max_send_buffer():
    board = Board()
    async with serving(BoardRoot(board), max_send_buffer=512 * 1024) as server:
        async with await pb.connect("127.0.0.1", server.port) as reader_client:
            async with await pb.connect("127.0.0.1", server.port) as stalled:
                mine = await within((await within(reader_client.getRootObject())).callRemote("board"))
                theirs = await within((await within(stalled.getRootObject())).callRemote("board"))
                assert len(board.observers) == 2
                stalled_port = stalled.connection.transport.get_extra_info("sockname")[1]
                stalled_side = next(c for c in server.connections if c.peer.endswith(f":{stalled_port}"))
                stalled.connection.transport.pause_reading()
                chunk = "x" * 65536
                sent = 0
                while not stalled_side.closed.done() and sent < 4000:
                    board.text = f"{sent}:{chunk}"
                    sent += 1
                    await asyncio.sleep(0)  # let the loop write; not a timing wait
                assert stalled_side.closed.done(), "the non-reading peer was never dropped"
                assert isinstance(stalled_side.close_reason, pb.PBConnectionLost)
                assert "not reading" in str(stalled_side.close_reason)
                last = f"{sent - 1}:{chunk}"

                async def caught_up():
                    while mine.text != last:
                        await asyncio.sleep(0.01)

                await within(caught_up())
                assert mine.text == last
                assert len(board.observers) == 1, "the dropped peer's observer was pruned"
                del theirs


def test_unknown_connection_option_is_rejected_clearly():
    with pytest.raises(TypeError, match="unknown limit option"):
        asyncio.run(pb.serve(Echo(), handshake_timeot=1))
