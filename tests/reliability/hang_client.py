"""``python -m reliability.hang_client PORT``: a client left hanging in a call, to be killed.

It starts a call to ``hang``, lets the server call it back once (so the server
holds one of its references), prints ``calling`` and waits for the answer that
never comes.
"""

from __future__ import annotations

import asyncio
import sys

import pbnb as pb

from .objects import Doubler


async def main(port: int) -> None:
    client = await pb.connect("127.0.0.1", port)
    root = await client.getRootObject()
    call = root.callRemote("hang")
    await root.callRemote("callback", Doubler(), 1)
    print("calling", flush=True)
    await call


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
