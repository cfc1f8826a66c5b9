"""Port of Twisted's copy2_sender.py (the receiver: ``python -m pbnb serve copy2_receiver:root``)."""

import asyncio
import sys

from copy2_classes import SenderPond

import pbnb as pb


async def main(port: int) -> None:
    pond = SenderPond(3, 4)
    print(f"count {pond.count()}")
    async with await pb.connect("localhost", port) as client:
        receiver = await client.getRootObject()
        try:
            print("pond arrived", await receiver.callRemote("takePond", pond))
        except pb.InsecureJelly:
            print("error during takePond:\n InsecureJelly")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
