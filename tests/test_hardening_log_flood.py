"""A peer whose messages are refused over and over cannot flood the server's log.

Each connection logs its first few refusals one by one, then sums the rest up:
now and then while they keep coming, and once more when the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest
from core_net import serving, within

import pbnb as pb
from pbnb.aio import connection as connection_module
from pbnb.aio.connection import REFUSALS_LOGGED

FLOOD = 200


class Echo(pb.Root):
    def remote_echo(self, value: Any) -> Any:
        return value


@pytest.fixture
def caplog_pbnb(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="pbnb")
    return caplog


@pytest.fixture
def no_periodic_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the closing summary: a slow machine must not make a periodic one appear."""
    monkeypatch.setattr(connection_module, "REFUSAL_SUMMARY_INTERVAL", math.inf)


def peer_of(client: pb.Client) -> str:
    """How the server names this client in its log."""
    host, port = client.connection.transport.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


def one_by_one(caplog: pytest.LogCaptureFixture, peer: str) -> list[logging.LogRecord]:
    """The refusals of ``peer``'s messages that were logged individually."""
    return [r for r in refusal_lines(caplog, peer) if " more message(s) " not in r.getMessage()]


def summaries(caplog: pytest.LogCaptureFixture, peer: str) -> list[logging.LogRecord]:
    return [r for r in refusal_lines(caplog, peer) if " more message(s) " in r.getMessage()]


def refusal_lines(caplog: pytest.LogCaptureFixture, peer: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "pbnb" and r.getMessage().startswith("refused ") and f" from {peer}" in r.getMessage()
    ]


async def refused_calls(root: pb.RemoteReference, count: int, name: str = "missing") -> None:
    """Make ``count`` calls on a method the server does not have; each must fail with NoSuchMethod."""
    results = await within(
        asyncio.gather(*(root.callRemote(name, i) for i in range(count)), return_exceptions=True)
    )
    assert all(isinstance(r, pb.NoSuchMethod) for r in results), results


async def closed(client: pb.Client, server_side: Any) -> None:
    """Close ``client`` and wait until the server has seen its connection go."""
    await client.close()
    await within(server_side.closed)


async def test_a_flood_logs_the_first_refusals_then_one_summary_with_the_count(
    caplog_pbnb, no_periodic_summary
):
    async with serving(Echo()) as server:
        client = await within(pb.connect("127.0.0.1", server.port))
        root = await within(client.getRootObject())
        (server_side,) = server.connections
        peer = peer_of(client)
        calls = []
        for i in range(FLOOD - 1):
            calls.append(root.callRemote("missing", i))
            if i % 20 == 0:
                calls.append(root.callRemote("echo", i))
        calls.append(root.callRemote("vanished"))  # the last refusal, named in the summary
        results = await within(asyncio.gather(*calls, return_exceptions=True))

        assert sum(isinstance(r, pb.NoSuchMethod) for r in results) == FLOOD
        assert [r for r in results if not isinstance(r, Exception)] == list(range(0, FLOOD - 1, 20))
        assert len(one_by_one(caplog_pbnb, peer)) == REFUSALS_LOGGED
        assert all(r.levelno == logging.INFO for r in one_by_one(caplog_pbnb, peer))
        assert summaries(caplog_pbnb, peer) == []
        assert await within(root.callRemote("echo", "still here")) == "still here"

        await closed(client, server_side)
    (summary,) = summaries(caplog_pbnb, peer)
    message = summary.getMessage()
    assert f"refused {FLOOD - REFUSALS_LOGGED} more message(s) from {peer}" in message
    assert f"({FLOOD} in all on this connection)" in message
    assert "last: call: NoSuchMethod: Echo has no remote method 'vanished'" in message
    assert summary.levelno == logging.INFO  # only missing methods were held back
    assert len(one_by_one(caplog_pbnb, peer)) == REFUSALS_LOGGED


async def test_one_flooding_peer_does_not_silence_another(caplog_pbnb, no_periodic_summary):
    async with serving(Echo()) as server:
        flooder = await within(pb.connect("127.0.0.1", server.port))
        bystander = await within(pb.connect("127.0.0.1", server.port))
        try:
            await refused_calls(await within(flooder.getRootObject()), FLOOD)
            bystander_root = await within(bystander.getRootObject())
            await refused_calls(bystander_root, 1, name="typo")

            (logged,) = one_by_one(caplog_pbnb, peer_of(bystander))
            assert "Echo has no remote method 'typo'" in logged.getMessage()
            assert len(one_by_one(caplog_pbnb, peer_of(flooder))) == REFUSALS_LOGGED
            assert await within(bystander_root.callRemote("echo", 7)) == 7
        finally:
            await flooder.close()
            await bystander.close()


async def test_the_summary_is_a_warning_when_a_held_back_refusal_was_one(caplog_pbnb, no_periodic_summary):
    # Strings over max_string_len are refused with LimitExceeded, a WARNING-level refusal.
    async with serving(Echo(), max_string_len=16) as server:
        client = await within(pb.connect("127.0.0.1", server.port))
        root = await within(client.getRootObject())
        (server_side,) = server.connections
        peer = peer_of(client)
        await refused_calls(root, REFUSALS_LOGGED + 5)
        with pytest.raises(pb.LimitExceeded):
            await within(root.callRemote("echo", "x" * 100))
        await refused_calls(root, 1)  # the last one held back is a mere missing method
        await closed(client, server_side)

    assert all(r.levelno == logging.INFO for r in one_by_one(caplog_pbnb, peer))
    (summary,) = summaries(caplog_pbnb, peer)
    assert "refused 7 more message(s)" in summary.getMessage()
    assert summary.levelno == logging.WARNING


async def test_refusals_that_keep_coming_are_summed_up_before_the_connection_closes(caplog_pbnb, monkeypatch):
    # With no interval, every refusal past the first few is summed up as soon as it arrives.
    monkeypatch.setattr(connection_module, "REFUSAL_SUMMARY_INTERVAL", 0.0)
    async with serving(Echo()) as server:
        client = await within(pb.connect("127.0.0.1", server.port))
        root = await within(client.getRootObject())
        (server_side,) = server.connections
        peer = peer_of(client)
        await refused_calls(root, REFUSALS_LOGGED + 3)

        assert not server_side.closed.done()
        lines = [r.getMessage() for r in summaries(caplog_pbnb, peer)]
        assert len(lines) == 3
        assert all(f"refused 1 more message(s) from {peer}" in line for line in lines)
        assert lines[-1].count(f"({REFUSALS_LOGGED + 3} in all on this connection)") == 1

        await closed(client, server_side)
    assert len(summaries(caplog_pbnb, peer)) == 3  # nothing was left to sum up at the close
