"""The reliability cases behind docs/reliability.md, as functions.

Each case starts a fresh server (with the limit under test), attacks or
disturbs it, and returns a ``Row``: pass or fail, what happened, and the worst
round trip of a bystander client that called the server throughout.
``tests/test_hardening_reliability.py`` runs every case as its own test;
``scripts/reliability.py`` runs them all and prints the table.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import attacks, faults, limits
from .harness import Row
from .soak import soak


@dataclass(frozen=True)
class Spec:
    """One row: its test id, the case, and whether it is slow (seconds, processes, crowds)."""

    id: str
    run: Callable[[], Awaitable[Row]]
    slow: bool = True


_fast = functools.partial(Spec, slow=False)

# In the order of the table.
CASES: list[Spec] = [
    Spec("limit-frame", limits.frame),
    Spec("limit-frame-sender", limits.frame_sender),
    Spec("limit-string", limits.string),
    Spec("limit-depth", limits.depth),
    _fast("limit-deep-nesting", limits.deep_nesting),
    Spec("limit-container", limits.container),
    Spec("limit-inbound-calls", limits.inbound),
    Spec("limit-references", limits.references),
    Spec("limit-caches", limits.caches),
    Spec("limit-failed-logins", limits.logins),
    _fast("login-user-enumeration", limits.user_enumeration),
    Spec("fault-client-killed", faults.client_killed),
    Spec("fault-server-killed", faults.server_killed),
    Spec("fault-reset", faults.reset),
    Spec("fault-stalled-reader", faults.stalled_reader),
    Spec("fault-slow-peer", faults.slow_peer),
    Spec("fault-silent-peer", faults.silent_peer),
    Spec("fault-trickle", faults.trickle),
    _fast("fault-big-messages", attacks.big_messages),
    _fast("fault-half-close", attacks.half_close),
    Spec("attack-garbage", attacks.garbage),
    Spec("attack-fuzzed", attacks.fuzzed),
    Spec("attack-idle-flood", attacks.idle_flood),
    Spec("attack-tls-flood", functools.partial(attacks.idle_flood, 500, tls=True)),
    _fast("attack-big-frame-before-login", attacks.big_frame_before_login),
    _fast("attack-hash-flood-bigint", attacks.hash_flood),
    _fast("attack-hash-flood-set", functools.partial(attacks.hash_flood, "set")),
    _fast("attack-hash-flood-login", functools.partial(attacks.hash_flood, "tuple", 32_768, login=True)),
    _fast("attack-log-flood-signature", attacks.log_flood_signature),
    _fast("attack-log-flood-names", attacks.log_flood_names),
    _fast("attack-fire-and-forget", attacks.fire_and_forget),
    _fast("attack-refused-nils", functools.partial(attacks.refused, "nils")),
    _fast("attack-refused-references", functools.partial(attacks.refused, "references")),
]

__all__ = ["CASES", "Row", "Spec", "soak"]
