"""Two brokers joined by bytes, no sockets and no event loop; every test also runs byte by byte."""

from __future__ import annotations

import gc
import struct

import msgpack
import pytest
from pair import ConnectionPair, Outcome

from pbnb import (
    Cacheable,
    Copyable,
    CopyRegistry,
    DeadReferenceError,
    Error,
    InsecureJelly,
    LimitExceeded,
    Limits,
    NoSuchMethod,
    PBConnectionLost,
    ProtocolError,
    Referenceable,
    RemoteCache,
    RemoteCopy,
    RemoteError,
    RemoteReference,
    Root,
    SerializationError,
)
from pbnb.core import events as ev
from pbnb.core.broker import Broker
from pbnb.core.wire import PREAMBLE, Kind, encode_frame


class Point(Copyable):
    def __init__(self, x):
        self.x = x


class RemotePoint(RemoteCopy):
    pass


class Secret(Copyable):
    """Registered nowhere: receivers must refuse it."""

    def __init__(self):
        self.data = "classified"


class Exploding(Copyable):
    def getStateToCopyFor(self, perspective):
        raise RuntimeError("state is not ready")


class Thing(Referenceable):
    def __init__(self, name="thing"):
        self.name = name

    def remote_name(self):
        return self.name


class Callback(Referenceable):
    def __init__(self):
        self.seen = []

    def remote_ping(self, value):
        self.seen.append(value)
        return value * 2


class Boom(Error):
    pass


class Service(Root):
    def __init__(self):
        self.thing = Thing()
        self.kept = None
        self.got = []
        self.notes = []
        self.gauge = Gauge()

    def remote_add(self, a, b=0, *, scale=1):
        return (a + b) * scale

    def remote_echo(self, value):
        return value

    def remote_thing(self):
        return self.thing

    def remote_new_thing(self, name):
        return Thing(name)

    def remote_keep(self, ref):
        self.kept = ref
        return isinstance(ref, RemoteReference)

    def remote_is_mine(self, obj):
        return obj is self.thing

    def remote_receive(self, value):
        self.got.append(value)
        return "received"

    def remote_note(self, value):
        self.notes.append(value)

    def remote_fail(self):
        raise ValueError("no good")

    def remote_expected(self):
        raise Boom("expected failure")

    def remote_secret(self):
        return Secret()

    def remote_fussy(self):
        return Fussy()

    def remote_gauge(self):
        return self.gauge


@pytest.fixture
def registry():
    registry = CopyRegistry()
    registry.register(Point, RemotePoint)
    return registry


@pytest.fixture(params=[False, True], ids=["whole", "byte-by-byte"])
def byte_by_byte(request):
    return request.param


@pytest.fixture
def service():
    return Service()


@pytest.fixture
def pair(service, registry, byte_by_byte):
    options = {"registry": registry}
    return ConnectionPair(
        server_root=service,
        byte_by_byte=byte_by_byte,
        client_options=options,
        server_options=dict(options),
    ).handshake()


def collect(pair):
    gc.collect()
    pair.pump()


def limited_pair(service, byte_by_byte=False, **limits) -> ConnectionPair:
    """A pair whose server checks ``Limits(**limits)``, handshake done."""
    server_options = {"limits": Limits(**limits)}
    return ConnectionPair(
        server_root=service, byte_by_byte=byte_by_byte, server_options=server_options
    ).handshake()


# ------------------------------------------------------------------ calls


def test_call_with_positional_and_keyword_arguments(pair):
    """Behaviour 2 (sans-IO): keywords travel as well as positional arguments."""
    root = pair.root()
    assert pair.call(root, "add", 2, b=3, scale=10).result() == 50
    assert pair.client.table_sizes()["pending_calls"] == 0
    assert pair.server.table_sizes()["inbound_calls"] == 0


