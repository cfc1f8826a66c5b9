"""Port of Twisted's pbechoclient.py: log in, echo, and trap the server's DefinedError."""

import asyncio
import sys

from pbecho import DefinedError

import pbnb as pb
from pbnb.cred import UsernamePassword


async def main(port: int) -> None:
    async with await pb.connect("localhost", port) as client:
        perspective = await client.login(UsernamePassword("guest", "guest"))
        echo = perspective.callRemote("echo", "hello world")
        error = perspective.callRemote("error")
        print("connected.")
        print("Message received:", await echo)
        try:
            await error
        except pb.RemoteError as failure:
            print("error received:", failure.trap(DefinedError))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else pb.portno))
