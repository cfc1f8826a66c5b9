"""PB over WebSocket (ws:// and wss://): the same broker, references, caches and login as over TCP."""

from __future__ import annotations

import asyncio
import gc

import pytest
from core_net import within
from cred_helpers import ALICE, Realm, make_portal
from ws_helpers import Tls, ws_client, ws_serving, ws_url
from ws_service import Service

import pbnb as pb
from pbnb.aio.websocket import WebSocketTransport
from pbnb.cred import UnauthorizedLogin, UsernamePassword


@pytest.fixture(scope="module")
def tls() -> Tls:
    return Tls()


@pytest.fixture(params=["ws", "wss"])
def scheme(request: pytest.FixtureRequest) -> str:
    return request.param


class Twicer(pb.Referenceable):
    def remote_twice(self, value):
        return value * 2


async def test_calls_go_over_websocket_and_tcp_on_one_port(scheme, tls):
    async with ws_serving(Service(), scheme, tls) as server:
        async with ws_client(ws_url(server, scheme), tls) as client:
            assert isinstance(client.connection.transport, WebSocketTransport)
            assert client.connection.transport.get_extra_info("websocket_path") is None  # client side
            root = await within(client.getRootObject())
            assert await within(root.callRemote("echo", {"a": [1, 2.5, None, b"x"]})) == {
                "a": [1, 2.5, None, b"x"]
            }
            (served,) = server.connections
            assert served.transport.get_extra_info("websocket_path") == "/pb"
            # The same port still takes raw PB clients.
            tcp = await within(
                pb.connect(
                    "127.0.0.1",
                    server.port,
                    ssl=tls.client if scheme == "wss" else None,
                    server_hostname="pbnb.test" if scheme == "wss" else None,
                )
            )
            async with tcp:
                assert not isinstance(tcp.connection.transport, WebSocketTransport)
                assert await within((await tcp.getRootObject()).callRemote("echo", "tcp")) == "tcp"
                assert len(server.connections) == 2


async def test_pipelined_calls_and_values_larger_than_a_message(scheme, tls):
    """Many calls in flight, and values spanning several 1 MiB messages, both ways."""
    async with ws_serving(Service(), scheme, tls) as server, ws_client(ws_url(server, scheme), tls) as client:
        root = await within(client.getRootObject())
        answers = await within(asyncio.gather(*(root.callRemote("echo", i) for i in range(500))))
        assert answers == list(range(500))
        big = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: four messages
        assert await within(root.callRemote("echo", big)) == big
        assert await within(root.callRemote("blob", 5 << 20)) == b"\xab" * (5 << 20)


async def test_references_both_ways(scheme, tls):
    async with ws_serving(Service(), scheme, tls) as server, ws_client(ws_url(server, scheme), tls) as client:
        root = await within(client.getRootObject())
        # Client -> server: the server calls the client's object back.
        assert await within(root.callRemote("call_back", Twicer(), 21)) == 42
        # Server -> client: a reference the client calls, and which comes home as itself.
        counter = await within(root.callRemote("counter"))
        assert isinstance(counter, pb.RemoteReference)
        assert [await within(counter.callRemote("bump")) for _ in range(3)] == [1, 2, 3]
        assert await within(root.callRemote("is_counter", counter)) is True


async def test_a_cache_follows_live_updates(scheme, tls):
    service = Service()
    async with ws_serving(service, scheme, tls) as server:
        async with (
            ws_client(ws_url(server, scheme), tls) as one,
            ws_client(ws_url(server, scheme), tls) as two,
        ):
            root_one = await within(one.getRootObject())
            root_two = await within(two.getRootObject())
            copy = await within(root_one.callRemote("notes"))
            assert copy.items == []
            changed = asyncio.Event()
            copy.changed = lambda fields: changed.set()
            assert await within(root_two.callRemote("add", "from two")) == 1
            await within(changed.wait())
            assert copy.items == ["from two"]
            assert len(service.notes.observers) == 1
            del copy
            gc.collect()
            await within(until(lambda: not service.notes.observers))


async def test_login_and_a_bad_password(scheme, tls):
    realm = Realm()
    async with ws_serving(make_portal(realm), scheme, tls) as server:
        async with ws_client(ws_url(server, scheme), tls) as client:
            avatar = await within(client.login(ALICE))
            assert await within(avatar.callRemote("whoami")) == "alice"
        async with ws_client(ws_url(server, scheme), tls) as client:
            with pytest.raises(UnauthorizedLogin):
                await within(client.login(UsernamePassword("alice", "wrong")))
            assert client.connected  # refused, not dropped
    assert realm.requested == ["alice"]


async def test_limits_apply_to_pb_frames_inside_messages(scheme, tls):
    """max_frame counts PB frames, whatever messages carry them."""
    async with ws_serving(Service(), scheme, tls, max_frame=64 * 1024) as server:
        async with ws_client(ws_url(server, scheme), tls) as client:
            root = await within(client.getRootObject())
            with pytest.raises(pb.LimitExceeded, match="frame limit"):
                await within(root.callRemote("echo", b"x" * 100_000))
            assert await within(root.callRemote("echo", "still up")) == "still up"


@pytest.mark.slow  # waits out a timeout of seconds, by design
async def test_keepalive_pings_and_pongs_travel_over_websocket(tls):
    """The server drops a peer silent for 3 s; pongs in WebSocket messages keep this one up."""
    async with ws_serving(Service(), "ws", tls, keepalive=0.1, dead_peer_timeout=3.0) as server:
        async with ws_client(ws_url(server, "ws"), tls) as client:
            root = await within(client.getRootObject())
            (served,) = server.connections
            await within(until(lambda: served._ping_token >= 40))  # 4 s of pings at least
            assert client.connected
            assert await within(root.callRemote("echo", "alive")) == "alive"


async def until(condition, step: float = 0.01) -> None:
    while not condition():
        await asyncio.sleep(step)