def test_values_round_trip_through_a_call(pair):
    """Behaviours 3 and 4 (sans-IO): types and identity survive a call and its answer."""
    root = pair.root()
    shared = [1]
    loop: list = []
    loop.append(loop)
    value = {(1, 2): frozenset({3}), 2**100: {4, 5}, "s": [shared, shared], "loop": loop, None: b"\x00"}
    got = pair.call(root, "echo", value).result()
    assert got == {**value, "s": [[1], [1]], "loop": got["loop"]}
    assert got["s"][0] is got["s"][1]
    assert got["loop"][0] is got["loop"]


@pytest.mark.parametrize("chunk", [1 << 20, 65536, 7919], ids=["whole", "64k-reads", "odd-reads"])
def test_large_frames_arrive_whole_from_reads_through_a_reused_buffer(service, chunk):
    """Frames over 256 KiB are assembled as their bytes arrive.

    The reader here hands over views of one buffer that it overwrites right
    after each read, as the asyncio layer does; small calls of many sizes
    travel between the large ones, so frame boundaries fall inside reads.
    """
    pair = ConnectionPair(server_root=service).handshake()
    root = pair.root()
    big = bytes(range(256)) * 2000
    values = [big, *("x" * n for n in range(0, 30000, 997)), big[::-1], 7]
    outcomes = [root.callRemote("echo", value) for value in values]
    reused = bytearray(chunk)

    def deliver(sender, receiver):
        data = sender.data_to_send()
        for start in range(0, len(data), chunk):
            piece = data[start : start + chunk]
            reused[: len(piece)] = piece
            receiver.receive_data(memoryview(reused)[: len(piece)])
            pair.handle(receiver, receiver.next_events())
            reused[: len(piece)] = bytes(len(piece))

    deliver(pair.client, pair.server)
    deliver(pair.server, pair.client)
    assert [outcome.result() for outcome in outcomes] == values


def test_many_outstanding_calls_answered_in_any_order(pair, service):
    """Behaviour 5 (sans-IO): each answer reaches its own caller."""
    root = pair.root()
    pair.defer_calls = True
    outcomes = [root.callRemote("add", i, 1) for i in range(300)]
    pair.pump()
    assert len(pair.deferred) == 300 and not any(o.done() for o in outcomes)
    pair.deferred.reverse()
    pair.defer_calls = False
    pair.run_deferred()
    assert [o.result() for o in outcomes] == [i + 1 for i in range(300)]


def test_fire_and_forget_runs_without_an_answer(pair, service):
    """Behaviour 7 (sans-IO): no request id, nothing pending, the method still runs."""
    root = pair.root()
    assert root.callRemoteNoAnswer("note", "hi") is None
    assert pair.client.table_sizes()["pending_calls"] == 0
    pair.pump()
    assert service.notes == ["hi"]
    assert pair.server.table_sizes()["inbound_calls"] == 0
    assert not pair.server.has_data_to_send()


def test_fire_and_forget_failure_sends_nothing_back(pair):
    root = pair.root()
    root.callRemoteNoAnswer("fail")
    pair.transfer(pair.client)  # the server runs it and fails: no ERROR goes back
    assert not pair.server.has_data_to_send()
    assert pair.call(root, "add", 1).result() == 1


def test_describe_lists_remote_methods(pair):
    root = pair.root()
    outcome = root.describe()
    pair.pump()
    names = [m["name"] for m in outcome.result()["methods"]]
    assert "add" in names and "fail" in names and "__init__" not in names


# ----------------------------------------------------------------- errors


def test_remote_exception_arrives_with_type_and_message(pair):
    """Behaviour 23 (sans-IO): no traceback unless the server opts in."""
    root = pair.root()
    error = pair.call(root, "fail").exception()
    assert isinstance(error, RemoteError)
    assert error.remote_type == "ValueError" and error.message == "no good"
    assert error.remote_traceback is None
    error = pair.call(root, "expected").exception()
    assert error.remote_type.endswith("test_core_sansio.Boom")


def test_tracebacks_travel_when_the_server_allows(service, byte_by_byte):
    """Behaviour 23 (sans-IO): send_tracebacks=True puts the text on the wire."""
    pair = ConnectionPair(
        server_root=service, byte_by_byte=byte_by_byte, server_options={"send_tracebacks": True}
    ).handshake()
    error = pair.call(pair.root(), "fail").exception()
    assert "Traceback" in error.remote_traceback and "remote_fail" in error.remote_traceback


