"""A pbnb server in its own process, for tests.

Prints ``PORT <n>`` once listening, and ``HANGING`` when a call to ``hang``
has started, so the test can kill the process mid-call.
"""

from __future__ import annotations

import asyncio
import os

import pbnb as pb


def announce(line: str) -> None:
    print(line, flush=True)


class Remote(pb.Root):
    def remote_echo(self, value):
        return value

    def remote_pid(self) -> int:
        return os.getpid()

    async def remote_call_back(self, listener, value):
        return await listener.callRemote("hear", value)

    async def remote_hang(self):
        announce("HANGING")
        await asyncio.Event().wait()


async def main() -> None:
    server = await pb.serve(Remote(), host="127.0.0.1", port=0)
    announce(f"PORT {server.port}")
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
