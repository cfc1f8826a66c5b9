"""Port of Twisted's pb3client.py: offer the server an object of ours to call."""

import asyncio
import sys

import pbnb as pb


class Two(pb.Referenceable):
    def remote_print(self, value):
        print("Two.print() called with", value)


async def main(port: int) -> None:
    two = Two()
    async with await pb.connect("localhost", port) as client:
        one = await client.getRootObject()
        print("got One:", one)
        print("giving it our two")
        await one.callRemote("takeTwo", two)  # answers once the server has called us back


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
