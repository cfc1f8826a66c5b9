"""A scoreboard every broker process serving this module shares through Redis.

From the repository root (docs/scaling.md explains each line)::

    redis-server --port 6379 --save "" --appendonly yes --daemonize yes
    for port in 8801 8802 8803; do
        python -m pbnb serve examples.scaling.scoreboard:root --port $port \\
            --backplane redis://127.0.0.1:6379/0 &
    done

A client of any of the three sees every change made through any other.
"""

from __future__ import annotations

import os

import pbnb as pb
from pbnb.backplane import SharedCacheable, share


class Scoreboard(SharedCacheable):
    """The score, and a comment any spectator may write."""

    observed_fields = ("home", "away", "comment")
    writable_fields = ("comment",)

    def __init__(self) -> None:
        self.home = 0
        self.away = 0
        self.comment = ""

    def accept_write(self, name: str, value: object) -> object:
        if not isinstance(value, str) or len(value) > 200:
            raise pb.Error("a comment is a str of at most 200 characters")
        return value


class ScoreboardCopy(pb.ObservedRemoteCache):
    """What a client holds: follows the shared scoreboard."""

    observed_fields = Scoreboard.observed_fields


pb.setUnjellyableForClass(Scoreboard, ScoreboardCopy)

#: Shared under the name "scoreboard" by every process started with --backplane.
board = share(Scoreboard(), "scoreboard")


class Stadium(pb.Root):
    def remote_board(self) -> Scoreboard:
        """The live scoreboard."""
        return board

    def remote_score(self, home: int, away: int) -> None:
        """The referee sets the score (absolute values: no read-modify-write across processes)."""
        board.update(home=home, away=away)

    def remote_pid(self) -> int:
        """Which broker process answered."""
        return os.getpid()


root = Stadium()
