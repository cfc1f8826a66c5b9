"""Rows for attacks: garbage, mutated sessions, crowds of idle sockets."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import random
from collections.abc import Iterator
from typing import Any

import msgpack
from msgpack import ExtType

import pbnb as pb
from pbnb.core import serialize
from pbnb.core.serialize import EXT_BIGINT
from pbnb.core.wire import PREAMBLE, Kind, encode_frame

from .harness import ROOT, WAIT, Case, RawPeer, Row, read_frames, until
from .objects import SoakRoot, login_portal


async def garbage(count: int = 400) -> Row:
    # Neither PB nor HTTP (a TLS ClientHello), another version, zeros, a broken frame.
    openings = [
        b"\x16\x03\x01\x00\xa5\x01\x00\x00",
        b"PBNB\x00\x09\x00\x00",
        b"\x00" * 64,
        PREAMBLE + b"\xff" * 16,
    ]
    async with Case(f"attack: {count} connections of garbage / wrong versions") as case:
        goodbyes = 0
        for i in range(count):
            reader, writer = await case.raw(openings[i % len(openings)])
            headers = await read_frames(reader)
            goodbyes += bool(headers) and headers[-1][0] == Kind.GOODBYE
            writer.close()
        return await case.finish(f"{goodbyes} of {count} got a GOODBYE naming the problem", goodbyes == count)


def load_fuzz_harness() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_broker", ROOT / "fuzz" / "fuzz_broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _fuzz_echo(root: Any, value: Any) -> Any:
    """The fuzz root's echo answers [args, kwargs]."""
    args, _ = await root.callRemote("echo", value)
    return args[0]


async def fuzzed(count: int = 1000) -> Row:
    harness = load_fuzz_harness()
    seeds = harness.seed_streams()
    rng = random.Random(7)
    async with Case(
        f"attack: {count} connections of mutated sessions",
        harness.FuzzRoot(),
        echo=_fuzz_echo,
        registry=harness.registry,
    ) as case:
        for _ in range(count):
            stream = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 8)):
                stream[rng.randrange(len(stream))] = rng.randrange(256)
            reader, writer = await case.raw(bytes(stream))
            writer.write_eof()
            try:
                await asyncio.wait_for(reader.read(), 10)
            except (TimeoutError, ConnectionError):
                pass
            writer.close()
        await until(lambda: len(case.server.connections) == 1)
        return await case.finish("server kept serving; every mutated connection closed", True)


async def idle_flood(count: int = 1000, tls: bool = False) -> Row:
    """Sockets that never send a byte (or never finish TLS) while real clients keep arriving."""
    options: dict[str, Any] = {"max_connections": 50, "max_pending_handshakes": 64, "handshake_timeout": 2.0}
    client_options: dict[str, Any] = {}
    if tls:
        server_context, client_context = tls_contexts()
        options["ssl"] = server_context
        client_options = {"ssl": client_context, "server_hostname": "localhost"}
    never = "finish TLS" if tls else "send a byte"
    name = f"attack: {count:,} sockets that never {never} (max_connections=50, max_pending_handshakes=64)"
    async with Case(name, client=client_options, **options) as case:
        sockets = []
        most_pending = 0
        joined = 0
        for n in range(count):
            sockets.append(await asyncio.open_connection("127.0.0.1", case.server.port))
            most_pending = max(most_pending, case.server.pending_handshakes)
            if n % 50 == 49:  # a real client arrives every 50 strangers, and is served
                client, root = await case.client(**client_options)
                joined += await root.callRemote("echo", n) == n
                await client.close()
        case.connections += count
        await until(lambda: case.server.pending_handshakes == 0 and len(case.server.connections) == 1)
        for _, writer in sockets:
            writer.close()
        real = count // 50
        ok = joined == real and most_pending <= 64
        return await case.finish(
            f"{joined} of {real} real clients served among them; at most {most_pending} handshakes "
            f"pending at once; every stranger dropped",
            ok,
        )


def tls_contexts() -> tuple[Any, Any]:
    """A server and a client SSL context from a throwaway certificate authority."""
    import ssl

    import trustme

    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    return server_context, client_context


# Python hashes an int as n mod (2**61 - 1): multiples of that prime all collide.
_PRIME = 2**61 - 1
_EMPTY_TAG = {"tuple": ExtType(1, b""), "set": ExtType(2, b"")}


def _bigint(n: int) -> ExtType:
    return ExtType(EXT_BIGINT, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))


