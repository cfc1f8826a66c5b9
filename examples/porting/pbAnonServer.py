"""Port of Twisted's pbAnonServer.py: anonymous and password logins side by side."""

import asyncio
import logging
import sys

import pbnb as pb
from pbnb.cred import ANONYMOUS, AllowAnonymousAccess, InMemoryPasswordChecker


class MyPerspective(pb.Avatar):
    """Every login gets one: named after the user, or "Anonymous"."""

    def __init__(self, name):
        self.name = name

    def perspective_foo(self, value):
        print(f"I am {self.name}.  perspective_foo({value}) called on {self}.")


class MyRealm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("MyRealm only handles IPerspective")
        if avatar_id is ANONYMOUS:
            avatar_id = "Anonymous"
        return pb.IPerspective, MyPerspective(avatar_id), lambda: None


async def main(port: int) -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO)  # startLogging(stdout)
    portal = pb.Portal(MyRealm())
    portal.registerChecker(InMemoryPasswordChecker(user1="pass1", user2="pass2"))
    portal.registerChecker(AllowAnonymousAccess())
    server = await pb.serve(portal, port=port)
    print("listening on port", server.port, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
