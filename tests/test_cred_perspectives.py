"""Perspectives: pb-behaviour 35, getStateToCopyFor per user, and what a client cannot forge."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from core_net import serving, within
from cred_helpers import ALICE, BOB, client_of, make_portal

import pbnb as pb
from pbnb.core.reference import RemoteReference
from pbnb.cred import IPerspective


class Board(pb.Viewable):
    """A shared notice board: each post is signed with the poster's avatar."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str]] = []

    def view_post(self, perspective: Any, text: str) -> str:
        self.posts.append((perspective.name, text))
        return perspective.name


class Badge(pb.Copyable):
    """A copy whose content depends on who receives it."""

    def getStateToCopyFor(self, perspective: Any) -> dict:
        return {"viewer": getattr(perspective, "name", None)}


class RemoteBadge(pb.RemoteCopy):
    pass


pb.setUnjellyableForClass(Badge, RemoteBadge)


class Roster(pb.Cacheable):
    """A cache that records whom each copy was made for, and who stopped observing."""

    def __init__(self) -> None:
        self.observed_by: list[str] = []
        self.stopped: list[str] = []
        self.stopped_event = asyncio.Event()

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> dict:
        self.observed_by.append(perspective.name)
        return {"made_for": perspective.name}

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:
        self.stopped.append(perspective.name)
        self.stopped_event.set()


class RemoteRoster(pb.RemoteCache):
    pass


pb.setUnjellyableForClass(Roster, RemoteRoster)


class Member(pb.Avatar):
    def __init__(self, name: str, realm: Realm, mind: Any):
        self.name, self.realm, self.mind = name, realm, mind

    def perspective_whoami(self) -> str:
        return self.name

    def perspective_board(self) -> Board:
        return self.realm.board

    def perspective_badge(self) -> Badge:
        return Badge()

    def perspective_roster(self) -> Roster:
        return self.realm.roster

    async def perspective_hand_board_to(self, name: str) -> Any:
        """Push the board, and a badge, to another member's mind."""
        return await self.realm.members[name].mind.callRemote("take", self.realm.board, Badge())


class Realm:
    def __init__(self) -> None:
        self.board = Board()
        self.roster = Roster()
        self.members: dict[str, Member] = {}

    def requestAvatar(self, avatar_id: str, mind: Any, *interfaces: type) -> tuple:
        member = self.members[avatar_id] = Member(avatar_id, self, mind)
        return IPerspective, member, lambda: None


class Inbox(pb.Referenceable):
    def __init__(self) -> None:
        self.received: asyncio.Queue = asyncio.Queue()

    def remote_take(self, board: Any, badge: Any) -> str:
        self.received.put_nowait((board, badge))
        return badge.viewer


@asynccontextmanager
async def alice_and_bob(realm: Realm, bob_mind: Any = None) -> AsyncIterator[tuple[Any, Any]]:
    """Serve ``realm``; log Alice and Bob in on connections of their own; yield their avatars."""
    async with serving(make_portal(realm)) as server:
        async with client_of(server) as alice_client, client_of(server) as bob_client:
            alice = await within(alice_client.login(ALICE))
            bob = await within(bob_client.login(BOB, bob_mind))
            yield alice, bob


async def test_view_methods_get_the_caller_avatar_wherever_the_reference_went() -> None:
    """Behaviour 35: from a perspective_ answer, and from a push through another user's mind."""
    realm = Realm()
    bob_inbox = Inbox()
    async with alice_and_bob(realm, bob_inbox) as (alice, bob):
        alice_board = await within(alice.callRemote("board"))
        bob_board = await within(bob.callRemote("board"))
        assert await within(alice_board.callRemote("post", "hi from alice")) == "alice"
        assert await within(bob_board.callRemote("post", "hi from bob")) == "bob"
        # Alice's call pushes the board to Bob: on Bob's connection it is Bob's view.
        assert await within(alice.callRemote("hand_board_to", "bob")) == "bob"
        pushed_board, pushed_badge = await within(bob_inbox.received.get())
        assert pushed_badge.viewer == "bob"
        assert await within(pushed_board.callRemote("post", "pushed")) == "bob"
    assert realm.board.posts == [("alice", "hi from alice"), ("bob", "hi from bob"), ("bob", "pushed")]


async def test_get_state_to_copy_for_sees_the_receiving_avatar() -> None:
    """getStateToCopyFor(perspective) gets the avatar of the connection the copy goes to."""
    realm = Realm()
    async with alice_and_bob(realm) as (alice, bob):
        assert (await within(alice.callRemote("badge"))).viewer == "alice"
        assert (await within(bob.callRemote("badge"))).viewer == "bob"


async def test_pushes_from_outside_any_call_go_out_as_the_connection_avatar() -> None:
    realm = Realm()
    async with serving(make_portal(realm)) as server:
        async with client_of(server) as bob_client:
            inbox = Inbox()
            bob = await within(bob_client.login(BOB, inbox))
            viewer = await within(realm.members["bob"].mind.callRemote("take", realm.board, Badge()))
            assert viewer == "bob"
            board, _ = await within(inbox.received.get())
            assert await within(board.callRemote("post", "from a push")) == "bob"
            assert await within(bob.callRemote("whoami")) == "bob"


async def test_cacheable_hooks_see_the_avatar_of_each_connection() -> None:
    realm = Realm()
    async with alice_and_bob(realm) as (alice, bob):
        alice_copy = await within(alice.callRemote("roster"))
        bob_copy = await within(bob.callRemote("roster"))
        assert (alice_copy.made_for, bob_copy.made_for) == ("alice", "bob")
        del alice_copy
        gc.collect()
        await within(realm.roster.stopped_event.wait())
        assert realm.roster.stopped == ["alice"]
        assert bob_copy.made_for == "bob"


async def test_a_client_cannot_forge_the_perspective_of_a_view_method() -> None:
    realm = Realm()
    async with alice_and_bob(realm) as (alice, bob):
        board = await within(bob.callRemote("board"))
        # The perspective is bound by the server; a client cannot pass its own.
        with pytest.raises(pb.RemoteError, match="multiple values"):
            await within(board.callRemote("post", "as alice?", perspective="alice"))
        with pytest.raises(pb.SerializationError, match="another connection"):
            await within(board.callRemote("post", alice))
        with pytest.raises(pb.RemoteError, match="positional"):
            await within(board.callRemote("post", bob, "extra"))
        assert await within(board.callRemote("post", "signed")) == "bob"
    assert realm.board.posts == [("bob", "signed")]


async def test_a_client_cannot_reach_another_users_avatar() -> None:
    """References name objects per connection: guessing ids on Bob's connection never finds Alice."""
    realm = Realm()
    async with serving(make_portal(realm)) as server:
        async with client_of(server) as alice_client, client_of(server) as bob_client:
            alice = await within(alice_client.login(ALICE))
            await within(alice.callRemote("board"))
            bob = await within(bob_client.login(BOB))
            answers = set()
            for export_id in range(0, 40):
                forged = RemoteReference(bob_client.broker, export_id)
                try:
                    answers.add(await within(forged.callRemote("whoami")))
                except (pb.NoSuchMethod, pb.ProtocolError):
                    pass
            assert answers == {"bob"}
            assert bob_client.connected
            assert await within(bob.callRemote("whoami")) == "bob"
            root = await within(bob_client.getRootObject())
            with pytest.raises(pb.NoSuchMethod):
                await within(root.callRemote("whoami"))
