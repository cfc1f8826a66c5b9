"""Every limit, hit over real sockets: the peer gets a clear error, everyone else carries on.

A limit that one message breaks fails that message's call and keeps the
connection; a limit that makes the byte stream untrustworthy (a frame too big
to read) ends that connection with a GOODBYE saying why. In both cases a
bystander client on the same server keeps working, and the tables end empty.
"""

from __future__ import annotations

import asyncio
import gc

import msgpack
import pytest

import pbnb as pb
from pbnb.core import serialize
from pbnb.core.wire import PREAMBLE, Kind, Limits, decode_header, encode_frame

# A hang detector, not an assertion: generous, so a loaded 2-core CI machine never trips it.
WAIT = 60.0


class Thing(pb.Referenceable):
    def remote_ping(self) -> str:
        return "pong"


class Note(pb.Cacheable):
    def getStateToCacheAndObserveFor(self, perspective, observer):
        return {"n": 1}


class NoteCopy(pb.RemoteCache):
    def setCopyableState(self, state):
        self.n = state["n"]


pb.setUnjellyableForClass(Note, NoteCopy)


class Service(pb.Root):
    def __init__(self):
        self.gate = asyncio.Event()
        self.running = 0
        self.kept: list = []

    def remote_echo(self, value):
        return value

    def remote_size(self, value) -> int:
        return len(value)

    async def remote_hold(self):
        self.running += 1
        await self.gate.wait()
        return "released"

    def remote_things(self, count: int) -> list:
        things = [Thing() for _ in range(count)]
        self.kept.extend(things)
        return things

    def remote_notes(self, count: int) -> list:
        return [Note() for _ in range(count)]

    def remote_keep(self, items) -> int:
        self.kept.append(items)
        return len(items)


@pytest.fixture
async def service():
    root = Service()
    server = await pb.serve(
        root,
        max_frame=64 * 1024,
        max_depth=20,
        max_container_len=1000,
        max_inbound_calls=5,
        max_references=10,
        max_caches=3,
    )
    bystander = await pb.connect("127.0.0.1", server.port)
    bystander_root = await bystander.getRootObject()
    yield server, root, bystander_root
    assert await bystander_root.callRemote("echo", "still served") == "still served"
    await bystander.close()
    await server.close()


async def client_of(server: pb.Server, **limits) -> tuple[pb.Client, pb.RemoteReference]:
    client = await pb.connect("127.0.0.1", server.port, **limits)
    return client, await client.getRootObject()


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


def server_side(server: pb.Server, client: pb.Client):
    """The server's Connection for ``client`` (matched by the client's local port)."""
    local = client.connection.transport.get_extra_info("sockname")[1]
    (connection,) = [c for c in server.connections if c.peer.endswith(f":{local}")]
    return connection


def assert_tables_empty(broker, *, but: tuple[str, ...] = ()) -> None:
    sizes = {name: size for name, size in broker.table_sizes().items() if name not in but}
    assert all(size == 0 for size in sizes.values()), sizes


def test_defaults_are_finite_and_bad_values_are_refused():
    limits = Limits()
    assert 0 < limits.max_frame <= 2**32 - 1
    assert all(0 < value < 2**32 for value in vars(limits).values())
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=0)
    with pytest.raises(TypeError, match="unknown limit option"):
        Limits.from_options(max_frames=1)


# --------------------------------------------------- limits that fail one call


async def test_oversized_argument_is_refused_locally_from_the_peers_hello(service):
    server, _, _ = service
    client, root = await client_of(server)
    with pytest.raises(pb.LimitExceeded, match="peer's frame limit of 65536"):
        await root.callRemote("size", b"x" * 100_000)
    assert await root.callRemote("size", b"x" * 60_000) == 60_000
    assert client.connected
    await client.close()


async def test_oversized_answer_fails_the_call_not_the_connection(service):
    server, _, _ = service
    client, root = await client_of(server, max_frame=32 * 1024)
    with pytest.raises(pb.LimitExceeded, match=r"answer of .* exceeds the peer's frame limit"):
        await root.callRemote("echo", "y" * 40_000)
    assert await root.callRemote("echo", "small") == "small"
    await client.close()


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "graph"])
async def test_too_deep_a_value_fails_the_call(service, shared):
    server, _, _ = service
    client, root = await client_of(server)
    deep = nested(30)
    value = [deep, deep] if shared else deep
    with pytest.raises(pb.LimitExceeded, match="deeper than 20"):
        await root.callRemote("echo", value)
    assert await root.callRemote("echo", nested(10)) == nested(10)
    await client.close()


