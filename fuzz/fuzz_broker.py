"""Coverage-guided fuzzing of the broker's input side with atheris.

Every input is a byte stream from a hostile peer, fed to a fresh server Broker
in the chunks the input itself chooses. The broker may refuse messages
(``MessageRefused``) or give up on the stream (``ConnectionFailed`` carrying a
``ProtocolError``), but it must never raise, hang, or keep anything in its
tables once the connection is lost.

Run it from the repository root; the corpus directory collects the inputs that
reached new code, and a crash leaves its input in ``crash-*`` to replay::

    .venv/bin/python fuzz/fuzz_broker.py --seed-corpus /tmp/pbnb-corpus
    .venv/bin/python fuzz/fuzz_broker.py /tmp/pbnb-corpus -max_total_time=600 -rss_limit_mb=2048

``--seed-corpus DIR`` writes a few valid sessions to DIR to start from. The
test suite runs a short bounded pass (``tests/test_fuzz_broker.py``); the
``feed`` function below is also what its hypothesis tests use.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

if __name__ == "__main__":  # coverage feedback for pbnb alone: instrumenting everything is slow
    import atheris

    with atheris.instrument_imports(include=["pbnb"]):
        import pbnb as pb
else:
    import pbnb as pb
from pbnb.core import events as ev
from pbnb.core.broker import Broker
from pbnb.core.reference import RemoteReference

# The server accepts at most this much per frame: bounds what one input can make it hold.
MAX_FRAME = 1 << 20


class FuzzPoint(pb.Copyable):
    def __init__(self, x: int = 0):
        self.x = x


class FuzzPointCopy(pb.RemoteCopy):
    pass


class FuzzNote(pb.Cacheable):
    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        return {"text": "hi"}


class FuzzNoteCopy(pb.RemoteCache):
    pass


class FuzzCallback(pb.Referenceable):
    def remote_ping(self) -> str:
        return "pong"


class FuzzRoot(pb.Root):
    """What the fuzzed server offers: methods that return, raise, keep and hand out."""

    def __init__(self) -> None:
        self.note = FuzzNote()

    def remote_echo(self, *args: Any, **kwargs: Any) -> Any:
        return [args, kwargs]

    def remote_fail(self, message: Any = "") -> None:
        raise pb.Error(str(message)[:100])

    def remote_child(self) -> Any:
        return [FuzzCallback(), self.note, FuzzPoint(3)]


registry = pb.CopyRegistry()
registry.register(FuzzPoint, FuzzPointCopy)
registry.register(FuzzNote, FuzzNoteCopy)


def seed_streams() -> list[bytes]:
    """Valid client->server sessions: the starting points for mutation."""
    streams = []
    shared: list = [1, "two"]
    cyclic: list = [b"three"]
    cyclic.append(cyclic)
    calls = [
        ("echo", (1, 2**70, -3.5, "text", b"bytes", None, True), {"k": (1, {2, 3}, frozenset({4}))}),
        ("echo", ([shared, shared, cyclic],), {}),
        ("echo", (FuzzCallback(), FuzzPoint(7)), {}),
        ("child", (), {}),
        ("fail", ("boom",), {}),
        ("missing", (), {}),
    ]
    for name, args, kwargs in calls:
        client = Broker(registry=registry)
        client.request_root(object())
        root = RemoteReference(client, 1)
        client.call(root, name, args, kwargs, object())
        client.ping(5)
        client.cancel(2)
        streams.append(client.data_to_send())
    return streams


def feed(stream: bytes, cuts: list[int] | tuple[int, ...] = ()) -> list[Any]:
    """Feed ``stream`` to a fresh server broker, split at ``cuts``; return every event.

    Raises AssertionError when the broker breaks a rule: raises anything,
    reports a failure that is not a ProtocolError, or keeps table entries
    after the connection is lost.
    """
    broker = Broker(FuzzRoot(), limits=pb.Limits(max_frame=MAX_FRAME), registry=registry)
    # No invoker: the server never calls back during fuzzing (a call would raise).
    broker.on_collected = lambda: None
    seen: list[Any] = []
    start = 0
    for cut in sorted({c for c in cuts if 0 < c < len(stream)} | {len(stream)}):
        broker.receive_data(stream[start:cut])
        seen += _handle(broker, broker.next_events())
        start = cut
    broker.flush_collected()
    broker.connection_lost()
    seen += _handle(broker, broker.next_events())
    sizes = broker.table_sizes()
    assert not any(sizes.values()), f"tables not empty after the connection was lost: {sizes}"
    return seen


def _handle(broker: Broker, events: list[Any]) -> list[Any]:
    for event in events:
        if isinstance(event, ev.CallReceived):
            try:
                result = event.method(*event.args, **event.kwargs)
            except Exception as exc:
                broker.fail(event.request_id, exc, event.perspective)
            else:
                broker.answer(event.request_id, result, event.perspective)
        elif isinstance(event, ev.ConnectionFailed):
            assert isinstance(event.error, pb.ProtocolError), repr(event.error)
        elif isinstance(event, ev.MessageRefused):
            assert isinstance(event.error, pb.PBError), repr(event.error)
    broker.data_to_send()
    return events


@functools.cache
def _seeds() -> tuple[bytes, ...]:
    return tuple(seed_streams())


def mutate(seed: bytes, edits: list[tuple[int, int]], tail: bytes = b"") -> bytes:
    """``seed`` with the byte at each edit's position replaced, then ``tail`` appended."""
    stream = bytearray(seed)
    for position, value in edits:
        stream[position % len(stream)] = value & 0xFF
    return bytes(stream) + tail


def one_input(data: bytes) -> None:
    """atheris entry point: ``[seed, cut (2 bytes), mask...]``.

    The mask is XORed onto the chosen seed session (bytes past its end are
    appended), so an all-zero mask replays a valid session and each mutation
    the fuzzer makes is a change to a real message.
    """
    if len(data) < 3:
        return
    seeds = _seeds()
    seed = seeds[data[0] % len(seeds)]
    mask = data[3:]
    stream = bytes(a ^ b for a, b in zip(seed, mask, strict=False)) + seed[len(mask) :] + mask[len(seed) :]
    feed(stream, [int.from_bytes(data[1:3], "big")])


def write_seed_corpus(directory: str) -> None:
    """Write one input per seed session, unmutated, for the fuzzer to start from."""
    import pathlib

    folder = pathlib.Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for number, stream in enumerate(_seeds()):
        (folder / f"seed-{number}").write_bytes(bytes([number, 0, 0]) + bytes(len(stream)))


def main(argv: list[str]) -> None:
    if len(argv) > 2 and argv[1] == "--seed-corpus":
        write_seed_corpus(argv[2])
        return
    import atheris

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
