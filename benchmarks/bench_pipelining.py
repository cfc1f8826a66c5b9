"""A chain of dependent calls across a slow link: promise pipelining against awaiting each link.

Each peer serves a ``Link`` object whose ``next()`` returns another ``Link``;
a chain is ``root.next().next().next().next().depth()``: five calls, each made
on what the one before returned. Between client and server sits a relay (its
own process) that holds every chunk for ``--delay`` seconds each way (20 ms by
default: a round trip of 40 ms, as across a continent).

    .venv/bin/python -m benchmarks.bench_pipelining            # all peers, 7 chains each
    .venv/bin/python -m benchmarks.bench_pipelining --delay 0.05 --chains 5

pbnb runs the chain twice: pipelined (all five calls sent at once) and awaiting
each link, as Twisted PB, Pyro5 and RPyC must. Reported: the median seconds per
chain, and that as round trips (seconds / (2 x delay)). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time

DEPTH = 5
PEERS = ("pbnb_pipelined", "pbnb_awaited", "twisted", "pyro5", "rpyc")


# ------------------------------------------------------------------ relay


async def _relay(target: int, delay: float) -> None:
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each chunk is held for ``delay``, in order: a link with latency, not a slow one.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, data))
        queue.put_nowait((0.0, b""))
        await sender

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(
            pipe(client_reader, server_writer), pipe(server_reader, client_writer), return_exceptions=True
        )

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


# ----------------------------------------------------------------- servers


def _serve(peer: str, port: int, advertised: int) -> None:
    """Serve on ``port``; Pyro5 names ``advertised`` (the relay) in the proxies it returns."""
    if peer.startswith("pbnb"):
        import pbnb as pb

        class Link(pb.Root):
            def __init__(self, depth: int = 0):
                self.level = depth

            def remote_next(self) -> Link:
                return Link(self.level + 1)

            def remote_depth(self) -> int:
                return self.level

        async def main() -> None:
            server = await pb.serve(Link(), host="127.0.0.1", port=port)
            print(f"PORT {server.port}", flush=True)
            await server.serve_forever()

        asyncio.run(main())
    elif peer == "twisted":
        from twisted.internet import reactor
        from twisted.spread import pb as tpb

        class TLink(tpb.Root):
            def __init__(self, depth: int = 0):
                self.level = depth

            def remote_next(self) -> TLink:
                return TLink(self.level + 1)

            def remote_depth(self) -> int:
                return self.level

        listening = reactor.listenTCP(port, tpb.PBServerFactory(TLink()), interface="127.0.0.1")
        print(f"PORT {listening.getHost().port}", flush=True)
        reactor.run()
    elif peer == "pyro5":
        import Pyro5.api

        @Pyro5.api.expose
        class PLink:
            def __init__(self, depth: int = 0):
                self.level = depth

            def next(self) -> PLink:
                link = PLink(self.level + 1)
                self._pyroDaemon.register(link)  # type: ignore[attr-defined]
                return link

            def depth(self) -> int:
                return self.level

        # Proxies it returns name the relay, so their calls cross it too.
        daemon = Pyro5.api.Daemon(host="127.0.0.1", port=port, nathost="127.0.0.1", natport=advertised)
        daemon.register(PLink(), "link")
        print(f"PORT {daemon.sock.getsockname()[1]}", flush=True)
        daemon.requestLoop()
    elif peer == "rpyc":
        import rpyc
        from rpyc.utils.server import ThreadedServer

        class RLink:
            def __init__(self, depth: int = 0):
                self.level = depth

            def exposed_next(self) -> RLink:
                return RLink(self.level + 1)

            def exposed_depth(self) -> int:
                return self.level

        class LinkService(rpyc.Service):
            def exposed_next(self) -> RLink:
                return RLink(1)

        server = ThreadedServer(LinkService, hostname="127.0.0.1", port=port)
        print(f"PORT {server.port}", flush=True)
        server.start()


# ----------------------------------------------------------------- clients


def _measure(peer: str, port: int, chains: int) -> list[float]:
    if peer.startswith("pbnb"):
        return asyncio.run(_pbnb_chains(port, chains, pipelined=peer == "pbnb_pipelined"))
    if peer == "twisted":
        return _twisted_chains(port, chains)
    times = []
    if peer == "pyro5":
        import Pyro5.api

        root = Pyro5.api.Proxy(f"PYRO:link@127.0.0.1:{port}")
        root.depth()  # connected before the timed chains
        for _ in range(chains):
            start = time.perf_counter()
            link = root
            for _ in range(DEPTH - 1):
                link = link.next()
            assert link.depth() == DEPTH - 1
            times.append(time.perf_counter() - start)
    else:
        import rpyc

        conn = rpyc.connect("127.0.0.1", port)
        for _ in range(chains):
            start = time.perf_counter()
            link = conn.root
            for _ in range(DEPTH - 1):
                link = link.next()
            assert link.depth() == DEPTH - 1
            times.append(time.perf_counter() - start)
    return times


async def _pbnb_chains(port: int, chains: int, *, pipelined: bool) -> list[float]:
    import pbnb as pb

    times = []
    async with await pb.connect("127.0.0.1", port) as client:
        root = await client.getRootObject()
        for _ in range(chains):
            start = time.perf_counter()
            if pipelined:
                link = root.callRemote("next")
                for _ in range(DEPTH - 2):
                    link = link.callRemote("next")
                depth = await link.callRemote("depth")
            else:
                link = root
                for _ in range(DEPTH - 1):
                    link = await link.callRemote("next")
                depth = await link.callRemote("depth")
            assert depth == DEPTH - 1
            times.append(time.perf_counter() - start)
    return times


def _twisted_chains(port: int, chains: int) -> list[float]:
    from twisted.internet import defer, reactor
    from twisted.spread import pb as tpb

    times: list[float] = []

    @defer.inlineCallbacks
    def run():  # type: ignore[no-untyped-def]
        factory = tpb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory)
        root = yield factory.getRootObject()
        for _ in range(chains):
            start = time.perf_counter()
            link = root
            for _ in range(DEPTH - 1):
                link = yield link.callRemote("next")
            depth = yield link.callRemote("depth")
            assert depth == DEPTH - 1
            times.append(time.perf_counter() - start)
        reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()
    return times


# ------------------------------------------------------------------- main


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(*args: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_pipelining", *args], stdout=subprocess.PIPE, text=True
    )
    line = process.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"{args} did not start: {line!r}")
    return process, int(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.02, help="seconds added each way (default 0.02)")
    parser.add_argument("--chains", type=int, default=7, help="chains timed per peer (default 7)")
    parser.add_argument("--peers", nargs="*", default=PEERS, choices=PEERS)
    parser.add_argument("role", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.role:
        role, peer, *rest = options.role
        if role == "relay":
            asyncio.run(_relay(int(peer), float(rest[0])))
        elif role == "serve":
            _serve(peer, int(rest[0]), int(rest[1]))
        else:
            times = _measure(peer, int(rest[0]), int(rest[1]))
            print(" ".join(f"{t:.6f}" for t in times), flush=True)
        return
    round_trip = 2 * options.delay
    each_way = f"{options.delay * 1000:.0f} ms each way"
    print(f"a chain of {DEPTH} dependent calls, {each_way}; median of {options.chains}")
    print(f"{'peer':<16} {'ms per chain':>12} {'round trips':>12}")
    medians = {}
    for peer in options.peers:
        port = _free_port()
        relay, relay_port = _start("relay", str(port), str(options.delay))
        try:
            server, _ = _start("serve", peer, str(port), str(relay_port))
        except (RuntimeError, OSError) as exc:
            print(f"{peer:<16} skipped: {exc}")
            relay.kill()
            continue
        try:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_pipelining",
                    "measure",
                    peer,
                    str(relay_port),
                    str(options.chains + 1),
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if out.returncode:
                print(f"{peer:<16} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            times = [float(t) for t in out.stdout.split()][1:]  # the first chain warms up
            medians[peer] = statistics.median(times)
            print(f"{peer:<16} {medians[peer] * 1000:12.1f} {medians[peer] / round_trip:12.2f}")
        finally:
            for process in (relay, server):
                process.kill()
                process.wait()
    if "pbnb_pipelined" in medians and "pbnb_awaited" in medians:
        speedup = medians["pbnb_awaited"] / medians["pbnb_pipelined"]
        print(f"pipelined is {speedup:.2f}x faster than awaiting each link")


if __name__ == "__main__":
    main()
