"""Bad WebSocket input: each gets a clear error and a clean close; the server keeps serving others."""

from __future__ import annotations

import asyncio
import logging

import pytest
from core_net import serving, within
from test_core_connections import LogWatch, free_port
from ws_helpers import RawWebSocket, Tls
from ws_service import Service

import pbnb as pb
from pbnb.aio.ws_stream import MAX_MESSAGE
from pbnb.core.wire import PREAMBLE, Kind, encode_frame

HELLO = PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": 1 << 20}])


async def assert_serving(server: pb.Server, path: str = "/pb") -> None:
    """A well-behaved WebSocket client still gets answers."""
    async with await within(pb.connect(f"ws://127.0.0.1:{server.port}{path}")) as client:
        root = await within(client.getRootObject())
        assert await within(root.callRemote("echo", "still serving")) == "still serving"


async def http_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await within(reader.read())
    finally:
        writer.close()


async def test_a_plain_http_get_is_answered_in_http(caplog):
    async with serving(Service()) as server:
        reply = await http_exchange(server.port, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 426 Upgrade Required")
        assert b"this is a pbnb broker" in body and b"ws://" in body
        assert not reply.startswith(PREAMBLE)  # the server waited for our first bytes
        await assert_serving(server)
    assert any("refused WebSocket connection" in r.getMessage() for r in caplog.records)


async def test_not_even_http_gets_a_400():
    async with serving(Service()) as server:
        reply = await http_exchange(server.port, b"GARBAGE GARBAGE\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 Bad Request")
        assert b"did not receive a valid HTTP request" in reply
        await assert_serving(server)


async def test_a_wrong_path_is_refused_with_404():
    async with serving(Service(), websocket_path="/pb") as server:
        with pytest.raises(
            pb.ProtocolError, match=r"HTTP 404 Not Found: no pbnb broker at /other \(it is at /pb\)"
        ):
            await within(pb.connect(f"ws://127.0.0.1:{server.port}/other"))
        await assert_serving(server, "/pb")


async def test_a_text_message_is_refused_with_close_code_1003(caplog):
    async with serving(Service()) as server:
        raw = await RawWebSocket.open(server.port)
        try:
            assert raw.response.status_code == 101
            raw.ws.send_text(b"hello")
            raw.flush()
            close = await raw.close_frame()
            assert close.code == 1003 and "binary messages only" in close.reason
        finally:
            raw.close()
        await assert_serving(server)
    assert any("text WebSocket message" in r.getMessage() for r in caplog.records)


async def test_a_huge_announced_message_is_refused_before_it_is_buffered():
    """A 2 GiB message announced: refused on its 14-byte header, without waiting for the body."""
    async with serving(Service()) as server:
        raw = await RawWebSocket.open(server.port)
        try:
            # FIN + binary, masked, 64-bit length 2**31, a mask key; no payload at all.
            raw.writer.write(bytes([0x82, 0xFF]) + (2**31).to_bytes(8, "big") + b"\x01\x02\x03\x04")
            close = await raw.close_frame()
            assert close.code == 1009
            assert str(MAX_MESSAGE) in close.reason or "over size limit" in close.reason
        finally:
            raw.close()
        await assert_serving(server)


async def test_an_oversized_message_from_a_real_client_is_refused_with_1009():
    async with serving(Service()) as server:
        raw = await RawWebSocket.open(server.port)
        try:
            raw.ws.send_binary(HELLO + b"\x00" * MAX_MESSAGE)
            raw.flush()
            assert (await raw.close_frame()).code == 1009
        finally:
            raw.close()
        await assert_serving(server)


async def test_a_pb_frame_over_max_frame_is_refused_with_a_goodbye_and_1009():
    """The PB limit works inside messages: the 6-byte prefix of a huge frame is enough."""
    async with serving(Service(), max_frame=1 << 20) as server:
        raw = await RawWebSocket.open(server.port)
        try:
            raw.ws.send_binary(HELLO + (1 << 30).to_bytes(4, "big") + (10).to_bytes(2, "big"))
            raw.flush()
            received = await raw.until_closed()
            assert received.startswith(PREAMBLE) and b"LimitExceeded" in received
            assert raw.ws.close_rcvd.code == 1009
        finally:
            raw.close()
        await assert_serving(server)


async def test_garbage_inside_binary_messages_gets_a_goodbye_and_1008():
    async with serving(Service()) as server:
        raw = await RawWebSocket.open(server.port)
        try:
            raw.ws.send_binary(b"NOTPB\x00\x00\x00")
            raw.flush()
            received = await raw.until_closed()
            assert b"does not speak pbnb" in received
            assert raw.ws.close_rcvd.code == 1008 and "ProtocolError" in raw.ws.close_rcvd.reason
        finally:
            raw.close()
        await assert_serving(server)


@pytest.mark.slow  # waits out a timeout of seconds, by design
async def test_an_upgrade_that_never_completes_times_out_with_408():
    async with serving(Service(), handshake_timeout=3.0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"GET /pb HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
            await assert_serving(server)  # meanwhile others are served
            reply = await within(reader.read())
            assert reply.startswith(b"HTTP/1.1 408 Request Timeout")
            assert b"did not complete the handshake in 3s" in reply
        finally:
            writer.close()
        assert server.pending_handshakes == 0


@pytest.mark.slow  # waits out a timeout of seconds, by design
async def test_a_client_that_never_says_anything_is_dropped_after_the_handshake_timeout():
    async with serving(Service(), handshake_timeout=3.0) as server:
        with LogWatch("did not complete the handshake in 3s") as watch:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                assert await within(reader.read()) == b""
                await within(watch.seen.wait())
            finally:
                writer.close()
        assert server.pending_handshakes == 0
        await assert_serving(server)


@pytest.mark.slow  # waits out a timeout of seconds, by design
async def test_the_pb_handshake_timeout_applies_after_the_upgrade():
    """Upgraded, then silent: the PB handshake timeout drops it, saying so in the close frame."""
    async with serving(Service(), handshake_timeout=3.0) as server:
        raw = await RawWebSocket.open(server.port)
        try:
            close = await raw.close_frame()
            assert close.code == 1008 and "did not complete the handshake in 3s" in close.reason
        finally:
            raw.close()
        await assert_serving(server)


async def test_a_client_dropping_mid_message_is_a_clear_log_line_and_nothing_more(caplog):
    caplog.set_level(logging.INFO, logger="pbnb")
    async with serving(Service()) as server:
        raw = await RawWebSocket.open(server.port)
        raw.ws.send_binary(HELLO)
        raw.flush()
        await within(until(lambda: len(server.connections) == 1))
        (served,) = server.connections
        await within(asyncio.shield(served.ready))
        # Half of a 1000-byte binary frame, then the connection drops (a proxy that died).
        raw.writer.write(bytes([0x82, 0xFE]) + (1000).to_bytes(2, "big") + b"\x00\x00\x00\x00" + b"x" * 500)
        await raw.writer.drain()
        raw.writer.close()
        await within(asyncio.shield(served.closed))
        (line,) = [r.getMessage() for r in caplog.records if "in the middle of a message" in r.getMessage()]
        assert f"{served.peer} ended in the middle of a message without a WebSocket close" in line
        await assert_serving(server)


async def test_a_proxy_dropping_the_answer_mid_message_fails_the_call_clearly():
    """Server -> client: the relay forwards part of a large answer, then cuts the connection."""
    async with serving(Service()) as server:
        async with CuttingRelay(server.port, cut_after=300_000) as relay:
            client = await within(pb.connect(f"ws://127.0.0.1:{relay.port}/pb"))
            root = await within(client.getRootObject())
            with pytest.raises(pb.PBConnectionLost, match="in the middle of a message"):
                await within(root.callRemote("blob", 1 << 20))
            assert not client.connected
        await assert_serving(server)


async def test_origins_default_to_same_origin_only():
    async with serving(Service()) as server:
        here = f"127.0.0.1:{server.port}"
        with pytest.raises(pb.ProtocolError, match=r"HTTP 403 Forbidden: origin https://evil.example"):
            await within(pb.connect(f"ws://{here}/pb", origin="https://evil.example"))
        with pytest.raises(pb.ProtocolError, match="403"):
            await within(pb.connect(f"ws://{here}/pb", origin="null"))  # a file:// page
        # A page served from the broker's own address is same-origin; no Origin (not a browser) is fine.
        async with await within(pb.connect(f"ws://{here}/pb", origin=f"http://{here}")) as client:
            assert await within((await client.getRootObject()).callRemote("echo", 1)) == 1
        await assert_serving(server)


async def test_an_origin_allow_list():
    async with serving(
        Service(), websocket_origins=["https://Lab.Example:8443", "http://localhost:8000"]
    ) as server:
        url = f"ws://127.0.0.1:{server.port}/pb"
        for origin in ("https://lab.example:8443", "http://localhost:8000"):
            async with await within(pb.connect(url, origin=origin)) as client:
                assert await within((await client.getRootObject()).callRemote("echo", origin)) == origin
        for origin in ("https://lab.example", "http://localhost:8001", "https://evil.example"):
            with pytest.raises(pb.ProtocolError, match="may not connect"):
                await within(pb.connect(url, origin=origin))
    async with serving(Service(), websocket_origins="*") as server:
        async with await within(pb.connect(f"ws://127.0.0.1:{server.port}/", origin="https://any.example")):
            pass


def test_bad_websocket_options_fail_serve_at_once():
    async def serve(**options):
        await pb.serve(Service(), port=0, **options)

    with pytest.raises(ValueError, match="websocket_path must start with '/'"):
        asyncio.run(serve(websocket_path="pb"))
    with pytest.raises(ValueError, match="not an origin"):
        asyncio.run(serve(websocket_origins=["lab.example"]))


async def test_websocket_false_keeps_the_port_raw_pb():
    async with serving(Service(), websocket=False) as server:
        with pytest.raises(pb.ProtocolError, match="is it a raw PB port"):
            await within(pb.connect(f"ws://127.0.0.1:{server.port}/pb"))
        async with await within(pb.connect(f"pb://127.0.0.1:{server.port}")) as client:
            assert await within((await client.getRootObject()).callRemote("echo", 2)) == 2


async def test_a_full_server_tells_a_websocket_client_why_with_1013():
    async with serving(Service(), max_connections=1) as server:
        async with await within(pb.connect(f"ws://127.0.0.1:{server.port}/pb")):
            with pytest.raises(pb.ServerFull, match="max_connections=1"):
                await within(pb.connect(f"ws://127.0.0.1:{server.port}/pb"))
            raw = await RawWebSocket.open(server.port)
            try:
                # Turned away as soon as it is upgraded: GOODBYE, then the close frame.
                assert b"ServerFull" in await raw.until_closed()
                assert raw.ws.close_rcvd.code == 1013
            finally:
                raw.close()


async def test_a_normal_close_is_1000_both_ways():
    async with serving(Service()) as server:
        raw = await RawWebSocket.open(server.port)
        try:
            raw.ws.send_binary(HELLO)
            raw.flush()
            await within(until(lambda: len(server.connections) == 1))
            (served,) = server.connections
            await within(asyncio.shield(served.ready))
            raw.ws.send_close(1000)
            raw.flush()
            assert (await raw.close_frame()).code == 1000
            await raw.until_closed()  # the server hangs up first, and we in turn
            await within(asyncio.shield(served.closed))
            assert served.close_reason is None
        finally:
            raw.close()
        raw = await RawWebSocket.open(server.port)
        try:
            raw.ws.send_binary(HELLO)
            raw.flush()
            await within(until(lambda: len(server.connections) == 1))
            (served,) = server.connections
            await within(asyncio.shield(served.ready))
            closing = asyncio.ensure_future(server.close())  # the server closes: 1000 too
            assert (await raw.close_frame()).code == 1000
            await raw.until_closed()  # our answer lets the server finish at once, no timer
            await within(closing)
        finally:
            raw.close()


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("http://127.0.0.1:1/",), ValueError, "unknown scheme 'http'"),
        (("127.0.0.1",), ValueError, "needs a port, or a URL"),
        (("ws://127.0.0.1:1/", 1), TypeError, "not both"),
        (("pb://127.0.0.1:1/path",), ValueError, "not a path"),
        (("ws://:80/",), ValueError, "no host"),
    ],
)
async def test_bad_urls_are_refused_clearly(args, error, match):
    with pytest.raises(error, match=match):
        await pb.connect(*args)


