"""Port of Twisted's pb3server.py: the server calls back an object the client sent."""

import asyncio
import sys

import pbnb as pb


class One(pb.Root):
    async def remote_takeTwo(self, two):
        print("received a Two called", two)
        print("telling it to print(12)")
        await two.callRemote("print", 12)


async def main(port: int) -> None:
    server = await pb.serve(One(), port=port)
    print("listening on port", server.port, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
