"""Port of Twisted's chatclient.py: log in with a mind the server calls back."""

import asyncio
import sys

import pbnb as pb
from pbnb.cred import UsernamePassword


class Client(pb.Referenceable):
    def remote_print(self, message):
        print(message)

    async def connect(self, port):
        async with await pb.connect("localhost", port) as client:
            # Keep the reference: dropping the last one logs us out on the server.
            self.perspective = await client.login(UsernamePassword("alice", "1234"), client=self)
            print("connected, joining group #NeedAFourth")
            group = await self.perspective.callRemote("joinGroup", "#NeedAFourth")
            print("joined group, now sending a message to all members")
            await group.callRemote("send", "You can call me Al.")


if __name__ == "__main__":
    asyncio.run(Client().connect(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