@pytest.mark.parametrize("value", ["s" * 2001, b"b" * 2001], ids=["str", "bytes"])
async def test_too_long_a_string_fails_the_call(value):
    server = await pb.serve(Service(), max_string_len=2000)
    client, root = await client_of(server)
    with pytest.raises(pb.LimitExceeded, match=r"exceeds max_(str|bin)_len\(2000\)"):
        await root.callRemote("size", value)
    assert await root.callRemote("size", value[:2000]) == 2000
    await client.close()
    await server.close()


# A set or tuple travels as an array with a leading tag, which counts as an item.
@pytest.mark.parametrize(
    ("make", "fits"), [(list, 1000), (dict.fromkeys, 1000), (set, 999)], ids=["list", "map", "set"]
)
async def test_too_long_a_container_fails_the_call(service, make, fits):
    server, _, _ = service
    client, root = await client_of(server)
    with pytest.raises(pb.LimitExceeded, match="exceeds max"):
        await root.callRemote("size", make(range(fits + 1)))
    assert await root.callRemote("size", make(range(fits))) == fits
    await client.close()


async def test_too_many_calls_at_once_are_refused_and_the_rest_run(service):
    server, service_root, _ = service
    client, root = await client_of(server)
    calls = [root.callRemote("hold") for _ in range(5)]
    await asyncio.wait_for(until(lambda: service_root.running == 5), WAIT)
    calls += [root.callRemote("hold") for _ in range(3)]
    refused = await asyncio.gather(*calls[5:], return_exceptions=True)
    assert all(isinstance(error, pb.LimitExceeded) for error in refused), refused
    assert "max_inbound_calls" in str(refused[0])
    assert service_root.running == 5
    service_root.gate.set()
    assert await asyncio.gather(*calls[:5]) == ["released"] * 5
    assert await root.callRemote("echo", 1) == 1
    assert_tables_empty(server_side(server, client).broker, but=("exports",))
    await client.close()


async def test_too_many_references_handed_out_fail_the_answer(service):
    server, _, _ = service
    client, root = await client_of(server)
    # The root itself is one of the server's 10 exports to this client.
    things = await root.callRemote("things", 9)
    assert await things[0].callRemote("ping") == "pong"
    with pytest.raises(pb.LimitExceeded, match="max_references"):
        await root.callRemote("things", 1)
    del things
    gc.collect()  # drop our handles: DECREFs free the server's slots
    await asyncio.wait_for(
        until(lambda: server_side(server, client).broker.table_sizes()["exports"] == 1), WAIT
    )
    (thing,) = await root.callRemote("things", 1)
    assert await thing.callRemote("ping") == "pong"
    await client.close()


async def test_too_many_references_sent_to_the_server_fail_the_call(service):
    server, _, _ = service
    client, root = await client_of(server)
    with pytest.raises(pb.LimitExceeded, match="max_references"):
        await root.callRemote("keep", [Thing() for _ in range(11)])
    connection = server_side(server, client)
    assert connection.broker.table_sizes()["imports"] == 0
    # The refused message's references went back: the client holds no exports.
    await asyncio.wait_for(until(lambda: client.broker.table_sizes()["exports"] == 0), WAIT)
    assert await root.callRemote("keep", [Thing() for _ in range(10)]) == 10
    await client.close()


async def test_too_many_caches_fail_the_answer(service):
    server, _, _ = service
    client, root = await client_of(server)
    notes = await root.callRemote("notes", 3)
    assert [note.n for note in notes] == [1, 1, 1]
    with pytest.raises(pb.LimitExceeded, match="max_caches"):
        await root.callRemote("notes", 1)
    assert await root.callRemote("echo", "ok") == "ok"
    await client.close()


async def test_too_many_caches_received_fail_the_answer_on_the_receiving_side():
    server = await pb.serve(Service())
    client, root = await client_of(server, max_caches=2)
    with pytest.raises(pb.LimitExceeded, match="max_caches"):
        await root.callRemote("notes", 3)
    connection = next(iter(server.connections))
    # The refused caches went back to the server, which forgot them.
    await asyncio.wait_for(until(lambda: connection.broker.table_sizes()["cache_exports"] == 0), WAIT)
    assert len(await root.callRemote("notes", 2)) == 2
    await client.close()
    await server.close()


# ------------------------------------------ limits that end one connection


