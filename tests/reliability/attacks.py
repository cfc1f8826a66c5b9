"""Rows for attacks: garbage, mutated sessions, crowds of idle sockets."""

from __future__ import annotations

import asyncio
import importlib.util
import random
from typing import Any

import msgpack
from msgpack import ExtType

from pbnb.core import serialize
from pbnb.core.serialize import EXT_BIGINT
from pbnb.core.wire import PREAMBLE, Kind, encode_frame

from .harness import ROOT, Case, RawPeer, Row, read_frames, until
from .objects import login_portal


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
    async with Case(name, login_portal() if login else None, login=login) as case:
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
