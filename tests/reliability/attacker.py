"""``python -m reliability.attacker CASE PORT N``: an attacking client in its own process.

A client in the server's process would take its own turns of the server's
event loop (making a thousand calls, encoding 80 MiB) and the bystander would
wait for them too: a real attacker cannot do that. The result is printed as
one JSON line.

``signature PORT N``: N calls of ``add`` with one argument of two, all at once;
prints how many failed with TypeError. ``big PORT SIZE``: fetches a SIZE-byte
answer and sends it back as an argument; prints whether both arrived whole.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pbnb as pb


async def signature(port: int, count: int) -> dict[str, Any]:
    async with await pb.connect("127.0.0.1", port) as client:
        root = await client.getRootObject()
        results = await asyncio.gather(
            *(root.callRemote("add", 1) for _ in range(count)), return_exceptions=True
        )
    refused = sum(isinstance(result, (pb.RemoteError, TypeError)) for result in results)
    return {"refused": refused}


async def big(port: int, size: int) -> dict[str, Any]:
    limits = {"max_string_len": 2 * size}
    async with await pb.connect("127.0.0.1", port, **limits) as client:
        root = await client.getRootObject()
        blob = await root.callRemote("blob", size)
        length = await root.callRemote("size", blob)
        return {"ok": len(blob) == size and length == size and client.connected}


async def main(case: str, port: int, n: int) -> None:
    result = await {"signature": signature, "big": big}[case](port, n)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
