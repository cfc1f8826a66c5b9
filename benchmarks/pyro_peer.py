"""Pyro5 with its msgpack serializer (its fastest; the default, serpent, sends bytes as base64).

Pyro5 proxies run one call at a time and have no pipelining (Pyro4's async
proxies are gone), so the pipelined workload is reported as not supported.
"""

from __future__ import annotations

import time

import Pyro5.api

from .harness import announce
from .workloads import SMALL

DRIVER = "sync"
#: Its msgpack serializer packs tuples as arrays, which come back as lists.
CARRIES_TUPLES = False
Pyro5.api.config.SERIALIZER = "msgpack"


@Pyro5.api.expose
class Echo:
    def echo(self, value: object) -> object:
        return value


def serve() -> None:
    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    daemon.register(Echo(), "echo")
    announce(daemon.sock.getsockname()[1])
    daemon.requestLoop()


class Client:
    def connect(self, port: int) -> None:
        self._proxy = Pyro5.api.Proxy(f"PYRO:echo@127.0.0.1:{port}")
        self._proxy.echo(None)  # connects now, outside the timed calls

    def sequential(self, count: int) -> float:
        echo = self._proxy.echo
        start = time.perf_counter()
        for _ in range(count):
            echo(SMALL)
        return time.perf_counter() - start

    def pipelined(self, batches: int) -> float:
        raise NotImplementedError("Pyro5 proxies cannot keep several calls in flight")

    def echoes(self, value: object, count: int) -> tuple[float, object]:
        echo = self._proxy.echo
        start = time.perf_counter()
        for _ in range(count):
            result = echo(value)
        return time.perf_counter() - start, result
