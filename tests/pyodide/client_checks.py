"""Run inside Pyodide (under Node) by tests/test_websocket_pyodide.py: pbnb as a browser page uses it.

    argv: SERVICE_URL PORTAL_URL WRONG_PATH_URL

Prints one ``CHECK<tab>name<tab>value`` line per result (values as JSON) for the test to
assert on; an exception fails the run.
"""

import asyncio
import json
import sys
import time

import pbnb as pb
from pbnb.cred import UnauthorizedLogin, UsernamePassword

service_url, portal_url, wrong_url = sys.argv[1:4]


def check(name, value):
    print(f"CHECK\t{name}\t{json.dumps(value)}", flush=True)


check("platform", sys.platform)
check("ipykernel imported", "ipykernel" in sys.modules)
check("IPython imported", "IPython" in sys.modules)
check("websockets imported", "websockets" in sys.modules)


class Twicer(pb.Referenceable):
    def remote_twice(self, value):
        return value * 2


class NotesCopy(pb.ObservedRemoteCache):
    observed_fields = ("items",)


pb.setUnjellyableForClass("ws_service.Notes", NotesCopy)


class Mind(pb.Referenceable):
    def __init__(self):
        self.told = []

    def remote_told(self, text):
        self.told.append(text)
        return "heard"


async def calls_references_and_caches():
    client = await pb.connect(service_url)
    check("transport", type(client.connection.transport).__name__)
    root = await client.getRootObject()
    value = {"text": "héllo", "n": [1, 2.5, None, True], "b": b"\x00\xff"}
    check("echo", await root.callRemote("echo", value) == value)
    check("call back", await root.callRemote("call_back", Twicer(), 21))
    counter = await root.callRemote("counter")
    check("counter bumps", [await counter.callRemote("bump") for _ in range(3)])
    check("reference comes home", await root.callRemote("is_counter", counter))
    big = bytes(range(256)) * 12_000  # 3 MiB: several messages each way
    check("3 MiB echo", await root.callRemote("echo", big) == big)

    notes = await root.callRemote("notes")
    check("cache state", notes.items)
    changed = asyncio.Event()
    notes.changed = lambda fields: changed.set()
    other = await pb.connect(service_url)  # another client changes it
    await (await other.getRootObject()).callRemote("add", "first")
    await asyncio.wait_for(changed.wait(), 30)
    check("cache after one update", notes.items)
    changed.clear()
    await (await other.getRootObject()).callRemote("add", "second")
    await asyncio.wait_for(changed.wait(), 30)
    check("cache after two updates", notes.items)
    await other.close()

    started = time.perf_counter()
    for i in range(200):
        await root.callRemote("echo", i)
    check("round trip us", (time.perf_counter() - started) / 200 * 1e6)
    started = time.perf_counter()
    for _ in range(5):
        await root.callRemote("echo", big[: 1 << 20])
    check("1 MiB echo ms", (time.perf_counter() - started) / 5 * 1e3)
    await client.close()
    check("closed", not client.connected)


async def login():
    client = await pb.connect(portal_url)
    mind = Mind()
    avatar = await client.login(UsernamePassword("alice", "correct horse"), mind)
    check("whoami", await avatar.callRemote("whoami"))
    check("mind called back", await avatar.callRemote("call_me_back", "hi"))
    await client.close()

    client = await pb.connect(portal_url)
    try:
        await client.login(UsernamePassword("alice", "wrong"))
        check("bad password", "accepted")
    except UnauthorizedLogin as exc:
        check("bad password", type(exc).__name__)
    check("connected after a bad password", client.connected)
    await client.close()


async def refusals():
    try:
        await pb.connect(wrong_url, timeout=30)
        check("wrong path", "connected")
    except pb.PBConnectionLost as exc:
        check("wrong path", str(exc))
    try:
        await pb.connect("pb://127.0.0.1:1")
    except ValueError as exc:
        check("raw tcp", str(exc))


async def main():
    await calls_references_and_caches()
    await login()
    await refusals()
    check("websockets imported at the end", "websockets" in sys.modules)


await main()  # noqa: F704 (runPythonAsync runs the file as top-level async code, as a notebook cell)
