"""SCRAM-SHA-256: pb-behaviour 36 (no password on the wire, no MD5) and the stored secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from core_net import serving, within
from cred_helpers import USERS, Realm, Relay, client_of, make_portal
from hypothesis import given, settings
from hypothesis import strategies as st

import pbnb as pb
from pbnb.cred import InMemoryPasswordChecker, ScramSecret, UnauthorizedLogin, UsernamePassword
from pbnb.cred.scram import ClientExchange, ServerExchange, decoy_secret

PASSWORD = USERS["alice"]


async def test_the_password_never_crosses_the_wire() -> None:
    """Behaviour 36: every byte both ways is recorded; neither the password nor its keys appear."""
    portal = make_portal(Realm())
    async with serving(portal) as server:
        async with Relay(server.port) as relay:
            client = await within(pb.connect("127.0.0.1", relay.port))
            async with client:
                avatar = await within(client.login(UsernamePassword("alice", PASSWORD)))
                assert await within(avatar.callRemote("whoami")) == "alice"
    wire = bytes(relay.upstream) + bytes(relay.downstream)
    assert b"n=alice" in relay.upstream  # the exchange did go through the relay
    secret = portal.scram_lookup()("alice")
    forbidden = {
        "password": PASSWORD.encode(),
        "password, base64": base64.b64encode(PASSWORD.encode()),
        "stored key": secret.stored_key,
        "server key": secret.server_key,
        "stored key, base64": base64.b64encode(secret.stored_key),
    }
    assert [name for name, data in forbidden.items() if data in wire] == []


async def test_no_md5_is_used(monkeypatch) -> None:
    """Behaviour 36: a whole login and a password check run with MD5 made unusable."""

    def no_md5(*args, **kwargs):
        raise AssertionError("MD5 was used")

    real_new = hashlib.new
    monkeypatch.setattr(hashlib, "md5", no_md5)
    monkeypatch.setattr(
        hashlib, "new", lambda name, *a, **k: no_md5() if name.lower() == "md5" else real_new(name, *a, **k)
    )
    async with serving(make_portal()) as server, client_of(server) as client:
        avatar = await within(client.login(UsernamePassword("bob", USERS["bob"])))
        assert await within(avatar.callRemote("whoami")) == "bob"
    sources = Path(pb.__file__).parent.rglob("*.py")
    assert [str(p) for p in sources if "md5" in p.read_text(encoding="utf-8").lower()] == []


def test_secrets_follow_rfc_5802_with_a_slow_salted_hash() -> None:
    """StoredKey = H(HMAC(SaltedPassword, "Client Key")), SaltedPassword = PBKDF2-SHA-256."""
    secret = ScramSecret.from_password(PASSWORD, iterations=5000)
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), secret.salt, 5000)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert secret.stored_key == hashlib.sha256(client_key).digest()
    assert secret.server_key == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert len(secret.salt) == 32 and secret.iterations == 5000
    assert ScramSecret.from_password(PASSWORD).salt != secret.salt  # a fresh salt each time
    assert secret.matches(PASSWORD) and not secret.matches(PASSWORD + "!")
    with pytest.raises(ValueError, match="at least 4096"):
        ScramSecret.from_password(PASSWORD, iterations=1000)


def test_secrets_round_trip_through_text_and_bad_text_is_refused() -> None:
    secret = ScramSecret.from_password(PASSWORD)
    text = secret.format()
    assert text.startswith("SCRAM-SHA-256$4096:") and PASSWORD not in text
    assert ScramSecret.parse(text) == secret
    salt = base64.b64encode(secret.salt).decode()
    key = base64.b64encode(secret.stored_key).decode()
    for bad, reason in (
        ("", "not a SCRAM-SHA-256 secret"),
        (f"MD5$4096:{salt}${key}:{key}", "only SCRAM-SHA-256"),
        (f"SCRAM-SHA-256$10:{salt}${key}:{key}", "bad iterations"),
        (f"SCRAM-SHA-256$4096:{salt}$abc:{key}", "not a SCRAM-SHA-256 secret"),
        (f"SCRAM-SHA-256$4096:QUJD${key}:{key}", "salt shorter"),
        (f"SCRAM-SHA-256$4096:{salt}${key}", "not a SCRAM-SHA-256 secret"),
    ):
        with pytest.raises(ValueError, match=reason):
            ScramSecret.parse(bad)


def test_checkers_keep_no_plaintext() -> None:
    checker = InMemoryPasswordChecker({"alice": PASSWORD})
    assert PASSWORD not in repr(vars(checker))
    assert isinstance(checker.secret_for("alice"), ScramSecret)
    assert checker.secret_for("nobody") is None


def test_decoy_secrets_are_stable_per_user_and_match_no_password() -> None:
    key = b"k" * 32
    first, again, other = decoy_secret(key, "mallory"), decoy_secret(key, "mallory"), decoy_secret(key, "eve")
    assert first.salt == again.salt != other.salt
    assert len(first.salt) == len(ScramSecret.from_password("x").salt)
    assert first.stored_key != again.stored_key  # random keys: no password can match


async def test_a_server_that_does_not_hold_the_keys_is_not_trusted() -> None:
    """Mutual authentication: an impostor that accepts any proof cannot fake the server signature."""

    class Impostor(pb.Root):
        def remote_scram_first(self, client_first):
            exchange = ServerExchange(lambda username: decoy_secret(b"impostor", username))
            return exchange.first(client_first), Accomplice()

    class Accomplice(pb.Referenceable):
        def remote_scram_final(self, client_final, mind=None):
            return "v=" + base64.b64encode(b"\0" * 32).decode(), FakeAvatar()

    class FakeAvatar(pb.Avatar):
        pass

    async with await pb.serve(Impostor(), port=0) as server:
        async with client_of(server) as client:
            with pytest.raises(UnauthorizedLogin, match="could not prove"):
                await within(client.login(UsernamePassword("alice", PASSWORD)))


@pytest.mark.parametrize(("username", "password"), [("", "pw"), ("a\0b", "pw"), ("alice", "\a")])
async def test_names_and_passwords_scram_cannot_carry_fail_locally(username, password) -> None:
    async with serving(make_portal()) as server, client_of(server) as client:
        with pytest.raises(ValueError, match="cannot log in"):
            await within(client.login(UsernamePassword(username, password)))
        assert client.broker.table_sizes()["pending_calls"] == 0
    with pytest.raises(ValueError, match="unusable password"):
        ScramSecret.from_password("\a")


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(first=st.text(max_size=60), final=st.text(max_size=80), proof=st.binary(max_size=40))
def test_any_text_from_a_client_gives_a_refusal_never_a_crash(first: str, final: str, proof: bytes) -> None:
    secret = ScramSecret.from_password("pw", salt=b"s" * 32)
    try:
        ServerExchange(lambda username: secret).first(first)
    except ValueError:
        pass
    exchange = ServerExchange(lambda username: secret)
    exchange.first(ClientExchange("alice", "x").first())
    assert exchange.final(final) is None
    forged = ServerExchange(lambda username: secret)
    forged_nonce = forged.first(ClientExchange("alice", "x").first()).split(",")[0]
    assert forged.final(f"c=biws,{forged_nonce},p={base64.b64encode(proof).decode()}") is None
