"""Two sans-IO brokers joined by a fake wire, for tests without sockets or an event loop.

``ConnectionPair`` moves the bytes one broker queues into the other broker's
``receive_data()`` (whole, or one byte at a time), runs the remote methods the
events ask for synchronously, and settles the ``Outcome`` objects that
``RemoteReference.callRemote`` returns through ``SyncInvoker``. A remote
method that is a (plain) generator streams: the pair sends its items as
credit allows, and the caller's ``Outcome`` settles with a ``Stream`` whose
items a test reads with ``take()``.
"""

from __future__ import annotations

import inspect
from typing import Any

from pbnb.core import events as ev
from pbnb.core.broker import Broker
from pbnb.core.reference import CacheObserver, Invoker, RemoteReference
from pbnb.core.wire import PackedCall

_PENDING = object()
_SETTLING = (
    ev.CallReceived,
    ev.AnswerReceived,
    ev.CallFailed,
    ev.StreamOpened,
    ev.StreamItems,
    ev.StreamEnded,
)


class Outcome:
    """A future-like result of a call made through ``SyncInvoker``; settled by the pair."""

    def __init__(self) -> None:
        self._value: Any = _PENDING
        self._error: BaseException | None = None
        self.request_id = 0

    def done(self) -> bool:
        return self._value is not _PENDING or self._error is not None

    def set_result(self, value: Any) -> None:
        assert not self.done(), "settled twice"
        self._value = value

    def set_exception(self, error: BaseException) -> None:
        assert not self.done(), "settled twice"
        self._error = error

    def result(self) -> Any:
        """The value, or raise the error; AssertionError if the call is still pending."""
        if self._error is not None:
            raise self._error
        assert self._value is not _PENDING, "the call has no answer yet"
        return self._value

    def exception(self) -> BaseException | None:
        assert self.done(), "the call has no answer yet"
        return self._error


class Stream:
    """The caller's end of a stream in the pair: what arrived, what was read, how it ended."""

    def __init__(self, broker: Broker, request_id: int):
        self.broker = broker
        self.request_id = request_id
        self.arrived: list[tuple[Any, int]] = []  # (value, payload size), not read yet
        self.read: list[Any] = []
        self.ended = False
        self.error: BaseException | None = None

    def take(self, count: int | None = None) -> list[Any]:
        """Read ``count`` arrived items (all by default), telling the broker (which may grant credit)."""
        taken, self.arrived = (
            self.arrived[:count],
            self.arrived[len(self.arrived) if count is None else count :],
        )
        for value, size in taken:
            self.read.append(value)
            self.broker.stream_read(self.request_id, 1, size)
        return [value for value, _ in taken]


class SyncInvoker(Invoker):
    """The ``broker.invoker`` of a test broker: calls return an ``Outcome`` at once."""

    def __init__(self, broker: Broker):
        self.broker = broker

    def call(self, ref: RemoteReference, name: str, args: tuple, kwargs: dict) -> Outcome:
        outcome = Outcome()
        try:
            outcome.request_id = self.broker.call(ref, name, args, kwargs, outcome)
        except Exception as exc:
            outcome.set_exception(exc)
        return outcome

    def call_no_answer(self, ref: RemoteReference, name: str, args: tuple, kwargs: dict) -> None:
        self.broker.call(ref, name, args, kwargs, None, answer=False)

    def call_packed(self, ref: CacheObserver, name: str, payload: bytes | PackedCall) -> None:
        self.broker.call_packed(ref, name, payload)

    def describe(self, ref: RemoteReference) -> Outcome:
        outcome = Outcome()
        outcome.request_id = self.broker.request_description(ref, outcome)
        return outcome


