"""Hostile input: mutated sessions, random frames and random bytes fed to a broker.

``fuzz/fuzz_broker.py`` defines the harness (``feed``): the broker must never
raise, must report only ``ProtocolError``s when it gives up on a stream, and
must hold nothing once the connection is lost. Memory stays bounded: the
server's frame limit caps what a single input can make it allocate.
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import tracemalloc

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbnb.core import events as ev
from pbnb.core.wire import PREAMBLE, Kind, encode_frame

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fuzz_broker", ROOT / "fuzz" / "fuzz_broker.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

SEEDS = harness.seed_streams()
HELLO = PREAMBLE + encode_frame([Kind.HELLO, {"max_frame": 1 << 20}])
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_seed_sessions_are_valid():
    for stream in SEEDS:
        events = harness.feed(stream)
        assert not any(isinstance(event, ev.ConnectionFailed) for event in events)
        assert any(isinstance(event, (ev.CallReceived, ev.MessageRefused)) for event in events)


@SETTINGS
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    tail=st.binary(max_size=64),
    cuts=st.lists(st.integers(0, 2_000), max_size=6),
)
@pytest.mark.slow
def test_mutated_sessions_never_break_the_broker(seed, edits, tail, cuts):
    harness.feed(harness.mutate(seed, edits, tail), cuts)


header_items = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
frames = st.builds(
    lambda kind, rest, payload: encode_frame([kind, *rest], payload),
    st.integers(0, 16),
    st.lists(header_items, max_size=6),
    st.binary(max_size=40) | header_items.map(lambda value: msgpack.packb(value, use_bin_type=True)),
)


@pytest.mark.slow
@settings(SETTINGS, max_examples=250)
@given(st.lists(frames, max_size=8), st.lists(st.integers(0, 500), max_size=4))
def test_random_frames_after_a_valid_handshake_never_break_the_broker(body, cuts):
    stream = HELLO + encode_frame([Kind.ROOT, 1]) + b"".join(body)
    harness.feed(stream, cuts)


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_never_break_the_broker(data):
    harness.feed(data)
    harness.feed(PREAMBLE + data)


def test_memory_stays_bounded_by_the_frame_limit():
    """Inputs that announce huge containers or frames cost no more than the frame limit."""
    attacks = [
        HELLO + (1 << 31).to_bytes(4, "big") + (5).to_bytes(2, "big"),  # a 2 GiB frame
        HELLO + encode_frame([Kind.CALL, 2, 1, "echo", 0], b"\xdd\xff\xff\xff\xff"),  # a 4G-item array
        HELLO + encode_frame([Kind.CALL, 2, 1, "echo", 0], b"\xdf\xff\xff\xff\xff"),  # a 4G-entry map
        HELLO + encode_frame([Kind.CALL, 2, 1, "echo", 0], b"\xc6\x7f\xff\xff\xff"),  # 2 GiB bytes
        HELLO + encode_frame([Kind.CALL, 2, 1, "echo", 0], b"\x91" * 500_000 + b"\xc0"),  # deep nesting
        HELLO + encode_frame([Kind.CALL, 2, 1, "echo", 1], b"\x91" * 500_000 + b"\xc0"),  # deep, GRAPH
    ]
    tracemalloc.start()
    try:
        for attack in attacks:
            tracemalloc.reset_peak()
            events = harness.feed(attack)
            peak = tracemalloc.get_traced_memory()[1]
            bound = 8 * harness.MAX_FRAME + 4 * len(attack)
            assert peak < bound, f"{peak} bytes for a {len(attack)}-byte input"
            assert any(isinstance(e, (ev.ConnectionFailed, ev.MessageRefused)) for e in events)
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_a_short_coverage_guided_pass():
    """The atheris target runs a bounded pass without finding a crash."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_broker.py"), "-runs=2000", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 2000 runs" in result.stderr


raw_atoms = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=6)
    | st.binary(max_size=6)
    | st.builds(
        msgpack.ExtType,
        st.integers(1, 24),
        st.binary(max_size=3) | st.integers(0, 40).map(lambda n: n.to_bytes(8, "big")),
    )
)
raw_values = st.recursive(
    raw_atoms,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).flatmap(
            lambda items: st.integers(1, 7).map(lambda tag: [msgpack.ExtType(tag, b""), *items])
        )
        | st.dictionaries(raw_atoms, inner, max_size=3)
    ),
    max_leaves=20,
)


@pytest.mark.slow
@settings(SETTINGS, max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 1), raw_values), min_size=1, max_size=4))
def test_crafted_payloads_for_both_modes_never_break_the_broker(calls):
    """Well-framed calls whose payloads use every tag and ext code, shared-refs and all."""
    frames = [encode_frame([Kind.ROOT, 1])]
    for number, (mode, value) in enumerate(calls, start=2):
        payload = msgpack.packb([[value], {}], use_bin_type=True)
        frames.append(encode_frame([Kind.CALL, number, 1, "echo", mode], payload))
    harness.feed(HELLO + b"".join(frames))