def colliding_keys(count: int, kind: str) -> bytes:
    """A CALL payload ``[[value], {}]`` whose value is a map or set of ``count`` keys with one hash.

    ``bigint``: a map of big ints, all multiples of the prime. ``tuple``: a map of 5-tuples of
    ints under 2**64, each item one of 8 ints with the same hash, so all tuples collide too.
    ``set``: a set of big ints.
    """
    packer = msgpack.Packer()
    if kind == "set":
        return packer.pack([[[_EMPTY_TAG["set"], *(_bigint(k * _PRIME) for k in range(1, count + 1))]], {}])
    head = b"\x92\x91\xdf" + count.to_bytes(4, "big")  # [[ map32 ...
    pairs = []
    for i in range(count):
        if kind == "bigint":
            key = packer.pack(_bigint((i + 1) * _PRIME))
        else:
            key = packer.pack([_EMPTY_TAG["tuple"], *(5 + ((i >> (3 * j)) & 7) * _PRIME for j in range(5))])
        pairs.append(key + b"\x00")
    return head + b"".join(pairs) + b"\x80"  # ... ], {}]


async def hash_flood(kind: str = "bigint", count: int = 40_000, login: bool = False) -> Row:
    payload = colliding_keys(count, kind)
    where = "as the first message to a Portal" if login else "to an echo"
    name = f"attack: hash flood, {count:,} colliding {kind} keys ({len(payload) / 1024:,.0f} KiB) {where}"
    # Before login a Portal takes frames of 64 KiB only; let this one through to the decoder.
    root = login_portal(max_frame_before_login=4 << 20) if login else None
    async with Case(name, root, login=login) as case:
        peer = await RawPeer.open(case)
        method = "scram_first" if login else "echo"
        peer.send(encode_frame([Kind.CALL, 2, 1, method, serialize.PLAIN], payload))
        header = await peer.answer(2)
        peer.send(
            encode_frame([Kind.CALL, 3, 1, method, serialize.PLAIN], msgpack.packb([["n,,n=ada,r=x"], {}]))
        )
        after = await peer.answer(3)
        peer.close()
        ok = header[0] == Kind.ERROR and header[2] == "pbnb.errors.LimitExceeded" and after[1] == 3
        growth = case.memory.peak - case.memory.before
        return await case.finish(
            f"{header[2]}: {header[3][:80]}; the connection carried on; "
            f"RSS +{growth:.0f} MiB for {case.bytes_sent / 2**20:.1f} MiB sent",
            ok,
        )


def _call(request_id: int, target: int, method: str, payload: bytes) -> bytes:
    return encode_frame([Kind.CALL, request_id, target, method, serialize.PLAIN], payload)


def refused_payload(kind: str) -> bytes:
    """Call arguments for an object that does not exist: 57 MiB of nils, or 20 MB of maps and a reference."""
    if kind == "nils":
        count = 57 << 20
        return b"\x92\x91\xdd" + count.to_bytes(4, "big") + b"\xc0" * count + b"\x80"
    item = msgpack.packb({"k": 258})
    count = 20_000_000 // len(item)
    reference = msgpack.packb(ExtType(serialize.EXT_REMOTE, (1).to_bytes(8, "big")))
    return b"\x92\x91\xdd" + (count + 1).to_bytes(4, "big") + item * count + reference + b"\x80"


async def refused(kind: str) -> Row:
    payload = refused_payload(kind)
    frame = _call(2, 999, "echo", payload)
    what = "57 MiB of nils" if kind == "nils" else f"{len(payload) / 1e6:.0f} MB of maps and one reference"
    async with Case(f"attack: a call of {what} to an object that does not exist") as case:
        peer = await RawPeer.open(case)
        await peer.send_big(frame)
        header = await peer.answer(2)
        peer.send(_call(3, 1, "echo", msgpack.packb([[1], {}])))
        after = await peer.answer(3)
        peer.close()
        returned = [h for h in peer.seen if h[0] == Kind.DECREF]
        ok = header[0] == Kind.ERROR and "no object 999" in header[3] and after[0] == Kind.ANSWER
        ok = ok and returned == ([] if kind == "nils" else [[Kind.DECREF, 1, 1]])
        growth = case.memory.peak - case.memory.before
        return await case.finish(
            f"{header[2]}: {header[3][:60]}; {len(returned)} reference given back; the connection "
            f"carried on; RSS +{growth:.0f} MiB for {case.bytes_sent / 2**20:.0f} MiB sent",
            ok,
        )


