"""Progress of a running call: the report a caller sees, and the sender's rate limit.

A remote method may report progress as often as it likes (``pb.progress``
in a tight loop); the callee sends at most one PROGRESS frame per
``INTERVAL`` seconds for each call, always the latest report, and sends a
report held back that way once the interval is over, unless the answer has
gone first (it supersedes every report). Nothing here reads a clock: the
driver passes ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from .failure import clip

#: The fewest seconds between two PROGRESS frames of one call.
INTERVAL = 0.05
#: The longest message a report carries, in UTF-8 bytes (longer ones are clipped).
MAX_MESSAGE = 1024
# A done or total beyond what msgpack's integers hold travels as a float.
_INT_RANGE = range(-(2**63), 2**64)


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress report of a running call: ``done`` out of ``total`` (None: unknown), and what it does."""

    done: float
    total: float | None = None
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        """``done / total`` within 0..1, or None when the total is unknown (or not positive)."""
        if self.total is None or self.total <= 0:
            return None
        return min(1.0, max(0.0, self.done / self.total))


def checked_number(value: object, name: str) -> float:
    """``value`` as a finite int or float fit for the wire; TypeError or ValueError if it is not one."""
    kind = type(value)
    if kind is int:
        return value if value in _INT_RANGE else float(value)  # type: ignore[return-value,arg-type]
    if kind is not float:
        if kind is bool or not isinstance(value, Real):
            raise TypeError(f"progress {name} must be a real number, got {kind.__name__}")
        value = float(value)  # numpy's numbers, Fraction, Decimal-free Reals
    if not math.isfinite(value):  # type: ignore[arg-type]
        raise ValueError(f"progress {name} must be finite, got {value!r}")
    return value  # type: ignore[return-value]


def checked_message(message: object) -> str | None:
    """``message`` clipped to ``MAX_MESSAGE`` bytes; TypeError unless it is a str or None."""
    if message is None:
        return None
    if type(message) is not str:
        raise TypeError(f"progress message must be a str or None, got {type(message).__name__}")
    return clip(message, MAX_MESSAGE) if len(message) > MAX_MESSAGE // 4 else message


def received(done: object, total: object, message: object) -> Progress:
    """The Progress a PROGRESS frame's fields make; ValueError naming the bad field (a protocol error)."""
    if type(done) not in (int, float) or not math.isfinite(done):  # type: ignore[arg-type]
        raise ValueError(f"PROGRESS done must be a finite number, got {done!r:.40}")
    if total is not None and (type(total) not in (int, float) or not math.isfinite(total)):  # type: ignore[arg-type]
        raise ValueError(f"PROGRESS total must be a finite number or nil, got {total!r:.40}")
    if message is not None and type(message) is not str:
        raise ValueError(f"PROGRESS message must be a string or nil, got {type(message).__name__}")
    return Progress(done, total, message)  # type: ignore[arg-type]


class Throttle:
    """The sender's record of one running call's progress: the latest report and when it may go.

    The reporter stores each report in ``latest`` (one tuple, so a report
    from another thread is never seen half-written) and, unless ``armed``,
    calls ``arm`` to learn when the driver must ``take`` it. That is all a
    report costs between frames. A race between threads costs at most one
    extra frame.
    """

    __slots__ = ("armed", "latest", "next_at")

    def __init__(self) -> None:
        #: The report not sent yet, as ``(done, total, message)``; None once taken.
        self.latest: tuple[float, float | None, str | None] | None = None
        #: Whether the driver will take the latest report (now, or when its timer fires).
        self.armed = False
        self.next_at = -math.inf  # the clock time at which the next frame may go

    def arm(self, now: float) -> float:
        """Plan the sending of ``latest``: in how many seconds to ``take`` it (0.0: now)."""
        self.armed = True
        return max(0.0, self.next_at - now)

    def take(self, now: float) -> Progress | None:
        """The report to send now (None if there is none), starting the next interval."""
        self.armed = False
        latest, self.latest = self.latest, None
        if latest is None:
            return None
        self.next_at = now + INTERVAL
        return Progress(*latest)
