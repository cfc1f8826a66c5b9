"""Port of Twisted's trap_client.py: telling failures apart, with trap() or with except."""

import asyncio
import sys

from trap_server import MyException, MyOtherException

import pbnb as pb


class ScaryObject:
    """Nothing says how to send this: pbnb refuses it before anything leaves."""


class One:
    def __init__(self, client, remote):
        self.client = client
        self.remote = remote

    async def doCall(self, explanation, value):
        print(explanation)
        try:
            response = await self.remote.callRemote("fooMethod", value)
        except pb.DeadReferenceError:
            print(" stale reference: the client disconnected or crashed")
        except pb.InsecureJelly:
            print(" InsecureJelly: you tried to send something unsafe to them")
        except pb.RemoteError as failure:
            try:
                which = failure.trap(MyException, MyOtherException)
            except pb.RemoteError:
                print(" something else happened:", failure)
            else:
                print(f" remote raised a {which.__name__}")
        else:
            print(" method successful, response:", response)

    async def run(self):
        await self.doCall("callOne: call with safe object", "safe string")
        await self.doCall("callTwo: call with dangerous object", ScaryObject())
        await self.doCall("callThree: call that raises remote exception", "panic!")
        print("telling them to shut down")
        await self.remote.callRemote("shutdown")
        await self.client.wait_closed()
        await self.doCall("callFour: call on stale reference", "dummy")


async def main(port: int) -> None:
    async with await pb.connect("localhost", port) as client:
        await One(client, await client.getRootObject()).run()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
