"""pbnb in the browser: a script inside Pyodide (the npm package, run by Node) talks to a real server.

Pyodide gets pbnb's own files and msgpack's pure-Python fallback (plus scramp for
SCRAM login) from a folder this test fills; nothing comes from a CDN. Node's
``ws`` package stands in for the browser's WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import msgpack
import pytest
import scramp
from core_net import serving
from cred_helpers import Realm, make_portal
from ws_service import Service

import pbnb
import pbnb as pb

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "js" / "run_pyodide.mjs"
CHECKS = Path(__file__).resolve().parent / "pyodide" / "client_checks.py"

pytestmark = pytest.mark.slow


def pure_python_site(target: Path) -> Path:
    """A folder with pbnb and the pure-Python parts of what it needs, as a page would ship them."""
    shutil.copytree(
        Path(pbnb.__file__).parent, target / "pbnb", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    (target / "msgpack").mkdir()
    for name in ("__init__.py", "fallback.py", "exceptions.py", "ext.py"):  # no C extension
        shutil.copy(Path(msgpack.__file__).parent / name, target / "msgpack" / name)
    site = Path(scramp.__file__).parent.parent
    shutil.copytree(site / "scramp", target / "scramp", ignore=shutil.ignore_patterns("__pycache__"))
    for info in site.glob("scramp-*.dist-info"):  # scramp reads its version from there
        shutil.copytree(info, target / info.name)
    shutil.copytree(site / "asn1crypto", target / "asn1crypto", ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("node") is None or not (ROOT / "js" / "node_modules" / "pyodide").is_dir():
        pytest.fail("Node and the pyodide npm package are needed: run scripts/setup.sh")
    return pure_python_site(tmp_path_factory.mktemp("pyodide-site"))


async def run_in_pyodide(site: Path, script: Path, *args: str) -> tuple[dict, str]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(RUNNER),
        str(site),
        str(script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT / "js",
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 240)
    finally:
        if process.returncode is None:
            process.kill()
    text = out.decode()
    problems = err.decode()[-3000:]
    assert process.returncode == 0, f"{text[-3000:]}\n{problems}"
    checks = {}
    for line in text.splitlines():
        if line.startswith("CHECK\t"):
            _, name, value = line.split("\t", 2)
            checks[name] = json.loads(value)
    return checks, text


@pytest.mark.timeout(300)
async def test_a_pyodide_client_calls_passes_references_follows_a_cache_and_logs_in(site):
    realm = Realm()
    async with serving(Service()) as service, serving(make_portal(realm), websocket_path="/login") as portal:
        checks, output = await run_in_pyodide(
            site,
            CHECKS,
            f"ws://127.0.0.1:{service.port}/pb",
            f"ws://127.0.0.1:{portal.port}/login",
            f"ws://127.0.0.1:{portal.port}/elsewhere",
        )
        print(output)
        assert checks["platform"] == "emscripten"
        # import pbnb pulls in no kernel and no websockets library in the browser.
        assert checks["ipykernel imported"] is False and checks["IPython imported"] is False
        assert checks["websockets imported"] is False and checks["websockets imported at the end"] is False
        assert checks["transport"] == "BrowserWebSocketTransport"
        assert checks["echo"] is True
        assert checks["call back"] == 42  # the server called the page's Referenceable
        assert checks["counter bumps"] == [1, 2, 3]
        assert checks["reference comes home"] is True
        assert checks["3 MiB echo"] is True
        assert checks["cache state"] == []
        assert checks["cache after one update"] == ["first"]
        assert checks["cache after two updates"] == ["first", "second"]
        assert checks["closed"] is True
        assert checks["whoami"] == "alice"
        assert checks["mind called back"] == "heard"
        assert checks["bad password"] == "UnauthorizedLogin"
        assert checks["connected after a bad password"] is True
        assert "could not open a WebSocket" in checks["wrong path"]
        assert "a browser cannot open" in checks["raw tcp"]
        assert 0 < checks["round trip us"] < 1_000_000
        # The same calls from CPython in the same run, for benchmarks/README.md (-s shows it).
        async with await pb.connect(f"ws://127.0.0.1:{service.port}/pb") as client:
            root = await client.getRootObject()
            started = time.perf_counter()
            for i in range(200):
                await root.callRemote("echo", i)
            cpython = (time.perf_counter() - started) / 200 * 1e6
        print(
            f"round trip: Pyodide under Node {checks['round trip us']:.0f} us, CPython {cpython:.0f} us; "
            f"1 MiB echo from Pyodide {checks['1 MiB echo ms']:.1f} ms"
        )
    assert realm.requested == ["alice"]
    # Every cache observer went away with the page's connections.
    assert not service.root.notes.observers


class Streams(pb.Root):
    """Remote generators and a call that reports progress, for the page's stream checks."""

    def __init__(self) -> None:
        self.finished: dict[str, asyncio.Event] = {}
        self.open = 0

    async def remote_count(self, n: int):
        for i in range(n):
            yield i
            if i == 0:
                pb.progress(1, n, "counting")

    async def remote_endless(self, name: str):
        self.open += 1
        self.finished[name] = finished = asyncio.Event()
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            self.open -= 1
            finished.set()

    async def remote_closed(self, name: str) -> bool:
        await asyncio.wait_for(self.finished[name].wait(), 60)
        return True

    def remote_count_open(self) -> int:
        return self.open

    def remote_measure(self, steps: int) -> str:
        pb.progress(1, steps, "first of four")  # the first report goes out at once
        return "measured"


@pytest.mark.timeout(300)
async def test_a_pyodide_client_reads_streams_leaves_them_early_and_sees_progress(site):
    streams = Streams()
    async with serving(streams) as service:
        checks, output = await run_in_pyodide(
            site,
            Path(__file__).resolve().parent / "pyodide" / "stream_checks.py",
            f"ws://127.0.0.1:{service.port}/pb",
        )
        print(output)
    assert checks["items in order"] is True  # 600 items: past the first window, credit granted again
    assert checks["stream type"] == "RemoteIterator"
    assert checks["small stream"] == [0, 1, 2]
    assert checks["ended"] is True
    assert checks["stream progress"] == [1, 3, "counting"]
    assert checks["taken before break"] == [0, 1, 2]
    assert checks["dropped stream closed"] is True  # the server's finally ran after the page's break
    assert checks["first of endless"] == 0
    assert checks["aclosed stream closed"] is True
    assert checks["measured"] == "measured"
    assert checks["progress reports"] == [[1, 4, "first of four"]]
    assert checks["latest progress"] == [1, 4, "first of four"]
    assert checks["fraction"] == 0.25
    assert checks["still serving"] == 0
    assert checks["closed"] is True
