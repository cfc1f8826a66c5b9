"""Port of Twisted's pbAnonClient.py: two logins on one connection, awaited together."""

import asyncio
import logging
import sys

import pbnb as pb
from pbnb.cred import Anonymous, UsernamePassword

log = logging.getLogger(__name__)


async def login_and_foo(client, credentials, what):
    try:
        perspective = await client.login(credentials)
    except pb.PBError:
        log.exception("%s failed", what)
        return
    print("got perspective1 ref:", perspective)
    print("asking it to foo(13)")
    await perspective.callRemote("foo", 13)


async def main(port: int) -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO)
    async with await pb.connect("localhost", port) as client:
        await asyncio.gather(
            login_and_foo(client, Anonymous(), "Anonymous login"),
            login_and_foo(client, UsernamePassword("user1", "pass1"), "Username/password login"),
        )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
