"""A chat server on pbnb: log in, join rooms, and get every message pushed to you.

Each client logs in with a user name and password (checked by SCRAM against a
password file) and passes a *mind*: its own object the server calls to push
messages. A room is a ``Viewable``, so when a client speaks through it the
room knows who is speaking without trusting anything the client says.

    python -m pbnb passwd users.txt alice          # once per user
    python examples/chat/server.py --users users.txt --port 8790

Add ``--cert server.pem --key server.key`` to serve over TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
from typing import Any

import pbnb as pb
from pbnb.cred import FilePasswordChecker, IPerspective, Portal


class Room(pb.Viewable):
    """A chat room; ``view_`` methods receive the avatar of the member calling."""

    def __init__(self, name: str):
        self.name = name
        self.members: dict[str, Chatter] = {}

    def view_say(self, speaker: Chatter, text: str) -> int:
        """Send ``text`` to everyone in the room; return how many got it."""
        if speaker.name not in self.members:
            raise pb.Error(f"join {self.name} before speaking in it")
        self.broadcast(speaker.name, str(text))
        return len(self.members)

    def view_who(self, speaker: Chatter) -> list[str]:
        """The members of the room."""
        return sorted(self.members)

    def view_leave(self, speaker: Chatter) -> None:
        """Leave the room."""
        self.remove(speaker)

    def add(self, chatter: Chatter) -> None:
        self.members[chatter.name] = chatter
        self.broadcast("*", f"{chatter.name} joined")

    def remove(self, chatter: Chatter) -> None:
        if self.members.get(chatter.name) is chatter:
            del self.members[chatter.name]
            self.broadcast("*", f"{chatter.name} left")

    def broadcast(self, sender: str, text: str) -> None:
        for member in list(self.members.values()):
            member.tell(self.name, sender, text)


class Chatter(pb.Avatar):
    """One logged-in user: ``perspective_`` methods run on their behalf."""

    def __init__(self, name: str, mind: Any, lobby: dict[str, Room]):
        self.name = name
        self.mind = mind
        self.rooms = lobby
        self.joined: set[Room] = set()

    def perspective_join(self, room_name: str) -> Room:
        """Join (or open) ``room_name``; returns the room to speak through."""
        room = self.rooms.get(room_name) or self.rooms.setdefault(room_name, Room(room_name))
        if self.name in room.members and room.members[self.name] is not self:
            raise pb.Error(f"{self.name} is already in {room_name} from another session")
        self.joined.add(room)
        room.add(self)
        return room

    def perspective_rooms(self) -> list[str]:
        """The open rooms."""
        return sorted(self.rooms)

    def tell(self, room: str, sender: str, text: str) -> None:
        # Fire and forget: one slow or vanished client must not hold up the room.
        if self.mind is not None and self.mind.connected:
            self.mind.callRemoteNoAnswer("receive", room, sender, text)

    def logout(self) -> None:
        for room in list(self.joined):
            room.remove(self)
        self.joined.clear()
        self.mind = None


class ChatRealm:
    """Makes a Chatter for each login; its logout leaves every room."""

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}

    def requestAvatar(self, avatar_id: str, mind: Any, *interfaces: type) -> tuple:
        if IPerspective not in interfaces:
            raise NotImplementedError("the chat only hands out perspectives")
        chatter = Chatter(avatar_id, mind, self.rooms)
        return IPerspective, chatter, chatter.logout


def make_portal(users_file: str) -> Portal:
    """The chat's portal: users from a ``python -m pbnb passwd`` file."""
    return Portal(ChatRealm(), [FilePasswordChecker(users_file)])


async def serve_chat(users_file: str, host: str, port: int, tls: ssl.SSLContext | None) -> None:
    server = await pb.serve(make_portal(users_file), host=host, port=port, ssl=tls)
    print(f"chat: serving on {server.host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", required=True, help="password file made with python -m pbnb passwd")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790, help="0 picks a free port")
    parser.add_argument("--cert", help="PEM certificate chain, to serve over TLS")
    parser.add_argument("--key", help="PEM private key of --cert")
    args = parser.parse_args()
    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve_chat(args.users, args.host, args.port, tls))


if __name__ == "__main__":
    main()
