"""Logging in over real loopback sockets: pb-behaviours 31, 33 and 34, and bad input."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from core_net import serving, within
from cred_helpers import ALICE, BOB, USERS, Mind, Realm, client_of, login_root_of, make_portal

import pbnb as pb
from pbnb.cred import (
    ANONYMOUS,
    AllowAnonymousAccess,
    Anonymous,
    InMemoryPasswordChecker,
    IPerspective,
    Portal,
    UnauthorizedLogin,
    UnhandledCredentials,
    UsernamePassword,
)
from pbnb.cred.scram import ClientExchange


async def test_login_returns_the_avatar_and_the_mind_reaches_the_realm() -> None:
    """Behaviour 31: the avatar answers for its user; the server calls the client back via the mind."""
    realm = Realm()
    mind = Mind()
    async with serving(make_portal(realm)) as server, client_of(server) as client:
        avatar = await within(client.login(ALICE, mind))
        assert isinstance(avatar, pb.RemoteReference)
        assert await within(avatar.callRemote("whoami")) == "alice"
        assert realm.requested == ["alice"]
        assert isinstance(realm.minds[0](), pb.RemoteReference)
        assert await within(avatar.callRemote("call_me_back", "hello")) == "ok"
        assert mind.told == ["alice: hello"]


async def test_a_plain_realm_works_as_well_as_a_coroutine() -> None:
    class PlainRealm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return IPerspective, Named(avatar_id), None

    class Named(pb.Avatar):
        def __init__(self, name):
            self.name = name

        def perspective_whoami(self):
            return self.name

    async with serving(make_portal(PlainRealm())) as server, client_of(server) as client:
        avatar = await within(client.login(BOB))
        assert await within(avatar.callRemote("whoami")) == "bob"


async def test_several_logins_on_one_connection_give_distinct_avatars() -> None:
    """Behaviour 33."""
    realm = Realm()
    async with serving(make_portal(realm)) as server, client_of(server) as client:
        first = await within(client.login(ALICE))
        second = await within(client.login(ALICE))
        third = await within(client.login(BOB))
        assert len({first, second, third}) == 3
        assert [await within(ref.callRemote("number")) for ref in (first, second, third)] == [1, 2, 3]
        assert [await within(ref.callRemote("whoami")) for ref in (first, second, third)] == [
            "alice",
            "alice",
            "bob",
        ]
        assert [session.avatar_id for session in login_root_of(server).sessions] == ["alice", "alice", "bob"]


async def test_wrong_user_and_wrong_password_fail_alike_and_are_logged(caplog) -> None:
    """Behaviour 34: same class, same message; both logged; the connection stays usable."""
    caplog.set_level(logging.WARNING, logger="pbnb.cred")
    realm = Realm()
    async with serving(make_portal(realm)) as server, client_of(server) as client:
        errors = []
        for credentials in (UsernamePassword("alice", "wrong"), UsernamePassword("mallory", USERS["alice"])):
            with pytest.raises(UnauthorizedLogin) as caught:
                await within(client.login(credentials, Mind()))
            errors.append(caught.value)
        assert [type(e) for e in errors] == [UnauthorizedLogin, UnauthorizedLogin]
        assert str(errors[0]) == str(errors[1]) == "wrong user name or password"
        assert realm.requested == []
        logged = [r.getMessage() for r in caplog.records if "failed login" in r.getMessage()]
        assert "failed login as 'alice'" in logged[0] and "failed login as 'mallory'" in logged[1]
        assert login_root_of(server).failures == 2
        avatar = await within(client.login(ALICE))
        assert await within(avatar.callRemote("whoami")) == "alice"


async def test_an_unknown_user_gets_a_challenge_shaped_like_a_real_one() -> None:
    """No hint which part was wrong: a stable decoy salt and the same iterations for unknown users."""

    def challenge_fields(server_first: str) -> dict[str, str]:
        return dict(part.split("=", 1) for part in server_first.split(","))

    async with serving(make_portal()) as server, client_of(server) as client:
        root = await within(client.getRootObject())
        seen = {}
        for username in ("alice", "mallory", "mallory"):
            first = ClientExchange(username, "x").first()
            server_first, _ = await within(root.callRemote("scram_first", first))
            seen.setdefault(username, []).append(challenge_fields(server_first))
        alice, (mallory1, mallory2) = seen["alice"][0], seen["mallory"]
        assert alice.keys() == mallory1.keys() == {"r", "s", "i"}
        assert alice["i"] == mallory1["i"] == "4096"
        assert len(alice["s"]) == len(mallory1["s"])
        assert mallory1["s"] == mallory2["s"] != alice["s"]


async def test_credentials_no_checker_handles_are_unhandled() -> None:
    """Behaviour 34: UnhandledCredentials, and anonymous login only where a checker allows it."""
    only_passwords = make_portal()
    only_anonymous = Portal(Realm(), [AllowAnonymousAccess()])
    async with serving(only_passwords) as server, client_of(server) as client:
        with pytest.raises(UnhandledCredentials, match="Anonymous"):
            await within(client.login(Anonymous()))
        assert await within((await within(client.login(ALICE))).callRemote("whoami")) == "alice"
    async with serving(only_anonymous) as server, client_of(server) as client:
        with pytest.raises(UnhandledCredentials, match="UsernamePassword"):
            await within(client.login(ALICE))
        avatar = await within(client.login(Anonymous()))
        assert await within(avatar.callRemote("whoami")) == ANONYMOUS

        class Token:
            pass

        with pytest.raises(UnhandledCredentials, match="Token"):
            await within(client.login(Token()))


async def test_a_portal_may_mix_checkers() -> None:
    """Behaviour 34: two password checkers and anonymous access on one portal."""
    realm = Realm()
    portal = Portal(
        realm,
        [
            InMemoryPasswordChecker(alice="a-pass"),
            InMemoryPasswordChecker(bob="b-pass"),
            AllowAnonymousAccess(),
        ],
    )
    async with serving(portal) as server, client_of(server) as client:
        for credentials, expected in (
            (UsernamePassword("alice", "a-pass"), "alice"),
            (UsernamePassword("bob", "b-pass"), "bob"),
            (Anonymous(), ANONYMOUS),
        ):
            avatar = await within(client.login(credentials))
            assert await within(avatar.callRemote("whoami")) == expected
        with pytest.raises(UnauthorizedLogin):
            await within(client.login(UsernamePassword("alice", "b-pass")))
    assert realm.requested == ["alice", "bob", ANONYMOUS]


def test_a_portal_refuses_bad_configuration() -> None:
    with pytest.raises(TypeError, match="not a checker"):
        Portal(Realm(), [object()])
    with pytest.raises(ValueError, match="max_failures"):
        Portal(Realm(), [AllowAnonymousAccess()], max_failures=0)
    with pytest.raises(ValueError, match="decoy_key"):
        Portal(Realm(), [AllowAnonymousAccess()], decoy_key=b"short")


def test_a_fixed_decoy_key_keeps_decoy_salts_across_restarts() -> None:
    def salt_after_restart(**options) -> bytes:
        return make_portal(**options).scram_lookup()("mallory").salt

    assert salt_after_restart(decoy_key=b"k" * 32) == salt_after_restart(decoy_key=b"k" * 32)
    assert salt_after_restart() != salt_after_restart()


async def test_too_many_failures_drop_the_connection_but_not_the_others() -> None:
    async with serving(make_portal(max_failures=3)) as server:
        async with client_of(server) as attacker, client_of(server) as honest:
            for _ in range(2):
                with pytest.raises(UnauthorizedLogin, match=r"^wrong user name or password$"):
                    await within(attacker.login(UsernamePassword("alice", "guess")))
            with pytest.raises(UnauthorizedLogin, match="too many failed logins"):
                await within(attacker.login(UsernamePassword("alice", "guess")))
            await within(attacker.wait_closed())
            assert not attacker.connected
            avatar = await within(honest.login(ALICE))
            assert await within(avatar.callRemote("whoami")) == "alice"


async def test_a_challenge_is_used_once_and_a_replayed_proof_fails() -> None:
    realm = Realm()
    async with serving(make_portal(realm)) as server, client_of(server) as client:
        root = await within(client.getRootObject())
        exchange = ClientExchange("alice", USERS["alice"])
        server_first, challenge = await within(root.callRemote("scram_first", exchange.first()))
        client_final = exchange.final(server_first)
        _, avatar = await within(challenge.callRemote("scram_final", client_final))
        assert await within(avatar.callRemote("whoami")) == "alice"
        with pytest.raises(UnauthorizedLogin, match="over"):
            await within(challenge.callRemote("scram_final", client_final))
        # The same proof against a fresh challenge (a new server nonce) is refused.
        _, fresh = await within(root.callRemote("scram_first", ClientExchange("alice", "x").first()))
        with pytest.raises(UnauthorizedLogin, match="wrong user name or password"):
            await within(fresh.callRemote("scram_final", client_final))
    assert realm.requested == ["alice"]


@pytest.mark.parametrize("message", [42, "", "garbage", "x,y,n=alice,r=abc", None])
async def test_malformed_first_messages_are_refused_clearly(message) -> None:
    async with serving(make_portal()) as server, client_of(server) as client:
        root = await within(client.getRootObject())
        with pytest.raises(UnauthorizedLogin, match="malformed login message"):
            await within(root.callRemote("scram_first", message))
        assert await within((await within(client.login(BOB))).callRemote("whoami")) == "bob"


@pytest.mark.parametrize("message", [7, "", "c=biws,r=nonsense,p=AAAA", "no proof"])
async def test_malformed_final_messages_are_refused_like_a_wrong_password(message) -> None:
    async with serving(make_portal()) as server, client_of(server) as client:
        root = await within(client.getRootObject())
        _, challenge = await within(root.callRemote("scram_first", ClientExchange("bob", "x").first()))
        with pytest.raises(UnauthorizedLogin, match="wrong user name or password"):
            await within(challenge.callRemote("scram_final", message))
        assert login_root_of(server).failures == 1


async def test_a_refused_login_keeps_no_mind(caplog) -> None:
    """The mind sent with a wrong proof is released at once, and never reaches the realm."""
    # Captured DEBUG records would keep the refusal's traceback, and its frames, alive.
    caplog.set_level(logging.INFO, logger="pbnb")
    realm = Realm()
    async with serving(make_portal(realm)) as server, client_of(server) as client:
        mind = Mind()
        released = asyncio.Event()
        client.connection.on_release(mind, released.set)
        with pytest.raises(UnauthorizedLogin):
            await within(client.login(UsernamePassword("bob", "wrong"), mind))
        gc.collect()
        await within(released.wait())
        assert client.broker.table_sizes()["exports"] == 0
        assert realm.requested == []


async def test_a_realm_that_fails_reports_to_the_client_and_keeps_no_session(caplog) -> None:
    class BrokenRealm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            raise RuntimeError("database is down")

    class WrongShapeRealm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return object()

    for realm, expected in ((BrokenRealm(), "database is down"), (WrongShapeRealm(), "interface, avatar")):
        async with serving(make_portal(realm)) as server, client_of(server) as client:
            with pytest.raises(pb.RemoteError, match=expected):
                await within(client.login(ALICE))
            assert login_root_of(server).sessions == []
            assert login_root_of(server).failures == 0


async def test_portal_login_in_process() -> None:
    realm = Realm()
    portal = make_portal(realm)
    interface, avatar, logout = await portal.login(ALICE, None, IPerspective)
    assert interface is IPerspective and avatar.name == "alice"
    logout()
    assert realm.logouts == [1]
    for wrong in (UsernamePassword("alice", "nope"), UsernamePassword("nobody", "nope")):
        with pytest.raises(UnauthorizedLogin, match=r"^wrong user name or password$"):
            await portal.login(wrong, None, IPerspective)
    with pytest.raises(UnhandledCredentials):
        await portal.login(Anonymous(), None, IPerspective)
