"""A broker in its own process for the notebook tests.

Prints ``PORT <n>`` when listening, then obeys lines on stdin:
``set N`` assigns the counter (broadcast to every copy) and answers ``ok N``;
``get`` answers ``value N writes W``; a peer's write prints ``wrote value N``;
``step`` lets ``crunch`` take one more step (``ok step``); what the Demo root
says (a stream closed) is printed as it happens.
``--port`` picks the port (default: any).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading

from counter_fixture import Counter, Demo

import pbnb as pb


async def main(port: int) -> None:
    counter = Counter(on_write=lambda name, value: print(f"wrote {name} {value}", flush=True))
    demo = Demo(counter, said=lambda text: print(text, flush=True))
    server = await pb.serve(demo, host="127.0.0.1", port=port)
    print(f"PORT {server.port}", flush=True)
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def obey(line: str) -> None:
        words = line.split()
        if words[:1] == ["set"]:
            counter.value = int(words[1])
            print(f"ok {counter.value}", flush=True)
        elif words[:1] == ["get"]:
            print(f"value {counter.value} writes {counter.writes}", flush=True)
        elif words[:1] == ["step"]:
            demo.go.put_nowait(None)
            print("ok step", flush=True)

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(obey, line)
        loop.call_soon_threadsafe(done.set_result, None)

    threading.Thread(target=read_stdin, daemon=True).start()
    await done  # stdin closed: the test is over
    await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
