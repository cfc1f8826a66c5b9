"""Latency from an owner's change to the notebook: trait change, and comm message out of the kernel.

Run ``python -m benchmarks.bench_notebook_latency [--rounds N]``. Three figures, medians
over N changes on loopback (target: under 5 ms):

* in process: the owner assigns ``counter.value``; a TraitCache on another
  connection in the same process sees the trait change (no kernel involved);
* kernel trait: the owner here, a real ipykernel (driven by jupyter_client)
  holding the TraitCache; the time its trait observer fires;
* kernel comm: the same change, until the widget's ``comm_msg`` update has
  left the kernel and arrived here on iopub (an upper bound for "leaves the kernel").

The kernel figures compare ``time.perf_counter()`` across two processes: on
Linux it is CLOCK_MONOTONIC, one clock for the whole machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pbnb

# The kernel imports the same fixture module by the same name, so the owner's
# type name matches the TraitCache it registers.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "notebook_fixtures"))
from counter_fixture import Counter, CounterCache, Demo
from harness import Kernel

WARMUP = 5


def summary(name: str, seconds: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in seconds[WARMUP:])
    return {
        "figure": name,
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[int(len(ms) * 0.9) - 1], 3),
        "min_ms": round(ms[0], 3),
        "n": len(ms),
    }


async def in_process(rounds: int) -> list[float]:
    counter = Counter()
    server = await pbnb.serve(Demo(counter))
    registry = pbnb.CopyRegistry()
    registry.register(Counter, CounterCache)
    client = await pbnb.connect("127.0.0.1", server.port, registry=registry)
    cache = await (await client.getRootObject()).remote.counter()
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[float] | None = None

    def seen(_change: Any) -> None:
        arrived.set_result(time.perf_counter())  # type: ignore[union-attr]

    cache.observe(seen, names=["value"])
    latencies = []
    for n in range(1, rounds + WARMUP + 1):
        arrived = loop.create_future()
        start = time.perf_counter()
        counter.value = n
        latencies.append(await asyncio.wait_for(arrived, 5) - start)
    await client.close()
    await server.close()
    return latencies


class OwnerThread:
    """The owner's broker on its own loop in a thread, so jupyter_client can block here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.counter = Counter()
        self.server = self.run(pbnb.serve(Demo(self.counter)))

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def change(self, value: int, started: dict[int, float]) -> None:
        def assign() -> None:
            started[value] = time.perf_counter()
            self.counter.value = value

        self.loop.call_soon_threadsafe(assign)

    async def _close(self) -> None:
        await self.server.close()  # on the loop: close() starts where it is called

    def close(self) -> None:
        self.run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)


def in_kernel(rounds: int) -> tuple[list[float], list[float]]:
    owner = OwnerThread()
    kernel = Kernel(Path(tempfile.mkdtemp(prefix="pbnb-bench-")))
    try:
        setup = kernel.run_all(
            [
                "%load_ext pbnb",
                "import time, json, counter_fixture\n"
                f"root = %pb_connect 127.0.0.1:{owner.server.port}\n"
                "cache = await root.remote.counter()\n"
                "stamps = {}\n"
                "stamp = lambda change: stamps.__setitem__(change['new'], time.perf_counter())\n"
                "cache.observe(stamp, names=['value'])\n"
                "display(cache)",
            ]
        )
        assert not any(r["errors"] for r in setup), setup
        comm_id = next(
            m["content"]["comm_id"]
            for m in kernel.seen
            if m["msg_type"] in ("comm_open", "comm_msg")
            and "pbnb-field-value" in m["content"]["data"].get("state", {}).get("_dom_classes", ())
        )
        started: dict[int, float] = {}
        to_iopub = []
        for n in range(1, rounds + WARMUP + 1):
            owner.change(n, started)
            kernel.wait_for(
                lambda m, n=n: (
                    m["msg_type"] == "comm_msg"
                    and m["content"]["comm_id"] == comm_id
                    and m["content"]["data"].get("state", {}).get("value") == f"{n:,}"
                ),
                timeout=10,
            )
            to_iopub.append(time.perf_counter() - started[n])
        [out] = kernel.run_all(["print(json.dumps(stamps))"])
        stamps = {int(k): v for k, v in json.loads(out["text"]).items()}
        to_trait = [stamps[n] - started[n] for n in range(1, rounds + WARMUP + 1)]
        return to_trait, to_iopub
    finally:
        kernel.close()
        owner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    results = [summary("in process: owner change -> trait change", asyncio.run(in_process(args.rounds)))]
    to_trait, to_iopub = in_kernel(args.rounds)
    results.append(summary("kernel: owner change -> trait change in the kernel", to_trait))
    results.append(summary("kernel: owner change -> widget comm_msg on iopub", to_iopub))
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