def test_missing_method_raises_no_such_method(pair):
    """Behaviour 26 (sans-IO)."""
    root = pair.root()
    error = pair.call(root, "missing").exception()
    assert isinstance(error, NoSuchMethod)
    assert "missing" in str(error)
    assert pair.of_type("server", ev.MessageRefused)


def test_bad_method_name_is_refused_locally(pair):
    root = pair.root()
    with pytest.raises(ValueError, match="identifier"):
        pair.client.call(root, "not a name", (), {}, None)


# ------------------------------------------------------------- references


def test_reference_returned_and_called(pair):
    """Behaviour 8 (sans-IO): a returned Referenceable becomes a RemoteReference."""
    root = pair.root()
    thing = pair.call(root, "thing").result()
    assert isinstance(thing, RemoteReference)
    assert pair.call(thing, "name").result() == "thing"


def test_client_reference_passed_and_called_back(pair, service):
    """Behaviours 8 and 13 (sans-IO): the server calls the client's object."""
    root = pair.root()
    callback = Callback()
    assert pair.call(root, "keep", callback).result() is True
    outcome = service.kept.callRemote("ping", 21)
    pair.pump()
    assert outcome.result() == 42
    assert callback.seen == [21]


def test_reference_sent_home_arrives_as_the_original(pair, service):
    """Behaviour 9 (sans-IO)."""
    root = pair.root()
    thing = pair.call(root, "thing").result()
    assert pair.call(root, "is_mine", thing).result() is True
    assert pair.call(root, "echo", root).result() is root


def test_two_references_to_one_object_are_equal(pair):
    """Behaviour 10 (sans-IO)."""
    root = pair.root()
    first = pair.call(root, "thing").result()
    second = pair.call(root, "thing").result()
    assert first == second and hash(first) == hash(second)
    other = pair.call(root, "new_thing", "other").result()
    assert other != first
    assert len({first, second, other}) == 2


def test_references_as_dict_keys_and_in_tuples(pair, service):
    """References are hashable on both sides, so they may key dicts, in PLAIN and GRAPH messages."""
    root = pair.root()
    thing = pair.call(root, "thing").result()
    callback = Callback()
    shared = [1]
    got = pair.call(root, "echo", {thing: shared, callback: shared, (thing, callback): 3}).result()
    assert got[thing] is got[callback] and got[(thing, callback)] == 3
    pair.call(root, "receive", {thing: 1, (thing,): [callback, callback]})
    (received,) = service.got
    assert received[service.thing] == 1
    first, second = received[(service.thing,)]
    assert first is second and isinstance(first, RemoteReference)


def test_symmetric_root(service, byte_by_byte):
    """Behaviour 13 (sans-IO): the server asks the client for its root."""
    client_root = Callback()
    pair = ConnectionPair(client_root, service, byte_by_byte=byte_by_byte).handshake()
    ref = pair.root(pair.server)
    assert pair.call(ref, "ping", 4).result() == 8


def test_reference_belonging_to_another_connection_is_refused(service, pair):
    root = pair.root()
    other = ConnectionPair(server_root=Service()).handshake()
    foreign = other.root()
    with pytest.raises(SerializationError, match="another connection"):
        root.callRemote("echo", foreign).result()
    assert pair.client.table_sizes()["pending_calls"] == 0


# ----------------------------------------------------------- refcounting


def test_last_reference_collected_releases_the_export(pair, service):
    """Behaviour 11 (sans-IO): DECREF travels and the owner drops its entry."""
    root = pair.root()
    exports_before = pair.server.table_sizes()["exports"]
    thing = pair.call(root, "new_thing", "temp").result()
    again = pair.call(root, "new_thing", "temp2").result()
    assert pair.server.table_sizes()["exports"] == exports_before + 2
    del thing
    collect(pair)
    assert pair.server.table_sizes()["exports"] == exports_before + 1
    released = [e.obj.name for e in pair.of_type("server", ev.ObjectReleased)]
    assert released == ["temp"]
    del again
    collect(pair)
    assert pair.server.table_sizes()["exports"] == exports_before
    assert pair.client.table_sizes()["imports"] == 1  # only the root


