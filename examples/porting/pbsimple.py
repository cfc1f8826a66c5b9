"""Port of Twisted's pbsimple.py (docs/core/examples): a root object that echoes what it is sent."""

import asyncio
import sys

import pbnb as pb


class Echoer(pb.Root):
    def remote_echo(self, text):
        print("echoing:", text)
        return text


async def main(port: int) -> None:
    server = await pb.serve(Echoer(), port=port)
    print("listening on port", server.port, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8789))
