"""Logout and leaks: pb-behaviours 32 and 37, over real loopback sockets."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from core_net import serving, within
from cred_helpers import ALICE, BOB, Mind, Realm, client_of, login_root_of, make_portal

import pbnb as pb
from pbnb.cred.scram import ClientExchange


@pytest.fixture(autouse=True)
def _no_debug_records(caplog) -> None:
    # Captured DEBUG records keep tracebacks, and so frames and references, alive.
    caplog.set_level(logging.INFO, logger="pbnb")


def _server_side_closed(server: pb.Server) -> asyncio.Future:
    """Done when the server's only connection has closed (taken now, while it is still listed)."""
    (connection,) = server.connections
    return asyncio.shield(connection.closed)


async def _round_trip(server: pb.Server) -> None:
    """A full login on a fresh connection: every callback queued before it has run."""
    async with client_of(server) as other:
        await within(other.login(BOB))


async def test_logout_runs_once_when_the_connection_drops() -> None:
    """Behaviour 32, disconnect first."""
    realm = Realm()
    async with serving(make_portal(realm)) as server:
        async with client_of(server) as client:
            avatar = await within(client.login(ALICE))
            assert await within(avatar.callRemote("whoami")) == "alice"
            closed = _server_side_closed(server)
        await within(closed)
        await realm.wait_logouts(1)
        del avatar
        gc.collect()
        await _round_trip(server)
        assert realm.logouts[0] == 1 and realm.logouts.count(1) == 1


async def test_logout_runs_once_when_the_client_drops_the_avatar() -> None:
    """Behaviour 32, reference dropped first; the later disconnect does not log out again."""
    realm = Realm()
    async with serving(make_portal(realm)) as server:
        async with client_of(server) as client:
            avatar = await within(client.login(ALICE))
            root = login_root_of(server)
            assert len(root.sessions) == 1
            del avatar
            gc.collect()
            await realm.wait_logouts(1)
            assert root.sessions == []
            assert client.connected
        await _round_trip(server)
        assert realm.logouts.count(1) == 1


async def test_each_login_has_its_own_logout_and_the_perspective_follows() -> None:
    """Behaviours 32 and 33: dropping one avatar logs out that one only."""
    realm = Realm()
    async with serving(make_portal(realm)) as server, client_of(server) as client:
        first = await within(client.login(ALICE))
        second = await within(client.login(BOB))
        (connection,) = server.connections
        avatars = [session.avatar for session in login_root_of(server).sessions]
        assert connection.broker.perspective is avatars[1]
        del second
        gc.collect()
        await realm.wait_logouts(1)
        assert realm.logouts == [2]
        assert connection.broker.perspective is avatars[0]
        assert await within(first.callRemote("whoami")) == "alice"
        del first
        gc.collect()
        await realm.wait_logouts(2)
        assert realm.logouts == [2, 1]
        assert connection.broker.perspective is None


async def test_disconnect_while_the_realm_works_leaks_nothing() -> None:
    """Behaviour 37: the avatar made after the client left is logged out; no mind is kept."""
    realm = Realm()
    realm.gate = asyncio.Event()
    async with serving(make_portal(realm)) as server:
        client = await within(pb.connect("127.0.0.1", server.port))
        login = asyncio.ensure_future(client.login(ALICE, Mind()))
        await within(realm.entered.wait())
        root = login_root_of(server)
        closed = _server_side_closed(server)
        client.connection.abort()
        await within(closed)
        with pytest.raises(pb.PBConnectionLost):
            await within(login)
        assert realm.logouts == []
        realm.gate.set()
        await realm.wait_logouts(1)
        del login
        gc.collect()
        assert [ref() for ref in realm.avatars] == [None]
        assert [ref() for ref in realm.minds] == [None]
        assert root.sessions == []
        await _round_trip(server)
        assert realm.logouts.count(1) == 1


async def test_giving_up_on_a_login_logs_the_late_avatar_out() -> None:
    """Behaviour 37: a cancelled login leaves no session, and the connection stays usable."""
    realm = Realm()
    realm.gate = asyncio.Event()
    async with serving(make_portal(realm)) as server, client_of(server) as client:
        mind = Mind()
        mind_released = asyncio.Event()
        client.connection.on_release(mind, mind_released.set)
        login = asyncio.ensure_future(client.login(ALICE, mind))
        await within(realm.entered.wait())
        login.cancel()
        with pytest.raises(asyncio.CancelledError):
            await login
        realm.gate.set()
        await realm.wait_logouts(1)
        gc.collect()
        await within(mind_released.wait())
        assert login_root_of(server).sessions == []
        assert server.connections.copy().pop().broker.perspective is None
        realm.gate = None
        avatar = await within(client.login(BOB))
        assert await within(avatar.callRemote("whoami")) == "bob"


async def test_disconnect_between_the_two_login_messages_leaks_nothing() -> None:
    """Behaviour 37: nothing was requested from the realm, and the server's tables empty."""
    realm = Realm()
    async with serving(make_portal(realm)) as server:
        client = await within(pb.connect("127.0.0.1", server.port))
        root = await within(client.getRootObject())
        _, _challenge = await within(root.callRemote("scram_first", ClientExchange("alice", "x").first()))
        (connection,) = server.connections
        assert connection.broker.table_sizes()["exports"] == 2  # the login root and the challenge
        closed = _server_side_closed(server)
        await client.close()
        await within(closed)
        assert connection.broker.table_sizes()["exports"] == 0
        assert realm.requested == [] and realm.logouts == []