def test_an_object_sent_many_times_is_released_once(pair, service):
    root = pair.root()
    refs = [pair.call(root, "thing").result() for _ in range(5)]
    assert len(set(map(id, refs))) == 1  # one handle per remote object
    del refs
    collect(pair)
    assert [e.obj for e in pair.of_type("server", ev.ObjectReleased)] == [service.thing]
    assert pair.server.table_sizes()["exports"] == 1


def test_reference_in_flight_while_decref_travels_still_resolves(pair, service):
    """Behaviour 11, the race of twisted#2334: a reference sent while the DECREF travels.

    The server sends the object again before the client's DECREF arrives; the
    new copy must resolve and keep the export alive, and the export is released
    exactly when that last copy is gone too.
    """
    root = pair.root()
    thing = pair.call(root, "thing").result()
    thing_id = thing._id
    pair.defer_calls = True
    second = root.callRemote("thing")  # the server will answer it later
    pair.pump()
    pair.defer_calls = False
    del thing
    gc.collect()
    pair.client.flush_collected()  # DECREF queued on the client, not yet delivered
    assert pair.client.has_data_to_send()
    _, event = pair.deferred.pop()
    pair.run(pair.server, event)  # the answer carries the object again: its count is now 2
    pair.transfer(pair.client)  # DECREF(1) arrives: the count drops to 1, not 0
    assert pair.of_type("server", ev.ObjectReleased) == []
    assert pair.server.table_sizes()["exports"] == 2
    pair.transfer(pair.server)  # the answer arrives
    pair.pump()
    again = second.result()
    assert again._id == thing_id
    assert pair.call(again, "name").result() == "thing"
    del again, second
    collect(pair)
    assert [e.obj for e in pair.of_type("server", ev.ObjectReleased)] == [service.thing]
    assert pair.server.table_sizes()["exports"] == 1
    assert pair.client.table_sizes()["imports"] == 1


def test_reference_arriving_before_the_collected_handle_is_flushed(pair, service):
    """Behaviour 11: the handle died but its DECREF was not sent when the object came back."""
    root = pair.root()
    thing = pair.call(root, "thing").result()
    del thing
    gc.collect()  # recorded as collected; flush_collected has not run
    outcome = root.callRemote("thing")
    for broker in (pair.client, pair.server, pair.client):
        pair.transfer(broker)  # the call goes out and the answer comes back, no flush in between
    again = outcome.result()
    del outcome
    pair.pump()  # now the old handle's DECREF(1) travels
    assert pair.of_type("server", ev.ObjectReleased) == []
    assert pair.call(again, "name").result() == "thing"
    del again
    collect(pair)
    assert [e.obj for e in pair.of_type("server", ev.ObjectReleased)] == [service.thing]


def test_decref_for_more_than_was_sent_is_a_protocol_error(pair):
    pair.root()
    pair.client._send([Kind.DECREF, 1, 5])
    pair.pump()
    (failed,) = pair.of_type("server", ev.ConnectionFailed)
    assert isinstance(failed.error, ProtocolError) and "more times" in str(failed.error)


def test_live_reference_limit_fails_that_call_only(service, byte_by_byte):
    """Behaviour 12 (sans-IO): over max_references the answer fails with LimitExceeded."""
    pair = limited_pair(service, byte_by_byte, max_references=3)
    root = pair.root()
    keep = [pair.call(root, "new_thing", str(i)).result() for i in range(2)]
    error = pair.call(root, "new_thing", "one too many").exception()
    assert isinstance(error, LimitExceeded) and "max_references" in str(error)
    assert pair.call(root, "add", 1, 2).result() == 3
    del keep
    collect(pair)
    assert isinstance(pair.call(root, "new_thing", "fits again").result(), RemoteReference)


