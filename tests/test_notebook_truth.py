"""What a notebook shows is true: refused writes, dead copies and the log, in a real kernel."""

from __future__ import annotations

from typing import Any

import pytest
from notebook_fixtures.harness import BrokerProcess, Kernel
from test_notebook_kernel import assert_clean, is_update, show_counter

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def broker(tmp_path):
    with BrokerProcess(tmp_path) as process:
        yield process


@pytest.fixture
def kernel(tmp_path):
    with Kernel(tmp_path) as started:
        yield started


def comm_with_class(seen: list[dict[str, Any]], css_class: str) -> str:
    """The comm id of the (last) widget given ``css_class``."""
    found = [
        msg["content"]["comm_id"]
        for msg in seen
        if msg["msg_type"] in ("comm_open", "comm_msg")
        and css_class in msg["content"]["data"].get("state", {}).get("_dom_classes", ())
    ]
    assert found, f"no widget with class {css_class!r} was opened"
    return found[-1]


def update_containing(comm_id: str, key: str, text: str):
    def check(msg: dict[str, Any]) -> bool:
        content = msg["content"]
        return (
            msg["msg_type"] == "comm_msg"
            and content["comm_id"] == comm_id
            and text in str(content["data"].get("state", {}).get(key, ""))
        )

    return check


def wait_all(kernel: Kernel, *predicates: Any) -> list[dict[str, Any]]:
    """Read iopub until every predicate matched some message (in any order); return what was read."""
    waiting, read = list(predicates), []

    def wanted(msg: dict[str, Any]) -> bool:
        return any(p(msg) for p in waiting)

    while waiting:
        msg, before = kernel.wait_for(wanted)
        read += [*before, msg]
        waiting[:] = [p for p in waiting if not p(msg)]
    return read


def test_a_widget_write_the_owner_refuses_rolls_back_and_says_why_in_the_widget(kernel, broker):
    comm_id = show_counter(kernel, broker.port)
    problem = comm_with_class(kernel.seen, "pbnb-cache-problem")
    kernel.send_comm_update(comm_id, {"value": 3000})  # a person types 3000; the owner allows 1000
    wait_all(
        kernel,
        is_update(comm_id, "value", 0),
        update_containing(problem, "value", "value must be at most 1000"),
    )
    [result] = kernel.run_all(["print(cache.value, cache.pb_problem)"])
    assert result["text"].startswith("0 the owner refused CounterCache.value = 3000")
    assert broker.command("get") == "value 0 writes 1"


def test_a_cell_write_the_owner_refuses_rolls_back_and_says_why_under_that_cell(kernel, broker):
    show_counter(kernel, broker.port)
    cell = kernel.client.execute("cache.value = 3000")
    refused, _before = kernel.wait_for(
        lambda m: m["msg_type"] == "stream" and "the owner refused" in m["content"]["text"]
    )
    assert refused["parent_header"]["msg_id"] == cell
    assert "value must be at most 1000, got 3000; back to the owner's value 0" in refused["content"]["text"]
    [result] = kernel.run_all(["print(cache.value)"])
    assert result["text"] == "0\n"
    assert broker.command("get") == "value 0 writes 1"


def test_a_dead_copy_and_pb_status_say_so_and_writes_fail(kernel, broker):
    comm_id = show_counter(kernel, broker.port)
    state = comm_with_class(kernel.seen, "pbnb-cache-state")
    assert_clean(kernel.run_all(["%pb_status"]))
    status = comm_with_class(kernel.seen, "pbnb-status-view")
    broker.close()
    wait_all(
        kernel,
        update_containing(state, "value", "disconnected"),
        update_containing(status, "value", "disconnected"),
        is_update(comm_id, "disabled", True),
    )
    [result] = kernel.run_all(["cache.value = 5"])
    [error] = result["errors"]
    assert error.startswith("DeadReferenceError: CounterCache.value = 5 was not sent")
    [result] = kernel.run_all(["print(cache.value, cache.connected)"])
    assert result["text"] == "0 False\n"
    assert kernel.manager.is_alive()


def test_server_logging_goes_to_the_log_panel_not_into_cells(kernel):
    crashing = (
        "import pbnb\n"
        "class Fragile(pbnb.Root):\n"
        "    def remote_crash(self):\n"
        "        raise ValueError('oops, a server-side bug')\n"
        "srv = %pb_serve Fragile()\n"
        "srv"
    )
    results = kernel.run_all(["%load_ext pbnb", crashing, "%pb_status"])
    assert_clean(results)
    assert "Fragile on 127.0.0.1:" in results[1]["data"][0]["text/plain"]
    log = comm_with_class(kernel.seen, "pbnb-log")
    results = kernel.run_all(
        [
            "root = %pb_connect {srv.port}\n"
            "try:\n"
            "    await root.remote.crash()\n"
            "except pbnb.RemoteError as error:\n"
            "    print('caught', error.remote_type)",
        ]
    )
    assert results[0]["text"] == "caught ValueError\n"
    logged = update_containing(log, "value", "oops, a server-side bug")
    if not any(logged(msg) for msg in kernel.seen):  # logged while the cell ran, or soon after
        wait_all(kernel, logged)
    streams = [m["content"]["text"] for m in kernel.seen if m["msg_type"] == "stream"]
    assert not [text for text in streams if "oops" in text or "Traceback" in text]
