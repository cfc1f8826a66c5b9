"""A module for ``python -m pbnb serve tests.procs.shared_counter:root --backplane ...``.

One shared counter, a root that hands it out, bumps it and says which
process (worker) answered.
"""

from __future__ import annotations

import os

import pbnb as pb
from pbnb.backplane import SharedCacheable, share


class Counter(SharedCacheable):
    observed_fields = ("value", "label")
    writable_fields = ("label",)

    def __init__(self) -> None:
        self.value = 0
        self.label = ""


counter = share(Counter(), "counter")


class Root(pb.Root):
    def remote_counter(self) -> Counter:
        return counter

    def remote_pid(self) -> int:
        return os.getpid()

    def remote_bump(self) -> int:
        # Read, then write: from several processes at once, last writer wins.
        counter.value += 1
        return counter.value

    def remote_set(self, value: int) -> None:
        counter.value = value

    def remote_count_to(self, last: int) -> None:
        """Assign every value up to ``last``: many changes queued for Redis at once."""
        for value in range(counter.value + 1, last + 1):
            counter.value = value


root = Root()