class _LogTally(logging.Handler):
    """Counts what the pbnb logger writes: lines, characters, tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines = self.chars = self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1
        self.chars += len(record.getMessage())
        self.tracebacks += record.exc_info is not None


@contextlib.contextmanager
def log_tally() -> Iterator[_LogTally]:
    logger = logging.getLogger("pbnb")
    tally, level = _LogTally(), logger.level
    logger.addHandler(tally)
    logger.setLevel(logging.INFO)
    try:
        yield tally
    finally:
        logger.removeHandler(tally)
        logger.setLevel(level)


async def log_flood_signature(count: int = 1000) -> Row:
    async with Case(f"attack: {count:,} calls that do not fit the method's signature") as case:
        with log_tally() as tally:
            refused = (await case.attack_from_process("signature", count))["refused"]
            await until(lambda: len(case.server.connections) == 1)
        case.calls += count
        ok = refused == count and tally.tracebacks == 0 and tally.lines <= 20
        return await case.finish(
            f"each caller got TypeError; the log got {tally.lines} lines ({tally.chars:,} characters), "
            f"{tally.tracebacks} tracebacks",
            ok,
        )


async def log_flood_names(connections: int = 50, calls: int = 10, length: int = 60_000) -> Row:
    name = "x" * length
    async with Case(
        f"attack: {connections} connections x {calls} calls of unknown {length:,}-character method names"
    ) as case:
        with log_tally() as tally:
            for _ in range(connections):
                peer = await RawPeer.open(case)
                for n in range(calls):
                    peer.send(_call(n + 2, 1, name, msgpack.packb([[], {}])))
                for n in range(calls):
                    await peer.answer(n + 2)
                peer.close()
            await until(lambda: len(case.server.connections) == 1)
        ok = tally.chars < 200_000
        return await case.finish(
            f"{case.bytes_sent / 2**20:.0f} MiB of names sent; the log got {tally.lines} lines "
            f"({tally.chars:,} characters)",
            ok,
        )


async def fire_and_forget(count: int = 20_000) -> Row:
    root = SoakRoot()
    empty = msgpack.packb([[], {}])
    # Made before the row starts: the attacker's own work must not take the server's turns.
    batches = [b"".join(_call(0, 1, "hang", empty) for _ in range(1000)) for _ in range(0, count, 1000)]
    async with Case(
        f"attack: {count:,} fire-and-forget calls that never end (max_inbound_calls=1000)",
        root,
        max_inbound_calls=1000,
    ) as case:
        peer = await RawPeer.open(case)
        peer.send(_call(0, 1, "finish", msgpack.packb([[0.5], {}])))  # work that must survive the peer
        for batch in batches:
            peer.send(batch)
            await peer.writer.drain()
        peer.send(_call(2, 1, "echo", msgpack.packb([["done"], {}])))
        await peer.answer(2)
        running, survivor_done = root.hanging, root.finished
        peer.close()
        await until(lambda: len(case.server.connections) == 1)
        await until(lambda: root.hanging == 0)
        await until(lambda: root.finished == 1)
        # 1,000 at once, the survivor included while it runs (on a slow machine it may
        # finish before the flood ends, and free its place for one more).
        ok = 999 <= running <= 1000 - (not survivor_done)
        return await case.finish(
            f"{running:,} hanging calls ran at once (max_inbound_calls 1,000, the survivor counted "
            "while it ran); the rest were refused; all cancelled when the peer left, "
            "but the one marked survives_disconnect finished",
            ok,
        )


async def big_messages(size: int = 80 << 20) -> Row:
    name = f"fault: a {size >> 20} MiB answer and argument (max_send_buffer 64 MiB)"
    async with Case(name, max_string_len=2 * size) as case:
        ok = (await case.attack_from_process("big", size))["ok"]
        case.calls += 2
        return await case.finish("both went through with back-pressure; the connection lived on", ok)


async def half_close(pending: int = 10) -> Row:
    async with Case(f"fault: a client half-closes with {pending} answers pending") as case:
        peer = await RawPeer.open(case)
        for n in range(pending):
            peer.send(_call(n + 2, 1, "sleep", msgpack.packb([[0.2, n], {}])))
        await peer.writer.drain()
        peer.writer.write_eof()
        answers = [await peer.answer(n + 2) for n in range(pending)]
        closed = await asyncio.wait_for(peer.reader.read(), WAIT) == b""
        peer.close()
        ok = all(header[0] == Kind.ANSWER for header in answers) and closed
        return await case.finish(f"all {pending} answered after the half-close, then the server closed", ok)


async def big_frame_before_login(size: int = 1 << 20) -> Row:
    async with Case(
        f"attack: a {size >> 10} KiB frame before login (max_frame_before_login 64 KiB)",
        login_portal(),
        login=True,
    ) as case:
        peer = await RawPeer.open(case)
        stranger = case.attacker()
        with log_tally():  # at INFO, so that the reason is in the log
            peer.send(_call(2, 1, "scram_first", msgpack.packb([["x" * size], {}])))
            await asyncio.wait_for(asyncio.shield(stranger.closed), WAIT)
        peer.close()
        reason = stranger.close_reason or stranger.ready.exception()
        ok = isinstance(reason, pb.LimitExceeded)
        return await case.finish(f"connection closed at the frame's prefix: {str(reason)[:120]}", ok)
