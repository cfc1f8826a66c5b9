"""A real kernel, driven with jupyter_client, talking to a broker in another process."""

from __future__ import annotations

from typing import Any

import pytest
from notebook_fixtures.harness import BrokerProcess, Kernel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def home(tmp_path):
    return tmp_path


@pytest.fixture
def broker(home):
    with BrokerProcess(home) as process:
        yield process


@pytest.fixture
def kernel(home):
    with Kernel(home) as started:
        yield started


def assert_clean(results: list[dict[str, Any]]) -> None:
    for number, result in enumerate(results, 1):
        assert result["errors"] == [], f"cell {number}: {result['errors']}"


def field_comm(seen: list[dict[str, Any]], name: str) -> str:
    """The comm id of the widget generated for a cache field."""
    for msg in seen:
        if msg["msg_type"] in ("comm_open", "comm_msg"):
            state = msg["content"]["data"].get("state", {})
            if f"pbnb-field-{name}" in state.get("_dom_classes", ()):
                return msg["content"]["comm_id"]
    raise AssertionError(f"no widget for field {name!r} was opened")


def is_update(comm_id: str, key: str, value: Any):
    def check(msg: dict[str, Any]) -> bool:
        content = msg["content"]
        return (
            msg["msg_type"] == "comm_msg"
            and content["comm_id"] == comm_id
            and content["data"].get("method") == "update"
            and content["data"]["state"].get(key) == value
        )

    return check


def show_counter(kernel: Kernel, port: int) -> str:
    results = kernel.run_all(
        [
            "%load_ext pbnb",
            f"import counter_fixture\nroot = %pb_connect 127.0.0.1:{port}\n"
            "cache = await root.remote.counter()\ndisplay(cache)",
        ]
    )
    assert_clean(results)
    return field_comm(kernel.seen, "value")


def test_owner_change_reaches_the_widget_while_no_cell_runs(kernel, broker):
    comm_id = show_counter(kernel, broker.port)
    assert broker.command("set 42") == "ok 42"
    _update, before = kernel.wait_for(is_update(comm_id, "value", "42"))
    # No cell ran: the kernel never went busy between the change and the message.
    assert not [m for m in before if m["msg_type"] == "status"]
    assert not [m for m in before if m["msg_type"] == "execute_input"]
    [result] = kernel.run_all(["print(cache.value, cache.label)"])
    assert result["text"] == "42 clicks\n"
    # The change came from the owner: the kernel did not send it back.
    assert broker.command("get") == "value 42 writes 0"
    assert kernel.manager.is_alive()


def test_widget_edit_is_sent_to_the_owner_once(kernel, broker):
    comm_id = show_counter(kernel, broker.port)
    kernel.send_comm_update(comm_id, {"value": "7"})
    assert broker.reply() == "wrote value 7"
    [result] = kernel.run_all(["print(cache.value)"])
    assert result["text"] == "7\n"
    assert broker.command("get") == "value 7 writes 1"
    # A change by the owner after that still arrives, and is still not echoed.
    assert broker.command("set 8") == "ok 8"
    kernel.wait_for(is_update(comm_id, "value", "8"))
    assert broker.command("get") == "value 8 writes 1"


def run_all_round(port: int) -> list[str]:
    return [
        "%load_ext pbnb",
        f"root = %pb_connect 127.0.0.1:{port}\nprint(await root.remote.hello('ada'))",
        "print(await root.callRemote('hello', 'bob', punctuation='?'))",
        "from counter_fixture import Counter, Demo\n"
        "srv = %pb_serve Demo(Counter())\n"
        "mine = %pb_connect 127.0.0.1:{srv.port}\n"
        "print(await mine.remote.hello('kernel'))",
        "%pb_status",
        "%pb_disconnect --all\n%pb_serve --stop\nprint('closed', root.connected, mine.connected)",
        "print('last')",
    ]


def test_queued_run_all_keeps_the_kernel_alive(kernel, broker):
    for _ in range(3):
        results = kernel.run_all(run_all_round(broker.port))
        assert_clean(results)
        texts = [r["text"] for r in results]
        assert texts[1:4] == ["hello ada!\n", "hello bob?\n", "hello kernel!\n"]
        status = results[4]["data"][0]
        assert "application/vnd.jupyter.widget-view+json" in status
        assert "connections:" in status["text/plain"]
        assert texts[5:] == ["closed False False\n", "last\n"]
        assert kernel.manager.is_alive()


