"""A chat client: lines you type go to the room, messages from others are printed.

    PBNB_CHAT_PASSWORD=... python examples/chat/client.py alice --room lobby --port 8790

Without PBNB_CHAT_PASSWORD the password is asked for. Add ``--ca ca.pem`` to
connect over TLS, trusting that certificate authority. End with Ctrl-D.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import ssl
import sys
from collections.abc import Callable
from typing import Any

import pbnb as pb
from pbnb.cred import UsernamePassword


class ChatWindow(pb.Referenceable):
    """The client's mind: the server pushes every message here."""

    def __init__(self, show: Callable[[str], Any] = print):
        self.show = show

    def remote_receive(self, room: str, sender: str, text: str) -> None:
        self.show(f"[{room}] {sender}: {text}")


class ChatClient:
    """A logged-in chat user in one room."""

    def __init__(self, client: pb.Client, avatar: pb.RemoteReference, room: pb.RemoteReference):
        self.client, self.avatar, self.room = client, avatar, room

    @classmethod
    async def join(
        cls,
        host: str,
        port: int,
        user: str,
        password: str,
        room: str,
        window: ChatWindow,
        tls: ssl.SSLContext | None = None,
    ) -> ChatClient:
        client = await pb.connect(host, port, ssl=tls)
        try:
            avatar = await client.login(UsernamePassword(user, password), window)
            return cls(client, avatar, await avatar.callRemote("join", room))
        except BaseException:
            await client.close()
            raise

    async def say(self, text: str) -> int:
        return await self.room.callRemote("say", text)

    async def who(self) -> list[str]:
        return await self.room.callRemote("who")

    async def close(self) -> None:
        await self.client.close()


async def _lines() -> Any:
    """Lines from standard input, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        yield line.rstrip("\n")


async def run(args: argparse.Namespace, password: str) -> int:
    tls = ssl.create_default_context(cafile=args.ca) if args.ca else None
    try:
        chat = await ChatClient.join(
            args.host,
            args.port,
            args.user,
            password,
            args.room,
            ChatWindow(lambda t: print(t, flush=True)),
            tls,
        )
    except (OSError, ValueError, pb.PBError, pb.Error) as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return 1
    print(f"chat: joined {args.room} as {args.user}", flush=True)
    try:
        async for line in _lines():
            if line.strip():
                await chat.say(line)
    finally:
        await chat.close()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("user")
    parser.add_argument("--room", default="lobby")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--ca", help="CA certificate (PEM) to connect over TLS")
    args = parser.parse_args()
    password = os.environ.get("PBNB_CHAT_PASSWORD") or getpass.getpass(f"Password for {args.user}: ")
    sys.exit(asyncio.run(run(args, password)))


if __name__ == "__main__":
    main()