async def test_ssl_with_ws_and_origin_with_tcp_are_mistakes():
    tls = Tls()
    with pytest.raises(ValueError, match="use a wss:// URL"):
        await pb.connect("ws://127.0.0.1:1/", ssl=tls.client)
    with pytest.raises(ValueError, match="ws:// and wss:// URLs only"):
        await pb.connect("127.0.0.1", 1, origin="http://x")


async def test_nothing_listening_names_the_url():
    port = free_port()
    with pytest.raises(ConnectionRefusedError, match=f"ws://127.0.0.1:{port}/pb"):
        await within(pb.connect(f"ws://127.0.0.1:{port}/pb"))


class CuttingRelay:
    """A loopback TCP relay that cuts both directions once ``cut_after`` bytes came from the server."""

    def __init__(self, target_port: int, cut_after: int):
        self.target_port = target_port
        self.cut_after = cut_after
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> CuttingRelay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info) -> None:
        for writer in self._writers:
            writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)

        task = asyncio.ensure_future(upstream())
        sent = 0
        while data := await up_reader.read(65536):
            if sent + len(data) > self.cut_after:
                writer.write(data[: self.cut_after - sent])
                await writer.drain()
                break
            writer.write(data)
            sent += len(data)
        task.cancel()
        writer.close()  # the client side ends mid-message; the broker side too
        up_writer.close()


async def until(condition, step: float = 0.01) -> None:
    while not condition():
        await asyncio.sleep(step)