def test_inbound_call_limit_refuses_the_extra_call(service, byte_by_byte):
    """Calls still running (here: held back, like slow async methods) count towards the limit."""
    pair = limited_pair(service, byte_by_byte, max_inbound_calls=2)
    root = pair.root()
    pair.defer_calls = True
    running = [pair.call(root, "add", i) for i in range(2)]
    refused = pair.call(root, "add", 2)
    assert isinstance(refused.exception(), LimitExceeded)
    assert "max_inbound_calls" in str(refused.exception())
    pair.defer_calls = False
    pair.run_deferred()
    assert [o.result() for o in running] == [0, 1]
    assert pair.call(root, "add", 3).result() == 3


def test_a_burst_of_quick_calls_is_not_refused(service):
    """Calls that arrive together are not running yet: the limit must not refuse them."""
    pair = limited_pair(service, max_inbound_calls=5)
    root = pair.root()
    outcomes = [root.callRemote("add", i, 1) for i in range(50)]
    pair.pump()  # all 50 frames reach the server in one receive_data()
    assert [o.result() for o in outcomes] == [i + 1 for i in range(50)]


# ----------------------------------------------------------------- copies


def test_copy_arrives_as_its_registered_class(pair, service):
    """Behaviour 14 (sans-IO)."""
    root = pair.root()
    assert pair.call(root, "receive", Point(3)).result() == "received"
    (got,) = service.got
    assert type(got) is RemotePoint and got.x == 3


def test_unregistered_copy_in_arguments_fails_the_call(pair, service):
    """Behaviour 16 (sans-IO): InsecureJelly on the receiver, and the caller gets it too."""
    root = pair.root()
    callback = Callback()
    error = pair.call(root, "receive", [Secret(), callback]).exception()
    assert isinstance(error, InsecureJelly)
    assert "Secret" in str(error)
    assert service.got == []
    # The reference the refused message carried went straight back.
    collect(pair)
    assert pair.client.table_sizes()["exports"] == 0
    assert pair.server.table_sizes()["imports"] == 0
    assert pair.call(root, "add", 1).result() == 1


def test_unregistered_copy_in_an_answer_fails_the_call(pair):
    """Behaviour 16 (sans-IO): the answer could not be decoded, so the call fails with that."""
    root = pair.root()
    error = pair.call(root, "secret").exception()
    assert isinstance(error, InsecureJelly)
    assert pair.call(root, "add", 2).result() == 2


class Fussy(Copyable):
    def __init__(self, ref=None):
        self.ref = ref


class RemoteFussy(RemoteCopy):
    def setCopyableState(self, state):
        raise RuntimeError("this copy refuses every state")


def test_set_copyable_state_failure_in_an_answer_fails_only_that_call(pair, registry):
    """A receiver hook that raises fails the call with the decoding error; the connection lives."""
    registry.register(Fussy, RemoteFussy)
    root = pair.root()
    error = pair.call(root, "fussy").exception()
    assert isinstance(error, ProtocolError)
    assert "RuntimeError" in str(error) and "refuses every state" in str(error)
    assert not pair.of_type("client", ev.ConnectionFailed)
    assert not pair.of_type("server", ev.ConnectionFailed)
    assert pair.call(root, "add", 4).result() == 4


def test_set_copyable_state_failure_in_arguments_is_refused(pair, registry, service):
    registry.register(Fussy, RemoteFussy)
    root = pair.root()
    error = pair.call(root, "receive", Fussy(Callback())).exception()
    assert isinstance(error, ProtocolError) and "refuses every state" in str(error)
    assert service.got == []
    collect(pair)
    assert pair.client.table_sizes()["exports"] == 0  # the reference it carried came back
    assert pair.call(root, "add", 5).result() == 5


class Gauge(Cacheable):
    """Its second observation sends a state its copy cannot take."""

    def __init__(self):
        self.observations = 0

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observations += 1
        return {"level": 1} if self.observations == 1 else {"broken": True}


class GaugeCopy(RemoteCache):
    def setCopyableState(self, state):
        self.level = state["level"]


