"""Port of Twisted's pb2server.py: a reference sent back arrives as the original object."""

import asyncio
import sys

import pbnb as pb


class Two(pb.Referenceable):
    def remote_print(self, value):
        print("two.print was given", value)


class One(pb.Root):
    def __init__(self, two):
        self.two = two

    def remote_getTwo(self):
        print("One.getTwo(), returning my two called", self.two)
        return self.two

    def remote_checkTwo(self, their_two):
        print("One.checkTwo(): comparing my two", self.two)
        print("One.checkTwo(): against your two", their_two)
        if their_two is self.two:
            print("One.checkTwo(): our twos are the same")


async def main(port: int) -> None:
    server = await pb.serve(One(Two()), port=port)
    print("listening on port", server.port, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
