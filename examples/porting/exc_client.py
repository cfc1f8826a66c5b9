"""Port of Twisted's exc_client.py: what a remote exception looks like to the caller.

``python exc_client.py PORT broken2`` calls the method raising the unexpected error.
"""

import asyncio
import sys

import pbnb as pb


async def main(port: int, method: str) -> None:
    async with await pb.connect("localhost", port) as client:
        one = await client.getRootObject()
        try:
            await one.callRemote(method)
        except pb.RemoteError as reason:
            print("got remote Exception")
            print(" .__class__ =", reason.__class__)
            print(" .getErrorMessage() =", reason.getErrorMessage())
            print(" .type =", reason.type)
        else:
            print("erm, it wasn't *supposed* to work..")


if __name__ == "__main__":
    port, method = (sys.argv[1:3] + ["8800", "broken"][len(sys.argv[1:3]) :])[:2]
    asyncio.run(main(int(port), method))