def test_set_copyable_state_failure_in_a_cache_state_keeps_the_connection(service, registry):
    """A CACHE_STATE whose state the copy refuses is reported, not fatal to the stream."""
    registry.register(Gauge, GaugeCopy)
    pair = ConnectionPair(
        server_root=service, client_options={"registry": registry}, server_options={"registry": registry}
    ).handshake()
    root = pair.root()
    copy = pair.call(root, "gauge").result()
    assert copy.level == 1
    again = root.callRemote("gauge")
    pair.transfer(pair.client)
    in_flight = pair.server.data_to_send()  # a CACHED ref to the copy about to be dropped
    del copy
    gc.collect()
    pair.client.flush_collected()
    pair.transfer(pair.client)  # DECACHE crosses the CACHED ref: the owner sends the state again
    state_frame = pair.server.data_to_send()
    pair.feed(pair.client, in_flight)
    pair.feed(pair.client, state_frame)
    (refused,) = pair.of_type("client", ev.MessageRefused)
    assert "state of cache" in refused.description and isinstance(refused.error, KeyError)
    assert isinstance(again.result(), GaugeCopy)
    assert not pair.of_type("client", ev.ConnectionFailed)
    assert pair.call(root, "add", 7).result() == 7


def test_get_state_failure_fails_the_caller_locally(pair):
    """Behaviour 17 (sans-IO): nothing is sent, the call raises at once."""
    root = pair.root()
    callback = Callback()
    outcome = root.callRemote("receive", [callback, Exploding()])
    assert isinstance(outcome.exception(), RuntimeError)
    assert not pair.client.has_data_to_send()
    sizes = pair.client.table_sizes()
    assert sizes["exports"] == 0 and sizes["pending_calls"] == 0


def test_registered_exception_copy_arrives_as_itself(pair, registry):
    """Behaviour 25 (sans-IO)."""

    class Rejected(Error, Copyable):
        def __init__(self, reason):
            super().__init__(reason)
            self.reason = reason

    class RemoteRejected(Exception, RemoteCopy):
        pass

    registry.register(Rejected, RemoteRejected)

    class Refuser(Referenceable):
        def remote_go(self):
            raise Rejected("nope")

    client_root = pair.root()
    del client_root
    pair.server.root = Refuser()
    ref = pair.root()
    error = pair.call(ref, "go").exception()
    assert type(error) is RemoteRejected
    assert error.reason == "nope" and error.args == ("nope",)


# ------------------------------------------------------------- disconnect


def test_disconnect_fails_pending_and_later_calls(pair, service):
    """Behaviour 27 (sans-IO): PBConnectionLost, then DeadReferenceError, callbacks once."""
    root = pair.root()
    pair.defer_calls = True
    pending = root.callRemote("add", 1)
    pair.pump()
    fired = []
    removed = []
    root.notifyOnDisconnect(fired.append)
    root.notifyOnDisconnect(removed.append)
    root.dontNotifyOnDisconnect(removed.append)
    pair.disconnect(ConnectionResetError("reset"))
    assert isinstance(pending.exception(), PBConnectionLost)
    assert fired == [root] and removed == []
    with pytest.raises(DeadReferenceError):
        root.callRemote("add", 1).result()
    pair.disconnect()
    assert fired == [root]
    assert pair.server.table_sizes()["exports"] == 0
    assert [e.obj for e in pair.of_type("server", ev.ObjectReleased)] == [service]


def test_cancel_tells_the_peer_and_drops_the_late_answer(pair):
    """Behaviour 39 (sans-IO): CANCEL reaches the server as CancelRequested."""
    root = pair.root()
    pair.defer_calls = True
    outcome = root.callRemote("add", 5)
    pair.pump()
    pair.client.cancel(outcome.request_id)
    pair.pump()
    (cancel,) = pair.of_type("server", ev.CancelRequested)
    assert cancel.request_id == outcome.request_id
    pair.defer_calls = False
    pair.run_deferred()  # the server answers anyway: nothing is sent, nothing settles
    assert not outcome.done()
    assert pair.call(root, "add", 6).result() == 6


# ----------------------------------------------------------- bad input


def fresh_broker(**options) -> Broker:
    broker = Broker(**options)
    broker.data_to_send()
    return broker


