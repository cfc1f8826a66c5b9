"""What a stranger can make a login server do: bounded work, no user enumeration, throttled guessing.

Each test has a bystander, a logged-in client that keeps calling its avatar
while the stranger works; it must never fail.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from core_net import serving, within
from cred_helpers import ALICE, BOB, make_portal
from reliability.harness import Bystander

import pbnb as pb
from pbnb.cred import (
    MAX_USERNAME,
    FilePasswordChecker,
    InMemoryPasswordChecker,
    LoginThrottle,
    LoginThrottled,
    UnauthorizedLogin,
    UsernamePassword,
)
from pbnb.cred.passwd import main as passwd_main
from pbnb.cred.scram import ClientExchange


async def _whoami(avatar: Any, value: Any) -> Any:
    await avatar.callRemote("whoami")
    return value


@asynccontextmanager
async def bystander_of(server: pb.Server) -> AsyncIterator[Bystander]:
    """Bob, logged in and calling his avatar throughout; checked for errors on the way out."""
    async with await pb.connect("127.0.0.1", server.port) as client:
        watch = Bystander(await within(client.login(BOB)), _whoami)
        yield watch
        await watch.stop()
        assert watch.error is None, f"the bystander failed: {watch.error!r}"
        assert await within(watch.call(-1))


def server_first_fields(server_first: str) -> dict[str, str]:
    return dict(field.split("=", 1) for field in server_first.split(","))


async def test_a_frame_too_big_before_login_closes_the_connection():
    async with serving(make_portal()) as server, bystander_of(server):
        async with await pb.connect("127.0.0.1", server.port) as stranger:
            root = await stranger.getRootObject()
            with pytest.raises((pb.LimitExceeded, pb.PBConnectionLost)):
                await within(root.callRemote("scram_first", "n,,n=" + "a" * 100_000 + ",r=nonce"))
            await within(stranger.wait_closed())
        async with await pb.connect("127.0.0.1", server.port) as user:
            avatar = await within(user.login(ALICE))
            # Logged in: the connection's own limit applies again.
            assert await within(avatar.callRemote("whoami")) == "alice"
            assert all(c.broker.max_frame == c.broker.limits.max_frame > 64 << 10 for c in server.connections)


async def test_a_huge_user_name_is_refused_before_any_work_and_logged_short(caplog):
    portal = make_portal(max_frame_before_login=16 << 20)  # let the name through to the login code
    async with serving(portal) as server, bystander_of(server):
        async with await pb.connect("127.0.0.1", server.port) as stranger:
            root = await stranger.getRootObject()
            with caplog.at_level(logging.INFO, logger="pbnb"):
                with pytest.raises(UnauthorizedLogin, match="at most"):
                    await within(root.callRemote("scram_first", "n,,n=" + "a" * 5_000_000 + ",r=nonce"))
                with pytest.raises(UnauthorizedLogin, match=f"at most {MAX_USERNAME} characters"):
                    await within(root.callRemote("scram_first", "n,,n=" + "b" * (MAX_USERNAME + 1) + ",r=n"))
            assert all(len(record.getMessage()) < 2000 for record in caplog.records)
            assert any("failed login" in record.getMessage() for record in caplog.records)
            # A name of the longest allowed length still goes through the whole exchange.
            with pytest.raises(UnauthorizedLogin, match="wrong user name or password"):
                await within(stranger.login(UsernamePassword("c" * MAX_USERNAME, "guess")))


async def test_a_client_refuses_a_user_name_it_could_not_send():
    with pytest.raises(ValueError, match=f"at most {MAX_USERNAME} characters"):
        ClientExchange("x" * (MAX_USERNAME + 1), "password")


async def test_unfinished_logins_per_connection_are_capped_and_freed_when_dropped():
    async with serving(make_portal(max_pending_logins=3, max_failures=10)) as server, bystander_of(server):
        async with await pb.connect("127.0.0.1", server.port) as stranger:
            root = await stranger.getRootObject()
            challenges = [
                (await within(root.callRemote("scram_first", ClientExchange("alice", "x").first())))[1]
                for _ in range(3)
            ]
            with pytest.raises(UnauthorizedLogin, match="max_pending_logins=3"):
                await within(root.callRemote("scram_first", ClientExchange("alice", "x").first()))
            del challenges[0]  # letting go of a challenge ends that exchange on the server
            gc.collect()

            async def slot_freed() -> None:
                while True:
                    try:
                        return await root.callRemote("scram_first", ClientExchange("alice", "x").first())
                    except UnauthorizedLogin:
                        await asyncio.sleep(0.01)

            await within(slot_freed())
            # Finishing an exchange frees its slot as well, whatever the outcome.
            assert await within(stranger.login(ALICE)) is not None


@pytest.mark.parametrize("iterations", [4096, 10_000])
async def test_unknown_users_get_a_challenge_shaped_like_a_real_one(iterations):
    checker = InMemoryPasswordChecker(
        {"alice": "correct horse", "bob": "battery staple"}, iterations=iterations
    )
    async with serving(make_portal(None, checker)) as server, bystander_of(server):
        async with await pb.connect("127.0.0.1", server.port) as stranger:
            root = await stranger.getRootObject()
            shapes = []
            for name in ("alice", "nobody", "nobody"):
                server_first, _ = await within(
                    root.callRemote("scram_first", ClientExchange(name, "x").first())
                )
                fields = server_first_fields(server_first)
                shapes.append((fields["i"], len(base64.b64decode(fields["s"])), fields["s"]))
    (known_i, known_len, _), (decoy_i, decoy_len, salt), (_, _, again) = shapes
    assert known_i == decoy_i == str(iterations)
    assert known_len == decoy_len
    assert salt == again  # an unknown user's salt is as stable as a real one


async def test_decoys_copy_the_iteration_count_of_a_password_file(tmp_path, monkeypatch):
    path = tmp_path / "users.txt"
    monkeypatch.setenv("PBNB_PASSWORD", "battery staple")
    for user in ("bob", "carol"):
        assert passwd_main([str(path), user, "--password-env", "PBNB_PASSWORD", "--iterations", "6000"]) == 0
    async with serving(make_portal(None, FilePasswordChecker(path))) as server, bystander_of(server):
        async with await pb.connect("127.0.0.1", server.port) as stranger:
            root = await stranger.getRootObject()
            for name in ("carol", "nobody"):
                server_first, _ = await within(
                    root.callRemote("scram_first", ClientExchange(name, "x").first())
                )
                assert server_first_fields(server_first)["i"] == "6000", name


async def test_guessing_one_user_over_many_connections_is_throttled():
    throttle = LoginThrottle(per_user=3, per_address=None, window=60.0)
    async with serving(make_portal(throttle=throttle, max_failures=2)) as server, bystander_of(server):
        for attempt in range(3):  # a new connection each time: max_failures alone would not stop this
            async with await pb.connect("127.0.0.1", server.port) as guesser:
                with pytest.raises(UnauthorizedLogin) as refused:
                    await within(guesser.login(UsernamePassword("alice", f"guess {attempt}")))
                assert not isinstance(refused.value, LoginThrottled)
        async with await pb.connect("127.0.0.1", server.port) as guesser:
            with pytest.raises(
                LoginThrottled, match=r"too many failed logins as this user; try again in \d+ s"
            ):
                await within(guesser.login(ALICE))  # even the right password waits
            assert await within(guesser.login(BOB)) is not None  # other users are not affected


async def test_guessing_from_one_address_is_throttled_for_every_name():
    throttle = LoginThrottle(per_user=None, per_address=2, window=60.0)
    async with serving(make_portal(throttle=throttle)) as server:
        async with await pb.connect("127.0.0.1", server.port) as guesser:
            for name in ("alice", "nobody"):
                with pytest.raises(UnauthorizedLogin):
                    await within(guesser.login(UsernamePassword(name, "guess")))
            with pytest.raises(LoginThrottled, match=r"too many failed logins from 127\.0\.0\.1"):
                await within(guesser.login(UsernamePassword("anyone", "guess")))


def test_the_throttle_forgives_after_its_window_and_forgets_the_oldest_beyond_capacity():
    now = [0.0]
    throttle = LoginThrottle(per_user=2, per_address=None, window=10.0, capacity=100, clock=lambda: now[0])
    throttle.failed("alice", "a")
    throttle.failed("alice", "a")
    with pytest.raises(LoginThrottled, match="try again in 10 s"):
        throttle.check("alice", "a")
    now[0] = 10.5
    throttle.check("alice", "a")  # both failures are out of the window
    throttle.failed("alice", "a")
    throttle.failed("alice", "a")
    for n in range(100):  # a spray of names pushes alice out of a full table
        throttle.failed(f"name {n}", "a")
    throttle.check("alice", "a")


def test_throttle_and_portal_options_are_checked():
    with pytest.raises(ValueError, match="per_user"):
        LoginThrottle(per_user=0)
    with pytest.raises(ValueError, match="max_pending_logins"):
        make_portal(max_pending_logins=0)
    assert make_portal(throttle=None).throttle is None
    assert isinstance(make_portal().throttle, LoginThrottle)


def test_the_security_page_states_every_pre_auth_default():
    """docs/security.md's table "Before login" gives the defaults the code has."""
    import inspect
    from pathlib import Path

    from pbnb.core.serialize import MAX_SAME_HASH
    from pbnb.cred import Portal
    from pbnb.cred.scram import MAX_FIRST_MESSAGE

    page = (Path(__file__).parent.parent / "docs" / "security.md").read_text()
    table = page[page.index("### Before login") :]
    serve = inspect.signature(pb.serve).parameters
    portal = inspect.signature(Portal).parameters
    throttle = inspect.signature(LoginThrottle).parameters
    rows = {
        "`serve(handshake_timeout=)`": f"{serve['handshake_timeout'].default:g} s",
        "`serve(max_pending_handshakes=)`": str(serve["max_pending_handshakes"].default),
        "colliding keys": f"{MAX_SAME_HASH} per message",
        "user name": f"{MAX_USERNAME} characters",
        "`Portal(max_pending_logins=)`": str(portal["max_pending_logins"].default),
        "`Portal(max_frame_before_login=)`": f"{portal['max_frame_before_login'].default} bytes",
        "`Portal(max_failures=)`": str(portal["max_failures"].default),
        "`Portal(throttle=": f"{throttle['per_user'].default} failures per user name, "
        f"{throttle['per_address'].default} per address, in {throttle['window'].default:g} s",
    }
    for name, default in rows.items():
        (line,) = [line for line in table.splitlines() if line.startswith(f"| {name}")]
        assert f"| {default} |" in line, (name, default, line)
    assert f"{MAX_FIRST_MESSAGE:,} characters" in table
