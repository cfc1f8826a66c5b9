"""Regression tests, over loopback, for what porting Twisted's PB howtos turned up."""

from __future__ import annotations

import pbnb as pb
from pbnb.cred import AllowAnonymousAccess, Anonymous, InMemoryPasswordChecker, LoginRoot, UsernamePassword

# ------------------------------------------------------------- the wrong user


class Card(pb.Copyable):
    """A copy whose state says who it was made for."""

    def getStateToCopyFor(self, perspective):
        return {"holder": getattr(perspective, "name", None)}


class CardCopy(pb.RemoteCopy):
    pass


pb.setUnjellyableForClass(Card, CardCopy)


class Board(pb.Viewable):
    def view_whoami(self, user):
        return getattr(user, "name", None)


class Desk(pb.Referenceable):
    """A plain object, shared by every user: what it hands out depends on who reached it."""

    board = Board()

    def remote_card(self):
        return Card()

    def remote_board(self):
        return self.board

    def remote_caller(self):
        caller = pb.current_perspective.get()
        return getattr(caller, "name", None)


desk = Desk()


class Clerk(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_desk(self):
        return desk


class Office(pb.Root):
    def remote_desk(self):
        return desk


class DeskLoginRoot(LoginRoot):
    def remote_desk(self):
        return desk


class FrontDesk(pb.Portal):
    def _pb_root_for(self, connection):
        return DeskLoginRoot(self, connection)


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return pb.IPerspective, Clerk(avatar_id or "anonymous"), None


async def _acts_for(ref: pb.RemoteReference) -> list:
    card = await ref.callRemote("card")
    board = await ref.callRemote("board")
    return [card.holder, await board.callRemote("whoami"), await ref.callRemote("caller")]


async def test_an_object_reached_through_an_avatar_acts_for_that_user_whoever_logs_in_later():
    checker = InMemoryPasswordChecker(alice="a", bob="b")
    portal = pb.Portal(Realm(), [checker, AllowAnonymousAccess()])
    async with await pb.serve(portal) as server, await pb.connect("127.0.0.1", server.port) as client:
        alice = await client.login(UsernamePassword("alice", "a"))
        alices_desk = await alice.callRemote("desk")
        assert await _acts_for(alices_desk) == ["alice", "alice", "alice"]
        bob = await client.login(UsernamePassword("bob", "b"))  # on the same connection
        bobs_desk = await bob.callRemote("desk")
        assert await _acts_for(bobs_desk) == ["bob", "bob", "bob"]
        assert await _acts_for(alices_desk) == ["alice", "alice", "alice"]  # still alice's
        guest = await client.login(Anonymous())  # as pbAnonClient does
        assert await _acts_for(await guest.callRemote("desk")) == ["anonymous"] * 3
        assert await _acts_for(alices_desk) == ["alice", "alice", "alice"]
        assert await _acts_for(bobs_desk) == ["bob", "bob", "bob"]


async def test_an_object_reached_before_any_login_acts_for_no_one():
    def root_for_each_connection():
        return Office()

    # A root of our own, and a portal: both hand out objects before anyone logs in.
    async with await pb.serve(root_for_each_connection) as server:
        async with await pb.connect("127.0.0.1", server.port) as client:
            office = await client.getRootObject()
            early = await office.callRemote("desk")
            assert await _acts_for(early) == [None, None, None]

    # A login root that also hands out the desk: reached before and after logins.
    portal = FrontDesk(Realm(), [InMemoryPasswordChecker(alice="a")])
    async with await pb.serve(portal) as server, await pb.connect("127.0.0.1", server.port) as client:
        early = await (await client.getRootObject()).callRemote("desk")
        alice = await client.login(UsernamePassword("alice", "a"))
        assert await _acts_for(await alice.callRemote("desk")) == ["alice"] * 3
        assert await _acts_for(early) == [None, None, None]
        later = await (await client.getRootObject()).callRemote("desk")  # the root is no one's
        assert await _acts_for(later) == [None, None, None]
