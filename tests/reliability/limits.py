"""Rows for each limit: the peer over it gets a clear error, the bystander carries on."""

from __future__ import annotations

import asyncio
import gc
import random
import time
from typing import Any

import pbnb as pb
from pbnb.core.wire import Kind

from .harness import WAIT, Case, Row, Solo, expect_limit, read_frames, until
from .objects import Doubler, SoakRoot


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def frame() -> Row:
    async with Case("limit: max_frame (1 GiB frame announced)", max_frame=1 << 20) as case:
        reader, writer = await case.raw()
        case.send(writer, (1 << 30).to_bytes(4, "big") + (8).to_bytes(2, "big"))
        headers = await read_frames(reader)
        writer.close()
        ok = headers[-1][0] == Kind.GOODBYE and headers[-1][1] == "pbnb.errors.LimitExceeded"
        return await case.finish(f"connection closed with GOODBYE: {headers[-1][2][:80]}", ok)


async def frame_sender() -> Row:
    async with Case("limit: max_frame=1 MiB, sender side (from the peer's HELLO)", max_frame=1 << 20) as case:
        client, root = await case.client()
        ok, text = await expect_limit(lambda: root.callRemote("echo", b"x" * (2 << 20)), "frame limit")
        ok = ok and client.connected and await root.callRemote("echo", "small") == "small"
        case.calls += 2
        await client.close()
        return await case.finish(f"refused before sending: {text}; connection kept", ok)


async def in_call(name: str, value: Any, option: str, **limits: Any) -> Row:
    async with Case(f"limit: {option}", **limits) as case:
        client, root = await case.client()
        ok, text = await expect_limit(lambda: root.callRemote("echo", value), name)
        ok = ok and await root.callRemote("echo", 1) == 1 and client.connected
        case.calls += 2
        await client.close()
        return await case.finish(f"call failed with {text}; connection kept", ok)


async def string() -> Row:
    return await in_call(
        "exceeds max_bin_len", b"x" * (2 << 20), "max_string_len=1 MiB", max_string_len=1 << 20
    )


async def depth() -> Row:
    return await in_call("deeper than 32", nested(64), "max_depth=32", max_depth=32)


async def container() -> Row:
    return await in_call(
        "exceeds max_array_len", list(range(10_001)), "max_container_len=10000", max_container_len=10_000
    )


async def inbound() -> Row:
    async with Case("limit: max_inbound_calls=100", max_inbound_calls=100) as case:
        client, peer_root = await case.client()
        hanging = [peer_root.callRemote("hang") for _ in range(100)]
        connection = case.attacker()
        await until(lambda: connection.broker.table_sizes()["inbound_calls"] == 100)
        extra = await asyncio.gather(
            *(peer_root.callRemote("echo", i) for i in range(50)), return_exceptions=True
        )
        refused = sum(isinstance(error, pb.LimitExceeded) for error in extra)
        for call in hanging:
            call.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)
        await until(lambda: connection.broker.table_sizes()["inbound_calls"] == 0)
        ok = refused == 50 and await peer_root.callRemote("echo", 2) == 2
        case.calls += 151
        await client.close()
        return await case.finish(f"{refused} of 50 calls over the limit refused; cancelled the rest", ok)


async def references() -> Row:
    async with Case("limit: max_references=100", max_references=100) as case:
        client, root = await case.client()
        held = [await root.callRemote("item", i) for i in range(99)]  # plus the root: 100
        ok, text = await expect_limit(lambda: root.callRemote("item", 100), "max_references")
        sent_ok, sent_text = await expect_limit(
            lambda: root.callRemote("echo", [Doubler() for _ in range(101)]), "max_references"
        )
        del held
        gc.collect()
        connection = case.attacker()
        await until(lambda: connection.broker.table_sizes()["exports"] == 1)
        ok = ok and sent_ok and await (await root.callRemote("item", 1)).callRemote("value") == 1
        case.calls += 103
        await client.close()
        return await case.finish(f"handing out: {text}; receiving: {sent_text}; slots freed by DECREF", ok)


async def caches() -> Row:
    async with Case("limit: max_caches=10", SoakRoot(), max_caches=10) as case:
        client, root = await case.client()
        boards = await root.callRemote("boards", 10)
        ok, text = await expect_limit(lambda: root.callRemote("boards", 1), "max_caches")
        ok = ok and len(boards) == 10 and await root.callRemote("echo", 3) == 3
        case.calls += 3
        await client.close()
        return await case.finish(f"{text}; connection kept", ok)


