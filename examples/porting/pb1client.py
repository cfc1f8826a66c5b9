"""Port of Twisted's pb1client.py: follow a reference the server returns."""

import asyncio
import sys

import pbnb as pb


async def main(port: int) -> None:
    try:
        client = await pb.connect("localhost", port)
    except OSError as reason:
        print("error getting first object", reason)
        return
    async with client:
        one = await client.getRootObject()
        print("got first object:", one)
        print("asking it to getTwo")
        two = await one.callRemote("getTwo")
        print("got second object:", two)
        print("telling it to do three(12)")
        await two.callRemote("three", 12)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
