"""Port of Twisted's copy_sender.py: send an object by value.

The receiver is copy_receiver.py, served as Twisted's .tac file was run by twistd:
``python -m pbnb serve copy_receiver:root --port 8800``.
"""

import asyncio
import sys

import pbnb as pb


class LilyPond:
    def setStuff(self, color, frogs):
        self.color = color
        self.numFrogs = frogs

    def countFrogs(self):
        print(f"{self.numFrogs} frogs")


class CopyPond(LilyPond, pb.Copyable):
    pass


async def main(port: int) -> None:
    # Imported by module name, so the copy travels as copy_sender.CopyPond, not __main__.CopyPond.
    from copy_sender import CopyPond

    pond = CopyPond()
    pond.setStuff("green", 7)
    pond.countFrogs()
    print(f"{type(pond).__module__}.{type(pond).__qualname__}")
    async with await pb.connect("localhost", port) as client:
        receiver = await client.getRootObject()
        try:
            print("pond arrived", await receiver.callRemote("takePond", pond))
        except pb.InsecureJelly:
            print("error during takePond:\n InsecureJelly")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