def test_references_and_unawaited_calls_render_as_live_widgets(kernel, broker):
    results = kernel.run_all(
        [
            "%load_ext pbnb",
            f"root = %pb_connect 127.0.0.1:{broker.port}\nroot",
            "root.callRemote('hello', 'later')",
        ]
    )
    assert_clean(results)
    mime = "application/vnd.jupyter.widget-view+json"
    [reference] = results[1]["data"]
    assert mime in reference
    assert reference["text/plain"].startswith(f"<RemoteReference to Demo at 127.0.0.1:{broker.port} (#")
    assert "    hello(name: str, punctuation: str = '!') -> str  # Greet someone." in reference["text/plain"]
    [future] = results[2]["data"]
    assert mime in future and future["text/plain"].startswith("<pending hello() on <RemoteReference")

    # The answer arrives after the cell ended; the future's widget shows it by itself.
    def shows_answer(msg):
        state = msg["content"].get("data", {}).get("state", {})
        return msg["msg_type"] == "comm_open" and "hello later!" in str(state.get("value", ""))

    seen_or_wait(kernel, shows_answer)  # the answer may even beat the cell's idle status


def test_login_asks_the_frontend_for_a_password_without_echo(kernel):
    portal = (
        "import pbnb\n"
        "from pbnb.cred import InMemoryPasswordChecker, IPerspective, Portal\n"
        "class Me(pbnb.Avatar):\n"
        "    def perspective_who(self):\n"
        "        return 'the avatar of ada'\n"
        "class Realm:\n"
        "    def requestAvatar(self, avatar_id, mind, *interfaces):\n"
        "        return IPerspective, Me(), lambda: None\n"
        "srv = %pb_serve Portal(Realm(), [InMemoryPasswordChecker(ada='s3cret')])"
    )
    assert_clean(kernel.run_all(["%load_ext pbnb", portal]))
    request, out = kernel.run_answering(
        "me = %pb_connect {srv.port} --user ada\nprint(await me.remote.who())", "s3cret"
    )
    assert request["password"] is True
    assert request["prompt"].startswith("password for ada@")
    assert out == "the avatar of ada\n"


def test_remote_method_names_complete_in_the_kernel(kernel, broker):
    assert_clean(kernel.run_all(["%load_ext pbnb", f"root = %pb_connect 127.0.0.1:{broker.port}"]))
    code = "root.remote.he"
    kernel.client.complete(code, len(code))
    reply = kernel.client.get_shell_msg(timeout=30)
    while reply["msg_type"] != "complete_reply":
        reply = kernel.client.get_shell_msg(timeout=30)
    content = reply["content"]
    completed = [code[: content["cursor_start"]] + match for match in content["matches"]]
    assert "root.remote.hello" in completed


def test_load_ext_and_connect_in_one_cell_give_a_live_pending(kernel, broker):
    results = kernel.run_all(
        [
            f"%load_ext pbnb\nroot = %pb_connect 127.0.0.1:{broker.port}\nroot",
            "done = await root\nprint(await done.remote.hello('again'))",
            "root.callRemote",  # an error: ipykernel drops the cells queued after it, so it comes last
        ]
    )
    [pending] = results[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in pending
    assert pending["text/plain"].startswith(f"<pbnb Pending %pb_connect 127.0.0.1:{broker.port}:")
    assert results[1]["errors"] == [] and results[1]["text"] == "hello again!\n"
    [error] = results[2]["errors"]
    assert "has not been awaited" in error and "x = await x" in error
    # The pending output turned into the reference's own widget once connected.
    seen_or_wait(
        kernel, lambda m: m["msg_type"] in ("comm_open", "comm_msg") and "Demo</b> at" in str(m["content"])
    )


def seen_or_wait(kernel: Kernel, predicate) -> None:
    """Pass if iopub already carried a matching message, else wait for one (while no cell runs)."""
    if not any(predicate(msg) for msg in kernel.seen):
        _found, before = kernel.wait_for(predicate)
        assert not [m for m in before if m["msg_type"] == "execute_input"]
