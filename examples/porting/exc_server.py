"""Port of Twisted's exc_server.py: an expected error and an unexpected one."""

import asyncio
import sys

import pbnb as pb


class MyError(pb.Error):
    """An expected exception: the caller is told, the server logs no crash."""


class MyError2(Exception):
    """An unexpected exception: the caller is told, and the server logs a traceback."""


class One(pb.Root):
    def remote_broken(self):
        message = "fall down go boom"
        print(f"raising a MyError exception with data '{message}'")
        raise MyError(message)

    def remote_broken2(self):
        message = "hadda owie"
        print(f"raising a MyError2 exception with data '{message}'")
        raise MyError2(message)


async def main(port: int) -> None:
    server = await pb.serve(One(), port=port)
    print("listening on port", server.port, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8800))
