"""Port of Twisted's pb5client.py, pb6client1.py and pb6client2.py: log in, call the avatar.

``python pb6client.py PORT USER PASSWORD NUMBER``; the listings are
``8800 user1 pass1 12``, ``8800 user1 pass1 13`` and ``8800 user2 pass2 14``.
"""

import asyncio
import sys

import pbnb as pb
from pbnb.cred import UsernamePassword


async def main(port: int, user: str, password: str, number: int) -> None:
    async with await pb.connect("localhost", port) as client:
        perspective = await client.login(UsernamePassword(user, password))
        print("got perspective ref:", perspective)
        print(f"asking it to foo({number})")
        await perspective.callRemote("foo", number)


if __name__ == "__main__":
    port, user, password, number = sys.argv[1:5]
    asyncio.run(main(int(port), user, password, int(number)))
