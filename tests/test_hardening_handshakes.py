"""Clients that never start, or start wrong: counted apart, dropped in time, told why.

A bystander (an established client) keeps calling throughout each test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from core_net import serving, within
from reliability.attacks import tls_contexts
from reliability.harness import Bystander

import pbnb as pb
from pbnb.__main__ import _parser


class Echo(pb.Root):
    def remote_echo(self, value: Any) -> Any:
        return value


@asynccontextmanager
async def bystander_of(server: pb.Server, **options: Any) -> AsyncIterator[Bystander]:
    async with await pb.connect("127.0.0.1", server.port, **options) as client:
        watch = Bystander(await within(client.getRootObject()))
        yield watch
        await watch.stop()
        assert watch.error is None, f"the bystander failed: {watch.error!r}"


async def test_a_plain_client_meeting_a_tls_server_gets_a_protocol_error():
    server_context, client_context = tls_contexts()
    async with serving(Echo(), ssl=server_context) as server:
        async with bystander_of(server, ssl=client_context, server_hostname="localhost"):
            with pytest.raises(pb.ProtocolError, match="requires TLS"):
                await within(pb.connect("127.0.0.1", server.port))


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_strangers_that_never_start_cannot_lock_out_real_clients(tls):
    options: dict[str, Any] = {}
    client_options: dict[str, Any] = {}
    if tls:
        server_context, client_context = tls_contexts()
        options["ssl"] = server_context
        client_options = {"ssl": client_context, "server_hostname": "localhost"}
    async with serving(Echo(), max_connections=3, max_pending_handshakes=8, **options) as server:
        async with bystander_of(server, **client_options):
            strangers = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(40)]
            assert server.pending_handshakes <= 8
            for _ in range(3):  # more than max_connections - 1 strangers are pending, yet:
                async with await pb.connect("127.0.0.1", server.port, **client_options) as client:
                    root = await within(client.getRootObject())
                    assert await within(root.callRemote("echo", "in")) == "in"
            for _, writer in strangers:
                writer.close()


async def test_a_pending_client_is_dropped_after_the_handshake_timeout():
    async with serving(Echo(), handshake_timeout=0.5) as server, bystander_of(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await within(reader.read()) == b""  # dropped without a word: it said nothing
        assert server.pending_handshakes == 0
        writer.close()


def test_serve_takes_keepalive_and_handshake_timeout():
    args = _parser().parse_args(["serve", "m:r", "--keepalive", "5", "--handshake-timeout", "2.5"])
    assert (args.keepalive, args.handshake_timeout) == (5.0, 2.5)
    assert _parser().parse_args(["serve", "m:r"]).handshake_timeout == 10.0
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["serve", "m:r", "--keepalive", bad])


@pytest.mark.parametrize(("option", "value"), [("handshake_timeout", 0), ("max_pending_handshakes", 0)])
async def test_bad_pending_options_are_refused(option, value):
    with pytest.raises(ValueError, match=option):
        await pb.serve(Echo(), port=0, **{option: value})
