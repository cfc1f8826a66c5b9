"""The client side of a login: what ``Client.login`` runs."""

from __future__ import annotations

from typing import Any

from ..core.reference import RemoteReference
from ..errors import ProtocolError
from .credentials import IAnonymous, ICredentials, IUsernamePassword
from .errors import UnauthorizedLogin, UnhandledCredentials
from .scram import ClientExchange


async def login(root: RemoteReference, credentials: ICredentials, mind: Any = None) -> RemoteReference:
    """Log in through a Portal's login root; return a reference to the avatar.

    A password login runs SCRAM-SHA-256: only a proof derived from the
    password travels, and the server must prove in turn that it holds the
    user's keys. ``mind`` (a Referenceable of ours, or None) reaches the realm
    only after the proof was accepted.
    """
    if isinstance(credentials, IAnonymous):
        return await root.callRemote("anonymous", mind)
    if isinstance(credentials, IUsernamePassword):
        return await _scram_login(root, credentials.username, credentials.password, mind)
    raise UnhandledCredentials(f"pbnb cannot log in with {type(credentials).__name__} credentials")


async def _scram_login(root: RemoteReference, username: str, password: str, mind: Any) -> RemoteReference:
    exchange = ClientExchange(username, password)
    server_first, challenge = await root.callRemote("scram_first", exchange.first())
    try:
        client_final = exchange.final(server_first)
    except ValueError as exc:
        raise ProtocolError(f"the server sent a malformed login challenge: {exc}") from None
    server_final, avatar = await challenge.callRemote("scram_final", client_final, mind)
    if not isinstance(server_final, str) or not exchange.verify_server(server_final):
        # Dropping the avatar reference logs it out on the server.
        raise UnauthorizedLogin("the server could not prove it holds your password's keys; not trusting it")
    return avatar
