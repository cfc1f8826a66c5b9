"""Port of Twisted's pb2client.py: hand a server's reference back to it."""

import asyncio
import sys

import pbnb as pb


async def main(port: int) -> None:
    async with await pb.connect("localhost", port) as client:
        one = await client.getRootObject()
        print("got one object:", one)
        print("asking it to getTwo")
        two = await one.callRemote("getTwo")
        print("got two object:", two)
        print("giving it back to one")
        print("one is", one)
        await one.callRemote("checkTwo", two)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
