"""The objects the demo broker serves (``python -m pbnb demo``, also started by Binder).

Both sides import this module: the server for the objects, the client for the
``RemoteCopy`` and ``RemoteCache`` classes it registers, which is how PB
programs share their copy allow-list. What is on offer:

* ``DemoRoot``: plain and ``async`` methods, callbacks into the caller
  (``countdown``), copies (``records``) and a copy nobody allowed (``gadget``),
  a stream of samples (``wave``) and a slow call that reports its progress
  (``crunch``).
* ``Record``: a copyable record, arriving as ``RemoteRecord``.
* ``Ticker``: a live Cacheable that changes by itself while someone watches;
  its copy, ``RemoteTicker``, is a ``TraitCache`` that displays as live widgets.
* ``Counter``: a Cacheable shared by every client; ``increment`` changes it, and
  so does setting ``value`` on any copy (a ``WritableCacheable``); every copy
  follows.
* A chat behind a login: ``client.login(UsernamePassword("alice", "wonderland"),
  mind)`` gives a ``Chatter`` avatar; every mind gets ``remote_message(sender,
  text)`` pushed to it. The users are in ``DEMO_USERS``.

``demo_address()`` finds a demo broker for a notebook: the one named by the
``PBNB_DEMO`` environment variable (``host:port``, set by Binder), or a fresh one
started in a subprocess.
"""

from __future__ import annotations

import atexit
import os
import re
import select
import subprocess
import sys

import traitlets

import pbnb as pb
from pbnb.demo_service import (
    DEMO_USERS,
    ChatRoom,
    Chatter,
    Counter,
    DemoRoot,
    DemoWorld,
    Gadget,
    Record,
    RemoteRecord,
    Ticker,
    make_demo_service,
)
from pbnb.notebook import TraitCache

__all__ = [
    "DEMO_USERS",
    "ChatRoom",
    "Chatter",
    "Counter",
    "DemoRoot",
    "DemoWorld",
    "Gadget",
    "Record",
    "RemoteCounter",
    "RemoteRecord",
    "RemoteTicker",
    "Ticker",
    "demo_address",
    "make_demo_service",
]


class RemoteTicker(TraitCache):
    """A watcher's copy of the ``Ticker``: ``count`` and ``value`` are traits that follow the owner."""

    count = traitlets.Int()
    value = traitlets.Float()


pb.setUnjellyableForClass(Ticker, RemoteTicker)


class RemoteCounter(TraitCache):
    """A client's copy of the shared ``Counter``; setting ``value`` here sets it everywhere."""

    value = traitlets.Int().tag(to_owner=True)
    last_by = traitlets.Unicode()


pb.setUnjellyableForClass(Counter, RemoteCounter)


_ADDRESS = re.compile(r"on (\S+):(\d+)")
_started: list[subprocess.Popen] = []


def demo_address(timeout: float = 60.0) -> tuple[str, int]:
    """Where a demo broker listens: ``$PBNB_DEMO`` if set, else a subprocess started now.

    The subprocess is stopped when this Python process exits.
    """
    configured = os.environ.get("PBNB_DEMO")
    if configured:
        host, _, port = configured.rpartition(":")
        return host or "127.0.0.1", int(port)
    process = subprocess.Popen(
        [sys.executable, "-m", "pbnb", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # its connection log would land in the notebook's terminal
        text=True,
    )
    _started.append(process)
    # A broker that hangs before printing its address must not hang the notebook too.
    stdout = process.stdout
    assert stdout is not None  # stdout=PIPE
    ready, _, _ = select.select([stdout], [], [], timeout)
    line = stdout.readline() if ready else ""
    match = _ADDRESS.search(line)
    if match is None:
        process.kill()
        raise RuntimeError(f"the demo broker did not start within {timeout}s: {line!r}")
    return match[1], int(match[2])


@atexit.register
def _stop_started() -> None:
    for process in _started:
        process.terminate()
        process.wait(timeout=10)
