"""Login over TLS with a certificate made for the test (trustme)."""

from __future__ import annotations

import ssl

import pytest
import trustme
from core_net import serving, within
from cred_helpers import ALICE, Realm, Relay, make_portal

import pbnb as pb


async def _connect(port: int, context: ssl.SSLContext, hostname: str | None = "pbnb.test") -> pb.Client:
    """Connect over TLS, checking the certificate for ``hostname`` (None: the address)."""
    return await within(pb.connect("127.0.0.1", port, ssl=context, server_hostname=hostname))


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("pbnb.test", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    authority.configure_trust(context)
    return context


async def test_login_over_tls_is_encrypted(server_context, client_context) -> None:
    realm = Realm()
    async with serving(make_portal(realm), ssl=server_context) as server:
        async with Relay(server.port) as relay, await _connect(relay.port, client_context) as client:
            ssl_object = client.connection.transport.get_extra_info("ssl_object")
            assert ssl_object is not None and ssl_object.version() in ("TLSv1.2", "TLSv1.3")
            avatar = await within(client.login(ALICE))
            assert await within(avatar.callRemote("whoami")) == "alice"
    assert realm.requested == ["alice"]
    # Even the SCRAM exchange (user name, nonces) is hidden on the wire.
    assert b"alice" not in relay.upstream and b"PBNB" not in relay.upstream


async def test_the_certificate_is_checked(server_context, client_context) -> None:
    """An untrusted certificate or a wrong host name is refused; the server keeps serving."""
    stranger = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    trustme.CA().configure_trust(stranger)
    async with serving(make_portal(), ssl=server_context) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate"):
            await _connect(server.port, stranger)
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            await _connect(server.port, client_context, hostname="other.test")
        async with await _connect(server.port, client_context, hostname=None) as client:
            avatar = await within(client.login(ALICE))
            assert await within(avatar.callRemote("whoami")) == "alice"


async def test_a_plaintext_client_cannot_talk_to_a_tls_server(server_context) -> None:
    async with serving(make_portal(), ssl=server_context) as server:
        with pytest.raises(pb.ProtocolError, match="requires TLS"):  # as docs/concepts.md says
            await within(pb.connect("127.0.0.1", server.port, timeout=5))
