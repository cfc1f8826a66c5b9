"""The reliability cases behind docs/reliability.md, as functions.

Each case starts a fresh server (with the limit under test), attacks or
disturbs it, and returns a ``Row``: pass or fail, what happened, and the worst
round trip of a bystander client that called the server throughout.
``tests/test_hardening_reliability.py`` runs every case as its own test;
``scripts/reliability.py`` runs them all and prints the table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from . import attacks, faults, limits
from .harness import Row
from .soak import soak

# (test id, case): in the order of the table.
CASES: list[tuple[str, Callable[[], Awaitable[Row]]]] = [
    ("limit-frame", limits.frame),
    ("limit-frame-sender", limits.frame_sender),
    ("limit-string", limits.string),
    ("limit-depth", limits.depth),
    ("limit-container", limits.container),
    ("limit-inbound-calls", limits.inbound),
    ("limit-references", limits.references),
    ("limit-caches", limits.caches),
    ("limit-failed-logins", limits.logins),
    ("fault-client-killed", faults.client_killed),
    ("fault-server-killed", faults.server_killed),
    ("fault-reset", faults.reset),
    ("fault-stalled-reader", faults.stalled_reader),
    ("fault-slow-peer", faults.slow_peer),
    ("fault-silent-peer", faults.silent_peer),
    ("attack-garbage", attacks.garbage),
    ("attack-fuzzed", attacks.fuzzed),
    ("attack-idle-flood", attacks.idle_flood),
]

__all__ = ["CASES", "Row", "soak"]