class RawPeer:
    """A hand-driven peer: writes whatever bytes a test wants, reads the frames that come back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, *, opening: bytes | None = None) -> RawPeer:
        """Connect and send ``opening`` (default: a preamble and HELLO); the server answers after it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(reader, writer)
        if opening is None:
            opening = PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": 1 << 20}])
        writer.write(opening)
        await asyncio.wait_for(reader.readexactly(len(PREAMBLE)), WAIT)
        return peer

    async def next_header(self) -> list | None:
        """The next frame header from the server, or None once it hung up."""
        try:
            prefix = await asyncio.wait_for(self.reader.readexactly(4), WAIT)
        except asyncio.IncompleteReadError:
            return None
        body = await self.reader.readexactly(int.from_bytes(prefix, "big"))
        return decode_header(body[2 : 2 + int.from_bytes(body[:2], "big")])

    async def headers_until_closed(self) -> list[list]:
        headers = []
        while (header := await self.next_header()) is not None:
            headers.append(header)
        self.writer.close()
        return headers


async def test_a_frame_over_the_limit_ends_that_connection_as_soon_as_announced(service):
    server, _, _ = service
    peer = await RawPeer.open(server.port)
    # Only the 6-byte prefix of a 1 GiB frame: the server must not wait for the body.
    peer.writer.write((1 << 30).to_bytes(4, "big") + (10).to_bytes(2, "big"))
    headers = await peer.headers_until_closed()
    goodbye = headers[-1]
    assert goodbye[0] == Kind.GOODBYE
    assert goodbye[1] == "pbnb.errors.LimitExceeded"
    assert "1073741824-byte frame" in goodbye[2] and "65536" in goodbye[2]
    await asyncio.wait_for(until(lambda: len(server.connections) == 1), WAIT)


async def test_a_peer_speaking_another_protocol_gets_a_clear_goodbye(service):
    server, _, _ = service
    peer = await RawPeer.open(server.port, opening=b"\x16\x03\x01\x00\xa5\x01\x00\x00")  # TLS
    headers = await peer.headers_until_closed()
    assert headers[-1][0] == Kind.GOODBYE
    assert "does not speak pbnb" in headers[-1][2]


async def test_a_peer_with_another_version_gets_a_clear_goodbye(service):
    server, _, _ = service
    peer = await RawPeer.open(server.port, opening=b"PBNB\x00\x63\x00\x00")
    headers = await peer.headers_until_closed()
    assert "version 99" in headers[-1][2]


async def test_too_many_inbound_calls_from_a_raw_flood_are_each_refused(service):
    server, service_root, _ = service
    peer = await RawPeer.open(server.port)
    args = msgpack.packb([[], {}])

    def calls(ids: range) -> bytes:
        return b"".join(encode_frame([Kind.CALL, n, 1, "hold", serialize.PLAIN], args) for n in ids)

    peer.writer.write(encode_frame([Kind.ROOT, 1]) + calls(range(2, 7)))
    await asyncio.wait_for(until(lambda: service_root.running == 5), WAIT)
    peer.writer.write(calls(range(7, 40)))
    replies: dict[int, list] = {}
    while len(replies) < 34:  # the root, then the 33 refusals
        header = await peer.next_header()
        if header[0] in (Kind.ANSWER, Kind.ERROR):
            replies[header[1]] = header
    service_root.gate.set()
    while len(replies) < 39:
        header = await peer.next_header()
        if header[0] in (Kind.ANSWER, Kind.ERROR):
            replies[header[1]] = header
    refused = [h for h in replies.values() if h[0] == Kind.ERROR]
    assert len(refused) == 33
    assert all(h[2] == "pbnb.errors.LimitExceeded" and "max_inbound_calls" in h[3] for h in refused)
    assert sum(h[0] == Kind.ANSWER for h in replies.values()) == 6  # root + 5 calls
    peer.writer.close()
    await asyncio.wait_for(until(lambda: len(server.connections) == 1), WAIT)


# ------------------------------------------------------------- failed logins


async def test_failed_logins_end_that_connection_and_others_log_in():
    from pbnb.cred import InMemoryPasswordChecker, Portal, UnauthorizedLogin, UsernamePassword

    class Realm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return interfaces[0], pb.Avatar(), lambda: None

    portal = Portal(Realm(), [InMemoryPasswordChecker(ada="lovelace", iterations=4096)], max_failures=3)
    server = await pb.serve(portal)
    guesser = await pb.connect("127.0.0.1", server.port)
    honest = await pb.connect("127.0.0.1", server.port)
    for attempt in range(3):
        with pytest.raises((UnauthorizedLogin, pb.PBConnectionLost)):
            await guesser.login(UsernamePassword("ada", f"guess {attempt}"))
    await asyncio.wait_for(guesser.wait_closed(), WAIT)
    with pytest.raises((pb.DeadReferenceError, pb.PBConnectionLost)):
        await guesser.login(UsernamePassword("ada", "lovelace"))
    assert await honest.login(UsernamePassword("ada", "lovelace")) is not None
    await honest.close()
    await server.close()