async def logins() -> Row:
    from pbnb.cred import InMemoryPasswordChecker, Portal, UnauthorizedLogin, UsernamePassword

    class Realm:
        def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: type) -> tuple:
            return interfaces[0], pb.Avatar(), lambda: None

    checker = InMemoryPasswordChecker(ada="lovelace", iterations=4096)
    portal = Portal(Realm(), [checker], max_failures=3)
    measure = Solo()
    server = await pb.serve(portal)
    try:
        guesser = await pb.connect("127.0.0.1", server.port)
        refused = 0
        for attempt in range(5):
            try:
                await guesser.login(UsernamePassword("ada", f"guess {attempt}"))
            except (UnauthorizedLogin, pb.PBConnectionLost, pb.DeadReferenceError):
                refused += 1
        await asyncio.wait_for(guesser.wait_closed(), WAIT)
        honest = await pb.connect("127.0.0.1", server.port)
        ok = refused == 5 and await honest.login(UsernamePassword("ada", "lovelace")) is not None
        await honest.close()
    finally:
        await server.close()
    result = "5 guesses refused, connection dropped after the 3rd failure; an honest login then works"
    return measure.row("limit: failed logins (max_failures=3)", 2, 6, result, ok)


async def user_enumeration(rounds: int = 400) -> Row:
    """Unknown and known user names: the same challenge shape; the time to answer, compared."""
    import base64
    import statistics

    from pbnb.cred import InMemoryPasswordChecker, Portal
    from pbnb.cred.scram import ClientExchange

    from .objects import USERS, EchoRealm

    portal = Portal(EchoRealm(), [InMemoryPasswordChecker(USERS, iterations=10_000)])
    async with Case("login: unknown vs known user name (iterations=10000)", portal, login=True) as case:
        client, root = await case.client()
        # Names of one length: SASLprep's time grows with the name, whoever it is.
        times: dict[str, list[float]] = {"ada": [], "eve": [], "ada again": []}
        shapes = {}
        order = list(times)
        shuffle = random.Random(20).shuffle
        for _ in range(rounds):
            shuffle(order)  # no name always goes first
            for label in order:
                name = label.split()[0]
                first = ClientExchange(name, "guess").first()
                started = time.perf_counter()
                server_first, challenge = await root.callRemote("scram_first", first)
                times[label].append(time.perf_counter() - started)
                fields = dict(field.split("=", 1) for field in server_first.split(","))
                shapes[name] = (fields["i"], len(base64.b64decode(fields["s"])))
                del challenge  # ends the exchange, freeing its slot (max_pending_logins)
        case.calls += 3 * rounds
        await client.close()

        def median_us(label: str) -> float:
            return statistics.median(times[label]) * 1e6

        known, unknown, again = median_us("ada"), median_us("eve"), median_us("ada again")
        ok = shapes["ada"] == shapes["eve"] == ("10000", 32)
        iterations, salt = shapes["eve"]
        return await case.finish(
            f"decoy challenge shaped as a real one (i={iterations}, {salt}-byte salt); "
            f"median answer over {rounds} rounds: known {known:.0f} µs, unknown {unknown:.0f} µs "
            f"(difference {unknown - known:+.0f} µs; known against itself {again - known:+.0f} µs)",
            ok,
        )


async def deep_nesting(levels: int = 2000) -> Row:
    """Nesting deeper than msgpack itself reads (about 1,000 levels) is LimitExceeded too."""
    from pbnb.core import serialize
    from pbnb.core.wire import encode_frame

    from .harness import RawPeer

    async with Case(f"limit: {levels:,} levels of nesting (beyond msgpack's own bound)") as case:
        peer = await RawPeer.open(case)
        payload = b"\x92\x91" + b"\x91" * levels + b"\xc0\x80"  # [[ [[[...nil...]]] ], {}]
        peer.send(encode_frame([Kind.CALL, 2, 1, "echo", serialize.PLAIN], payload))
        header = await peer.answer(2)
        peer.close()
        ok = header[0] == Kind.ERROR and header[2] == "pbnb.errors.LimitExceeded" and header[3]
        return await case.finish(f"{header[2]}: {header[3][:80]}", bool(ok))
