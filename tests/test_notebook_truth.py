"""What a notebook shows is true: refused writes, dead copies and the log, in a real kernel."""

from __future__ import annotations

from typing import Any

import pytest
from notebook_fixtures.harness import BrokerProcess, Kernel
from test_notebook_kernel import assert_clean, is_update, show_counter

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # real kernels and brokers


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
    """Read iopub until every predicate matched some message (in any order); return what was read.

    Messages the last ``run_all`` already read count too: a change may beat the cell's idle.
    """
    read = list(kernel.seen)
    waiting = [p for p in predicates if not any(p(msg) for msg in read)]

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
    kernel.send_comm_update(comm_id, {"value": "3000"})  # a person types 3000; the owner allows 1000
    wait_all(
        kernel,
        is_update(comm_id, "value", "0"),
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
    wait_all(kernel, update_containing(log, "value", "oops, a server-side bug"))
    streams = [m["content"]["text"] for m in kernel.seen if m["msg_type"] == "stream"]
    assert not [text for text in streams if "oops" in text or "Traceback" in text]


def error_text(kernel: Kernel) -> str:
    [error] = [m for m in kernel.seen if m["msg_type"] == "error"]
    return "\n".join(error["content"]["traceback"])


def test_tracebacks_show_the_users_line_and_our_message_and_tb_the_rest(kernel, broker):
    free = (
        "import socket\n"
        "with socket.socket() as s:\n"
        "    s.bind(('127.0.0.1', 0))\n"
        "    port = s.getsockname()[1]"
    )
    assert_clean(kernel.run_all(["%load_ext pbnb", free]))
    [refused] = kernel.run_all(["root = %pb_connect {port}"])
    assert refused["errors"] and refused["errors"][0].startswith("ConnectionRefusedError: ")
    shown = error_text(kernel)
    assert "root = %pb_connect {port}" in shown and "no pbnb server at 127.0.0.1:" in shown
    for internal in ("run_line_magic", "_magics.py", "client.py", "connection.py", "asyncio"):
        assert internal not in shown, shown
    assert "%tb shows the full traceback" in shown
    kernel.run_all(["%tb"])
    assert "client.py" in error_text(kernel)  # the whole chain is one magic away

    cells = [
        "import pbnb\n"
        "class Secret(pbnb.Copyable):\n"
        "    pass\n"
        "class Leaky(pbnb.Root):\n"
        "    def remote_secret(self):\n"
        "        return Secret()\n"
        "srv = %pb_serve Leaky()\n"
        "leaky = %pb_connect {srv.port}",
        "await leaky.remote.secret()",
    ]
    results = kernel.run_all(cells)
    assert results[1]["errors"][0].startswith("InsecureJelly: refused a copy of")
    shown = error_text(kernel)
    assert "await leaky.remote.secret()" in shown and "serialize.py" not in shown and "broker.py" not in shown
    assert "the receiving side has no RemoteCopy class" in shown
    assert "refused here, by the caller, receiving the answer" in shown

    assert_clean(kernel.run_all([f"root = %pb_connect {broker.port}"]))
    broker.close()
    [dead] = kernel.run_all(
        ["import asyncio\nwhile root.connected:\n    await asyncio.sleep(0.05)\nawait root.remote.hello('x')"]
    )
    assert dead["errors"][0].startswith("DeadReferenceError")
    shown = error_text(kernel)
    assert "await root.remote.hello('x')" in shown and "reference.py" not in shown


def send_click(kernel: Kernel, comm_id: str) -> None:
    """Do what a browser does when a person clicks a button."""
    content = {"comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}}
    kernel.client.shell_channel.send(kernel.client.session.msg("comm_msg", content))


def test_a_lost_magic_connection_offers_a_reconnect_button_that_rebinds_the_variable(kernel):
    serve = "srv = %pb_serve Demo(Counter()) --port {port}"
    setup = (
        "import socket\n"
        "from counter_fixture import Counter, Demo\n"
        "with socket.socket() as s:\n"
        "    s.bind(('127.0.0.1', 0))\n"
        "    port = s.getsockname()[1]\n"
    )
    assert_clean(kernel.run_all(["%load_ext pbnb", setup + serve, "root = %pb_connect {port}\nroot"]))
    status = comm_with_class(kernel.seen, "pbnb-status")
    button = comm_with_class(kernel.seen, "pbnb-reconnect")
    assert_clean(kernel.run_all(["%pb_serve --stop {port}"]))
    wait_all(kernel, update_containing(status, "value", "disconnected"))
    assert_clean(kernel.run_all([serve, "before = id(root)"]))
    send_click(kernel, button)
    wait_all(kernel, update_containing(status, "value", "● connected"))
    [result] = kernel.run_all(["print(id(root) != before, root.connected, await root.remote.hello('again'))"])
    assert result["text"] == "True True hello again!\n"
