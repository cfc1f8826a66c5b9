"""Port of Twisted's chatserver.py: avatars, minds and a Viewable group."""

import asyncio
import sys

import pbnb as pb
from pbnb.cred import InMemoryPasswordChecker


class ChatServer:
    def __init__(self):
        self.groups = {}  # by name

    def joinGroup(self, groupname, user, allowMattress):
        if groupname not in self.groups:
            self.groups[groupname] = Group(groupname, allowMattress)
        self.groups[groupname].addUser(user)
        return self.groups[groupname]


class ChatRealm:
    def __init__(self, server):
        self.server = server

    def requestAvatar(self, avatar_id, mind, *interfaces):
        assert pb.IPerspective in interfaces
        avatar = User(avatar_id, self.server)
        avatar.attached(mind)
        return pb.IPerspective, avatar, lambda: avatar.detached(mind)


class User(pb.Avatar):
    def __init__(self, name, server):
        self.name = name
        self.server = server

    def attached(self, mind):
        self.remote = mind

    def detached(self, mind):
        self.remote = None

    def perspective_joinGroup(self, groupname, allowMattress=True):
        return self.server.joinGroup(groupname, self, allowMattress)

    async def send(self, message):
        await self.remote.callRemote("print", message)


class Group(pb.Viewable):
    def __init__(self, groupname, allowMattress):
        self.name = groupname
        self.allowMattress = allowMattress
        self.users = []

    def addUser(self, user):
        self.users.append(user)

    async def view_send(self, from_user, message):
        if not self.allowMattress and "mattress" in message:
            raise ValueError("Don't say that word")
        online = [user for user in self.users if user.remote is not None]
        await asyncio.gather(*(user.send(f"<{from_user.name}> says: {message}") for user in online))


checker = InMemoryPasswordChecker(alice="1234", bob="secret", carol="fido")
portal = pb.Portal(ChatRealm(ChatServer()), [checker])


async def main(port: int) -> None:
    server = await pb.serve(portal, port=port)
    print("listening on port", server.port, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
