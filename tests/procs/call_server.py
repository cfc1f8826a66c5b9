"""A pbnb client in its own process, for tests: ``call_server.py PORT MODE``.

``values``: echo values that need identity and exact types, answer a callback,
print ``OK <check>`` per check and ``DONE``. ``hang``: register a listener whose
``hear`` never returns, print ``HANGING`` when the server's call arrives, and wait
to be killed.
"""

from __future__ import annotations

import asyncio
import sys

import pbnb as pb


def announce(line: str) -> None:
    print(line, flush=True)


class Listener(pb.Referenceable):
    def remote_hear(self, value):
        return ("heard", value)


class Hanging(pb.Referenceable):
    async def remote_hear(self, value):
        announce("HANGING")
        await asyncio.Event().wait()


async def values(root: pb.RemoteReference) -> None:
    shared = [2**100]
    loop: list = []
    loop.append(loop)
    got = await root.callRemote("echo", {"pair": (shared, shared), "loop": loop, frozenset({1}): {2, 3}})
    if got["pair"][0] is got["pair"][1] and got["pair"][0] == [2**100] and type(got["pair"]) is tuple:
        announce("OK identity")
    if got["loop"][0] is got["loop"] and got[frozenset({1})] == {2, 3}:
        announce("OK cycles")
    if await root.callRemote("register", Listener()) == ("heard", "welcome"):
        announce("OK callback")


async def main(port: int, mode: str) -> None:
    async with await pb.connect("127.0.0.1", port) as client:
        root = await client.getRootObject()
        if mode == "values":
            await values(root)
            announce("DONE")
        else:
            await root.callRemote("register_hanging", Hanging())
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
