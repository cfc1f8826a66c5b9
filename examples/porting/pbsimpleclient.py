"""Port of Twisted's pbsimpleclient.py (docs/core/examples): the callback chain becomes straight-line code."""

import asyncio
import sys

import pbnb as pb


async def main(port: int) -> None:
    async with await pb.connect("localhost", port) as client:
        echoer = await client.getRootObject()
        try:
            echoed = await echoer.callRemote("echo", "hello network")
        except pb.PBError as reason:
            print("error:", reason)
        else:
            print("server echoed:", echoed)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8789))
