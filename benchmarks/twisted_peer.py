"""Twisted Perspective Broker on its default reactor: the original pbnb rebuilds."""

from __future__ import annotations

import time

from twisted.internet import defer, reactor
from twisted.spread import pb

from .harness import announce
from .workloads import SMALL, WINDOW

DRIVER = "twisted"


class EchoRoot(pb.Root):
    def remote_echo(self, value: object) -> object:
        return value


def serve() -> None:
    port = reactor.listenTCP(0, pb.PBServerFactory(EchoRoot()), interface="127.0.0.1")
    announce(port.getHost().port)
    reactor.run()


class Client:
    @defer.inlineCallbacks
    def connect(self, port: int):
        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory)
        self._root = yield factory.getRootObject()

    @defer.inlineCallbacks
    def sequential(self, count: int):
        start = time.perf_counter()
        for _ in range(count):
            yield self._root.callRemote("echo", SMALL)
        return time.perf_counter() - start

    @defer.inlineCallbacks
    def pipelined(self, batches: int):
        start = time.perf_counter()
        for _ in range(batches):
            yield defer.gatherResults([self._root.callRemote("echo", SMALL) for _ in range(WINDOW)])
        return time.perf_counter() - start

    @defer.inlineCallbacks
    def echoes(self, value: object, count: int):
        start = time.perf_counter()
        for _ in range(count):
            result = yield self._root.callRemote("echo", value)
        return time.perf_counter() - start, result
