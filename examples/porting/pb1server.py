"""Port of Twisted's pb1server.py: a method that hands out a second remote object."""

import asyncio
import sys

import pbnb as pb


class Two(pb.Referenceable):
    def remote_three(self, value):
        print("Two.three was given", value)


class One(pb.Root):
    def remote_getTwo(self):
        two = Two()
        print("returning a Two called", two)
        return two


async def main(port: int) -> None:
    server = await pb.serve(One(), port=port)
    print("listening on port", server.port, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