class ConnectionPair:
    """A client broker and a server broker joined by an in-memory wire.

    ``events`` records the events each side reported, keyed by side, so tests
    can assert on refusals, releases and failures; the outcome of a call is in
    the ``Outcome`` it returned.
    """

    def __init__(
        self,
        client_root: Any = None,
        server_root: Any = None,
        *,
        byte_by_byte: bool = False,
        client_options: dict[str, Any] | None = None,
        server_options: dict[str, Any] | None = None,
    ):
        self.client = Broker(client_root, peer_name="server", **(client_options or {}))
        self.server = Broker(server_root, peer_name="client", **(server_options or {}))
        self.byte_by_byte = byte_by_byte
        self.events: dict[str, list[Any]] = {"client": [], "server": []}
        # Calls the test chose to hold back instead of answering at once.
        self.deferred: list[tuple[Broker, ev.CallReceived]] = []
        self.defer_calls = False
        # Generators streaming to the peer: (broker, request id) -> (generator, perspective).
        self.generators: dict[tuple[Broker, int], tuple[Any, Any]] = {}
        for broker in (self.client, self.server):
            broker.invoker = SyncInvoker(broker)
            broker.on_collected = lambda: None  # the pump flushes collected handles itself

    def side(self, broker: Broker) -> str:
        return "client" if broker is self.client else "server"

    def peer(self, broker: Broker) -> Broker:
        return self.server if broker is self.client else self.client

    # ------------------------------------------------------------------ wire

    def transfer(self, sender: Broker) -> bool:
        """Move what ``sender`` queued to its peer; return whether anything moved."""
        data = sender.data_to_send()
        if not data:
            return False
        self.feed(self.peer(sender), data)
        return True

    def feed(self, receiver: Broker, data: bytes) -> None:
        """Hand ``data`` to ``receiver`` (whole, or byte by byte) and handle its events."""
        if self.byte_by_byte:
            for i in range(len(data)):
                receiver.receive_data(data[i : i + 1])
                self.drain(receiver)
        else:
            receiver.receive_data(data)
            self.drain(receiver)

    def drain(self, broker: Broker) -> None:
        """Handle ``broker``'s events, and those that handling them raised, until none are left."""
        events = broker.next_events()
        while events:
            self.handle(broker, events)
            events = broker.next_events()

    def pump(self, limit: int = 10_000) -> None:
        """Exchange bytes (and flush collected handles) until both sides are quiet."""
        for _ in range(limit):
            for broker in (self.client, self.server):
                broker.flush_collected()
                self.drain(broker)
            self.advance_generators()
            moved = self.transfer(self.client)
            moved = self.transfer(self.server) or moved
            if not moved:
                return
        raise AssertionError("the brokers never went quiet")

    def handshake(self) -> ConnectionPair:
        self.pump()
        return self

    def root(self, broker: Broker | None = None) -> RemoteReference:
        """Return a reference to the peer's root, as seen from ``broker`` (default the client)."""
        broker = broker or self.client
        outcome = Outcome()
        broker.request_root(outcome)
        self.pump()
        return outcome.result()

    def call(self, ref: RemoteReference, name: str, *args: Any, **kwargs: Any) -> Outcome:
        """``ref.callRemote(...)`` then pump; returns the settled (or pending) outcome."""
        outcome = ref.callRemote(name, *args, **kwargs)
        self.pump()
        return outcome

    # ---------------------------------------------------------------- events

    def handle(self, broker: Broker, events: list[Any]) -> None:
        # Calls and answers are not recorded: they hold values, and a recorded
        # RemoteReference would never be collected.
        self.events[self.side(broker)].extend(e for e in events if not isinstance(e, _SETTLING))
        for event in events:
            if isinstance(event, ev.CallReceived):
                if self.defer_calls:
                    self.deferred.append((broker, event))
                else:
                    self.run(broker, event)
            elif isinstance(event, ev.AnswerReceived):
                if event.token is not None:
                    event.token.set_result(event.value)
            elif isinstance(event, ev.CallFailed):
                if event.token is not None:
                    event.token.set_exception(event.error)
            elif isinstance(event, ev.StreamOpened):
                stream = Stream(broker, event.request_id)
                broker.bind_stream(event.request_id, stream)
                event.token.set_result(stream)
            elif isinstance(event, ev.StreamItems):
                _stream_of(event.token).arrived.extend(zip(event.values, event.shares(), strict=True))
            elif isinstance(event, ev.StreamEnded):
                stream = _stream_of(event.token)
                stream.ended, stream.error = True, event.error
            elif isinstance(event, ev.CancelRequested):
                generator = self.generators.pop((broker, event.request_id), None)
                if generator is not None:
                    generator[0].close()

    def run(self, broker: Broker, event: ev.CallReceived) -> None:
        """Run a received call synchronously and answer it (a generator starts streaming)."""
        try:
            result = event.method(*event.args, **event.kwargs)
        except Exception as exc:
            broker.fail(event.request_id, exc, event.perspective)
            return
        if inspect.isgenerator(result):
            try:
                opened = broker.open_stream(event.request_id)
            except Exception as exc:
                broker.fail(event.request_id, exc, event.perspective)
                return
            if opened:
                self.generators[broker, event.request_id] = (result, event.perspective)
            return
        broker.answer(event.request_id, result, event.perspective)

    def advance_generators(self) -> None:
        """Send each streaming generator's items while its credit lasts."""
        for (broker, request_id), (generator, perspective) in list(self.generators.items()):
            while broker.may_send_item(request_id):
                try:
                    item = next(generator)
                    broker.send_item(request_id, item, perspective)
                except StopIteration:
                    broker.answer(request_id, None, perspective)
                except Exception as exc:
                    broker.fail(request_id, exc, perspective)
                else:
                    continue
                del self.generators[broker, request_id]
                generator.close()
                break

    def run_deferred(self) -> None:
        """Run the calls held back while ``defer_calls`` was set, then pump."""
        deferred, self.deferred = self.deferred, []
        for broker, event in deferred:
            self.run(broker, event)
            self.drain(broker)
        self.pump()

    def of_type(self, side: str, kind: type) -> list[Any]:
        """The events of type ``kind`` that ``side`` reported so far."""
        return [event for event in self.events[side] if isinstance(event, kind)]

    def disconnect(self, reason: BaseException | None = None) -> None:
        """Both transports close: each broker reports its losses (and streaming generators close)."""
        for broker in (self.client, self.server):
            broker.connection_lost(reason)
            self.drain(broker)
        for generator, _ in self.generators.values():
            generator.close()
        self.generators.clear()


def _stream_of(token: Any) -> Stream:
    # Before the driver bound its Stream, a stream's events carry the call's Outcome.
    return token if isinstance(token, Stream) else token.result()