def feed(broker: Broker, data: bytes, byte_by_byte: bool) -> list:
    if not byte_by_byte:
        broker.receive_data(data)
        return broker.next_events()
    events = []
    for i in range(len(data)):
        broker.receive_data(data[i : i + 1])
        events.extend(broker.next_events())
    return events


def hello(max_frame: int = 1 << 20) -> bytes:
    return PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": max_frame}])


def refusal(events: list) -> ProtocolError:
    (failed,) = [e for e in events if isinstance(e, ev.ConnectionFailed)]
    assert isinstance(failed.error, ProtocolError)
    return failed.error


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "does not speak pbnb"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01", "does not speak pbnb"),
        (b"PBNB\x00\x02\x00\x00", "version 2"),
        (b"PBNB\x00\x00\x00\x00", "version 0"),
    ],
    ids=["http", "tls-hello", "newer-version", "older-version"],
)
def test_garbage_or_other_version_is_refused(data, message, byte_by_byte):
    """Behaviour 30 (sans-IO): a clear ProtocolError and a GOODBYE explaining it."""
    broker = fresh_broker()
    error = refusal(feed(broker, data, byte_by_byte))
    assert message in str(error)
    goodbye = broker.data_to_send()
    assert message.encode() in goodbye
    assert feed(broker, hello(), byte_by_byte) == []  # nothing more is read


def test_oversized_frame_is_refused_from_its_prefix(byte_by_byte):
    """The length prefix alone triggers LimitExceeded; the body is never awaited."""
    broker = fresh_broker(limits=Limits(max_frame=1000))
    events = feed(broker, hello() + struct.pack(">IH", 5000, 3), byte_by_byte)
    error = refusal(events)
    assert isinstance(error, LimitExceeded) and "5000" in str(error)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (encode_frame([99]), "unknown message kind 99"),
        (encode_frame([Kind.CALL, 1]), "malformed CALL"),
        (encode_frame([Kind.ANSWER, 77, 0], msgpack.packb(1)), "not pending"),
        (struct.pack(">IH", 3, 0) + b"\x00", "header length"),
        (struct.pack(">IH", 3, 1) + b"\xc1", "undecodable frame header"),
        (encode_frame(["call"]), "must be a list starting with a kind"),
    ],
    ids=["unknown-kind", "short-call", "unasked-answer", "zero-header", "bad-header", "kind-not-int"],
)
def test_bad_frames_are_refused(frame, message, byte_by_byte):
    broker = fresh_broker()
    error = refusal(feed(broker, hello() + frame, byte_by_byte))
    assert message in str(error)


def test_message_before_hello_is_refused(byte_by_byte):
    broker = fresh_broker()
    error = refusal(feed(broker, PREAMBLE + encode_frame([Kind.PING, 1]), byte_by_byte))
    assert "before HELLO" in str(error)


def test_call_on_unknown_object_fails_only_that_call(pair):
    root = pair.root()
    pair.client._send([Kind.CALL, 999, 424242, "add", 0], msgpack.packb([[1], {}]))
    pair.client._calls[999] = outcome = Outcome()
    pair.pump()
    assert isinstance(outcome.exception(), ProtocolError)
    assert "no object 424242" in str(outcome.exception())
    assert pair.call(root, "add", 3).result() == 3


def test_sender_refuses_a_message_over_the_peers_frame_limit(service, byte_by_byte):
    """The peer's HELLO announced max_frame: we fail the call locally instead of being dropped."""
    pair = limited_pair(service, byte_by_byte, max_frame=4096)
    root = pair.root()
    error = root.callRemote("echo", b"x" * 10_000).exception()
    assert isinstance(error, LimitExceeded) and "4096" in str(error)
    assert pair.call(root, "echo", b"x" * 1000).result() == b"x" * 1000


def test_goodbye_from_the_peer_is_reported(pair):
    pair.root()
    pair.client._send([Kind.GOODBYE, "Shutdown", "server going away"])
    pair.pump()
    (failed,) = pair.of_type("server", ev.ConnectionFailed)
    assert failed.by_peer and "server going away" in str(failed.error)
