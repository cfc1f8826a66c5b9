"""Port of Twisted's pb5server.py and pb6server.py: each user logs in to an avatar of their own."""

import asyncio
import sys

import pbnb as pb
from pbnb.cred import InMemoryPasswordChecker


class MyPerspective(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_foo(self, value):
        print("I am", self.name, "perspective_foo(", value, ") called on", self)


class MyRealm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("only PB logins here")
        return pb.IPerspective, MyPerspective(avatar_id), lambda: None


portal = pb.Portal(MyRealm())
portal.registerChecker(InMemoryPasswordChecker(user1="pass1", user2="pass2"))


async def main(port: int) -> None:
    server = await pb.serve(portal, port=port)
    print("listening on port", server.port, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
