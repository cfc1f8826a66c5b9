"""Calls and values over real loopback sockets: pb-behaviours.md items 1-7, and cancellation."""

from __future__ import annotations

import asyncio
import math

import pytest
from core_net import connected, within

import pbnb as pb

MiB = 1024 * 1024


class Calculator(pb.Root):
    def __init__(self):
        self.gate = asyncio.Event()
        self.notes: list = []
        self.noted = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    def remote_add(self, a, b=0, *, scale=1):
        return (a + b) * scale

    async def remote_add_later(self, a, b):
        await asyncio.sleep(0)
        return a + b

    async def remote_wait_for_gate(self, value):
        await self.gate.wait()
        return value

    def remote_greet(self, _name, name):
        return f"{_name} {name}"

    def remote_open_gate(self):
        self.gate.set()

    def remote_echo(self, value):
        return value

    async def remote_echo_async(self, value):
        return value

    def remote_types(self, value):
        return repr(_types(value))

    def remote_make(self, size):
        return b"\xab" * size

    def remote_note(self, value):
        self.notes.append(value)
        self.noted.set()

    async def remote_hang(self):
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def _types(value):
    """The type structure of a value, for comparing both sides' views."""
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_types(v) for v in value])
    if isinstance(value, dict):
        return ("dict", sorted((repr(_types(k)), repr(_types(v))) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return (type(value).__name__, sorted(repr(_types(v)) for v in value))
    return type(value).__name__


@pytest.fixture
async def session():
    async with connected(Calculator()) as session:
        yield session


async def test_plain_and_async_methods(session):
    """Behaviour 1: plain and ``async def`` remote methods both answer."""
    assert await within(session.root.callRemote("add", 2, 3)) == 5
    assert await within(session.root.callRemote("add_later", 2, 3)) == 5


async def test_result_arrives_however_long_it_takes(session):
    """Behaviour 1: an answer may wait on something that happens much later."""
    waiting = session.root.callRemote("wait_for_gate", "done")
    others = [await within(session.root.callRemote("add", i, i)) for i in range(20)]
    assert others == [2 * i for i in range(20)]
    assert not waiting.done()
    await within(session.root.callRemote("open_gate"))
    assert await within(waiting) == "done"


async def test_keyword_arguments(session):
    """Behaviour 2: keyword arguments travel as well as positional ones."""
    assert await within(session.root.callRemote("add", 1, b=2, scale=3)) == 9
    assert await within(session.root.remote.add(a=4, scale=2)) == 8
    # Keywords that look like callRemote's own parameter names are passed on too.
    assert await within(session.root.callRemote("greet", _name="x", name="ada")) == "x ada"


VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**64,
    -(2**100),
    10**50,
    1.5,
    -0.0,
    math.inf,
    "text ünïcode",
    b"\x00\x01bytes",
    [1, [2]],
    (1, (2, "3")),
    {1: "int key", (2, 3): "tuple key", frozenset({4}): "frozenset key", None: 0, b"b": 1},
    {1, 2, (3, 4)},
    frozenset({"a", (1,)}),
    ((), set(), frozenset(), {}, []),
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
async def test_basic_values_round_trip_with_their_types(session, value):
    """Behaviour 3: every basic value arrives with its exact type, both ways."""
    got = await within(session.root.callRemote("echo", value))
    assert got == value
    assert _types(got) == _types(value)
    assert await within(session.root.callRemote("types", value)) == repr(_types(value))


async def test_identity_and_cycles_within_one_message(session):
    """Behaviour 4: shared objects and cycles through lists, dicts and tuples survive."""
    shared = {"shared": True}
    loop: list = ["head"]
    loop.append(loop)
    mapping: dict = {}
    mapping["self"] = mapping
    holder: list = []
    through_tuple = (holder,)
    holder.append(through_tuple)
    got = await within(session.root.callRemote("echo", [shared, shared, loop, mapping, through_tuple]))
    assert got[0] is got[1] and got[0] == shared
    assert got[2][1] is got[2]
    assert got[3]["self"] is got[3]
    assert type(got[4]) is tuple and got[4][0][0] is got[4]
    got = await within(session.root.callRemote("echo_async", (shared, shared)))
    assert got[0] is got[1]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["add", "add_later"])
async def test_thousands_of_outstanding_calls(session, method):
    """Behaviour 5: 20,000 calls in flight on one connection; each answer reaches its caller.

    That is more small calls than max_inbound_calls (10,000) in a single socket read:
    calls that arrive together are not all running at once and must not be refused.
    """
    calls = [session.root.callRemote(method, i, 1) for i in range(20_000)]
    assert session.client.broker.pending_calls == 20_000
    results = await within(asyncio.gather(*calls), 60)
    assert results == [i + 1 for i in range(20_000)]
    assert session.client.broker.pending_calls == 0


@pytest.mark.slow
async def test_many_mib_values_go_through_by_default(session):
    """Behaviour 6: many MiB each way with the default limits (the original capped at 640 KiB)."""
    payload = bytes(range(256)) * (24 * MiB // 256)
    assert await within(session.root.callRemote("echo", payload), 60) == payload
    big_list = list(range(1_000_000))
    assert await within(session.root.callRemote("echo", big_list), 60) == big_list
    assert len(await within(session.root.callRemote("make", 20 * MiB), 60)) == 20 * MiB


async def test_values_over_a_configured_limit_fail_clearly():
    """Behaviour 6: a configurable limit, and a clear LimitExceeded above it, both directions."""
    options = {"max_frame": 4 * MiB}
    async with connected(Calculator(), server_options=options, client_options=options) as session:
        fits = b"x" * (3 * MiB)
        assert await within(session.root.callRemote("echo", fits)) == fits
        with pytest.raises(pb.LimitExceeded, match="frame limit"):
            await within(session.root.callRemote("echo", b"x" * (5 * MiB)))
        with pytest.raises(pb.LimitExceeded, match="frame limit"):
            await within(session.root.callRemote("make", 5 * MiB))
        # The connection is still fine.
        assert await within(session.root.callRemote("add", 1, 1)) == 2


async def test_fire_and_forget(session):
    """Behaviour 7: callRemoteNoAnswer runs the method and asks for no answer."""
    calculator = session.server.root
    assert session.root.callRemoteNoAnswer("note", "hello") is None
    assert session.client.broker.pending_calls == 0
    await within(calculator.noted.wait())
    assert calculator.notes == ["hello"]
    assert session.server_side.broker.table_sizes()["inbound_calls"] == 0


async def test_fire_and_forget_failure_is_not_answered(session):
    session.root.callRemoteNoAnswer("no_such_method")
    session.root.callRemoteNoAnswer("add", "x", 1)  # raises TypeError on the server
    assert await within(session.root.callRemote("add", 1, 1)) == 2
    assert session.client.broker.pending_calls == 0


async def test_cancelling_a_call_cancels_the_server_task(session):
    """Behaviour 39: cancelling the awaitable sends CANCEL; the remote task is cancelled."""
    calculator = session.server.root
    call = session.root.callRemote("hang")
    await within(calculator.started.wait())
    call.cancel()
    await within(calculator.cancelled.wait())
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await within(session.root.callRemote("add", 2, 2)) == 4
    assert session.server_side.broker.table_sizes()["inbound_calls"] == 0
    assert session.client.broker.pending_calls == 0


async def test_attribute_style_calls_and_describe(session):
    assert await within(session.root.remote.add(1, 2)) == 3
    description = await within(session.root.describe())
    names = {method["name"] for method in description["methods"]}
    assert {"add", "echo", "hang"} <= names
    assert "add" in dir(session.root.remote)
