"""Shared by the broker process and the kernel: a writable counter and its trait copy."""

from __future__ import annotations

import asyncio

import traitlets

import pbnb as pb
from pbnb.notebook import TraitCache, WritableCacheable


class Counter(WritableCacheable):
    """Owner side: ``value`` may be set by peers, ``label`` only by the owner."""

    observed_fields = ("value", "label")
    writable_fields = ("value",)

    def __init__(self, value: int = 0, label: str = "clicks", on_write=None):
        self.value = value
        self.label = label
        self.writes = 0
        self.on_write = on_write

    def accept_write(self, name, value):
        self.writes += 1
        if not isinstance(value, int):
            raise pb.Error(f"value must be an int, got {value!r}")
        if value > 1000:
            raise pb.Error(f"value must be at most 1000, got {value}")
        if self.on_write is not None:
            self.on_write(name, value)
        return value


class CounterCache(TraitCache):
    """Kernel side: the counter's fields as traits."""

    value = traitlets.Int().tag(to_owner=True)
    label = traitlets.Unicode()


pb.setUnjellyableForClass(Counter, CounterCache)


class Child(pb.Referenceable):
    def remote_name(self):
        """The child's name."""
        return "child"


class Demo(pb.Root):
    """What the notebook tests connect to."""

    def __init__(self, counter: Counter, said=None):
        self.counter = counter
        self.cancelled = asyncio.Event()
        #: Called with a line of text when something worth checking happens here.
        self.said = said or (lambda text: None)
        #: One token per step ``crunch`` may take: the test sets the pace.
        self.go: asyncio.Queue[None] = asyncio.Queue()

    def remote_hello(self, name: str, punctuation: str = "!") -> str:
        """Greet someone."""
        return f"hello {name}{punctuation}"

    def remote_counter(self) -> Counter:
        """The live counter."""
        return self.counter

    def remote_child(self) -> Child:
        """A reference to another object."""
        return Child()

    async def remote_wait(self, seconds: float = 60.0) -> str:
        """Wait, then answer.

        A cancelled wait sets ``cancelled`` on the owner's side.
        """
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "waited"

    def remote_records(self) -> list[dict]:
        """Two records."""
        return [{"name": "ada", "score": 9.5}, {"name": "grace", "score": 9.8}]

    def remote_boom(self) -> None:
        """Always fails."""
        raise pb.Error("kaboom")

    async def remote_ticks(self, every: float = 0.02):
        """Count up from 0, one number every ``every`` seconds, until stopped."""
        n = 0
        try:
            while True:
                yield n
                n += 1
                await asyncio.sleep(every)
        finally:
            self.said(f"ticks closed after {n}")

    def remote_numbers(self, n: int, fail: bool = False):
        """Yield 0 .. n-1, reporting progress, then end (or fail, if ``fail``)."""
        for number in range(n):
            pb.progress(number, n, "counting")
            yield number
        if fail:
            raise pb.Error("the source broke")

    async def remote_crunch(self, steps: int = 3, fail: bool = False) -> str:
        """Report progress, one step per token in ``go``; answer (or fail) after the last."""
        for step in range(steps):
            pb.progress(step, steps, f"step {step + 1} of {steps}")
            await self.go.get()
        if fail:
            raise pb.Error("crunching went wrong")
        return f"crunched {steps}"
