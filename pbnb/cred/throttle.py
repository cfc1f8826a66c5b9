"""Slowing down password guessing that is spread over many connections.

``Portal(max_failures=)`` drops one connection after a few failed logins, but a
guesser can simply reconnect. A ``LoginThrottle`` counts failed logins per user
name and per client address across all connections of a portal; once either
count reaches its limit within ``window`` seconds, further logins for that name
or from that address are refused at once with ``LoginThrottled``, saying when
to try again. Every name counts, known or not, so the throttle does not tell
which users exist.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from .errors import LoginThrottled


class _Counts:
    """Failure times per key within a window, for at most ``capacity`` keys (oldest forgotten)."""

    def __init__(self, limit: int, window: float, capacity: int):
        self.limit = limit
        self.window = window
        self.capacity = capacity
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again (0 if it may now)."""
        times = self._times.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._times[key]
            return 0.0
        return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def add(self, key: str, now: float) -> None:
        times = self._times.pop(key, None) or deque(maxlen=self.limit)
        times.append(now)
        self._times[key] = times  # the most recently failed key goes last
        while len(self._times) > self.capacity:
            self._times.popitem(last=False)


class LoginThrottle:
    """Refuse logins for a user name or from an address after too many recent failures.

    ``per_user`` and ``per_address`` failures within ``window`` seconds trip it
    (``None`` turns that count off). At most ``capacity`` names and addresses
    are remembered each, the least recently failed forgotten first, so the
    throttle's memory is bounded whatever a guesser sends.
    """

    def __init__(
        self,
        per_user: int | None = 10,
        per_address: int | None = 30,
        window: float = 60.0,
        *,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        for name, value in (("per_user", per_user), ("per_address", per_address)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}")
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self._users = _Counts(per_user, window, capacity) if per_user else None
        self._addresses = _Counts(per_address, window, capacity) if per_address else None
        self._clock = clock

    def check(self, username: str | None, address: str) -> None:
        """Raise ``LoginThrottled`` if ``username`` or ``address`` must wait before trying again."""
        now = self._clock()
        if self._addresses is not None and (wait := self._addresses.wait(address, now)):
            raise LoginThrottled(f"too many failed logins from {address}; try again in {math.ceil(wait)} s")
        if self._users is not None and username is not None and (wait := self._users.wait(username, now)):
            raise LoginThrottled(f"too many failed logins as this user; try again in {math.ceil(wait)} s")

    def failed(self, username: str | None, address: str) -> None:
        """Count one failed login."""
        now = self._clock()
        if self._addresses is not None:
            self._addresses.add(address, now)
        if self._users is not None and username is not None:
            self._users.add(username, now)
