"""Port of Twisted's cache_sender.py: the phases chained by callbacks become one coroutine."""

import asyncio
import sys

from cache_classes import DuckPond

import pbnb as pb


async def main(port: int) -> None:
    pond = DuckPond(["one duck", "two duck"])
    pond.count()
    async with await pb.connect("localhost", port) as client:
        receiver = await client.getRootObject()
        await receiver.callRemote("takePond", pond)
        pond.addDuck("ugly duckling")
        pond.count()
        await receiver.callRemote("checkDucks")  # updates arrive in order, before this call
        pond.removeDuck("one duck")
        pond.count()
        await receiver.callRemote("checkDucks")
        await receiver.callRemote("ignorePond")
        await receiver.callRemote("shutdown")
        await client.wait_closed()
    print("observers left:", len(pond.observers))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
