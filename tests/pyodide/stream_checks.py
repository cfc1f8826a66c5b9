"""Run inside Pyodide (under Node) by tests/test_websocket_pyodide.py: streams and progress in a page.

    argv: SERVICE_URL

Prints one ``CHECK<tab>name<tab>value`` line per result (values as JSON) for the test to
assert on; an exception fails the run.
"""

import json
import sys

import pbnb as pb

(service_url,) = sys.argv[1:2]


def check(name, value):
    print(f"CHECK\t{name}\t{json.dumps(value)}", flush=True)


def fields(progress):
    return None if progress is None else [progress.done, progress.total, progress.message]


async def streams_and_progress():
    client = await pb.connect(service_url)
    root = await client.getRootObject()

    # A whole stream, in order, then its end; the generator's report reaches the iterator.
    items = []
    call = root.callRemote("count", 600)  # longer than the default window of 512 items
    async for item in call:
        items.append(item)
    check("items in order", items == list(range(600)))
    rows = await root.callRemote("count", 3)
    check("stream type", type(rows).__name__)
    check("small stream", [item async for item in rows])
    check("ended", rows.done)
    check("stream progress", fields(rows.progress))

    # Leaving a stream early: the generator's finally runs on the server.
    taken = []
    async for item in root.callRemote("endless", "dropped"):
        taken.append(item)
        if len(taken) == 3:
            break  # the iterator is dropped here
    check("taken before break", taken)
    check("dropped stream closed", await root.callRemote("closed", "dropped"))
    endless = await root.callRemote("endless", "closed")
    check("first of endless", await anext(endless))
    await endless.aclose()
    check("aclosed stream closed", await root.callRemote("closed", "closed"))

    # Progress of a plain call, watched from the page.
    reports = []
    measuring = root.callRemote("measure", 4)
    measuring.on_progress(reports.append)
    check("measured", await measuring)
    check("progress reports", [fields(report) for report in reports])
    check("latest progress", fields(measuring.progress))
    check("fraction", measuring.progress.fraction)

    check("still serving", await root.callRemote("count_open"))
    await client.close()
    check("closed", True)


await streams_and_progress()  # noqa: F704 (runPythonAsync runs the file as top-level async code)
