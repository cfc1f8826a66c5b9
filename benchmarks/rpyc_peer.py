"""RPyC with a plain Service.

RPyC passes lists and dicts by reference (netrefs), so an echo of the dict
list would send nothing but a proxy. To make the rows travel, as they do for
every other peer, the server copies them in with ``obtain`` and the client
copies the answer back with ``obtain`` (RPyC's documented way to get a copy).
"""

from __future__ import annotations

import time

import rpyc
from rpyc.utils.classic import obtain
from rpyc.utils.server import ThreadedServer

from .harness import announce
from .workloads import SMALL, WINDOW

DRIVER = "sync"
_CONFIG = {"allow_pickle": True, "allow_public_attrs": True}


class EchoService(rpyc.Service):
    def exposed_echo(self, value: object) -> object:
        return value

    def exposed_echo_copy(self, value: object) -> object:
        return obtain(value)


def serve() -> None:
    server = ThreadedServer(EchoService, hostname="127.0.0.1", port=0, protocol_config=_CONFIG)
    announce(server.port)
    server.start()


class Client:
    def connect(self, port: int) -> None:
        self._conn = rpyc.connect("127.0.0.1", port, config=_CONFIG)

    def sequential(self, count: int) -> float:
        echo = self._conn.root.echo
        start = time.perf_counter()
        for _ in range(count):
            echo(SMALL)
        return time.perf_counter() - start

    def pipelined(self, batches: int) -> float:
        echo = rpyc.async_(self._conn.root.echo)
        start = time.perf_counter()
        for _ in range(batches):
            for result in [echo(SMALL) for _ in range(WINDOW)]:
                result.wait()
        return time.perf_counter() - start

    def echoes(self, value: object, count: int) -> tuple[float, object]:
        # Bytes travel by value; containers would be netrefs, so both sides copy them.
        echo = self._conn.root.echo if isinstance(value, bytes) else self._conn.root.echo_copy
        start = time.perf_counter()
        for _ in range(count):
            result = obtain(echo(value))
        return time.perf_counter() - start, result
