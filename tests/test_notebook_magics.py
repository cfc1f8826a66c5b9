"""The %pb_* magics through a real IPython shell (no kernel): serving, connecting, status."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.completer import provisionalcompleter
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import pbnb as pb
from pbnb.cred import InMemoryPasswordChecker, IPerspective, Portal, UnauthorizedLogin
from pbnb.notebook import Pending


class Greeter(pb.Root):
    def remote_hello(self, name: str) -> str:
        """Say hello."""
        return f"hello {name}"

    def remote_help_me(self) -> str:
        return "helped"

    def remote_boom(self) -> None:
        raise ValueError("bad")


class Account(pb.Avatar):
    def __init__(self, name: str):
        self.name = name

    def perspective_whoami(self) -> str:
        return self.name


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return IPerspective, Account(avatar_id), lambda: None


@contextlib.contextmanager
def new_shell(ipython_dir: Path) -> Iterator[InteractiveShell]:
    """A fresh IPython shell with no history database: nothing is left to write at exit."""
    config = Config()
    config.HistoryManager.enabled = False
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IPYTHONDIR", str(ipython_dir))
        ip = InteractiveShell.instance(config=config)
        try:
            yield ip
        finally:
            try:
                run(ip, "%unload_ext pbnb")  # closes what the magics opened
            finally:
                InteractiveShell.clear_instance()


@pytest.fixture
def shell(tmp_path):
    with new_shell(tmp_path) as ip:
        ip.user_ns.update(Greeter=Greeter, Portal=Portal, Realm=Realm, Checker=InMemoryPasswordChecker)
        run(ip, "%load_ext pbnb")
        yield ip


def run(ip: InteractiveShell, source: str):
    """Run a cell; fail the test with the cell's own error if it raised."""
    result = ip.run_cell(source)
    error = result.error_before_exec or result.error_in_exec
    if error is not None:
        raise error
    return result.result


def text_of(ip: InteractiveShell, value) -> str:
    data, _ = ip.display_formatter.format(value)
    return data["text/plain"]


def test_connect_returns_a_reference_usable_on_the_next_line(shell, capsys):
    run(
        shell,
        "srv = %pb_serve Greeter()\nroot = %pb_connect {srv.port}\nprint(await root.remote.hello('ada'))",
    )
    assert capsys.readouterr().out == "hello ada\n"
    assert isinstance(shell.user_ns["root"], pb.RemoteReference)
    assert isinstance(shell.user_ns["srv"], pb.Server)


def test_the_transformer_awaits_only_our_async_magics(shell):
    code = shell.transform_cell("x = %pb_connect h:1\n%pb_serve X()\n%pb_status\n%time 1\n")
    assert code.splitlines() == [
        "x = await get_ipython().run_line_magic('pb_connect', 'h:1')",
        "await get_ipython().run_line_magic('pb_serve', 'X()')",
        "get_ipython().run_line_magic('pb_status', '')",
        "get_ipython().run_line_magic('time', '1')",
    ]
    # Inside a plain function an await would not compile: the line is left alone.
    inside = shell.transform_cell("def f():\n    return %pb_connect h:1\n")
    assert "await" not in inside
    shell.autoawait = False
    try:
        assert "await" not in shell.transform_cell("x = %pb_connect h:1\n")
    finally:
        shell.autoawait = True


def test_load_ext_in_the_same_cell_gives_a_pending_that_explains_itself(tmp_path):
    with new_shell(tmp_path) as ip:
        # This cell runs as async code (it awaits), so a loop is running when the magic runs.
        cell = (
            "import asyncio, pbnb\n%load_ext pbnb\nsrv = %pb_serve pbnb.Root()\nawait asyncio.sleep(0)\nsrv"
        )
        server = run(ip, cell)
        assert isinstance(server, Pending)
        assert text_of(ip, server).startswith("<pbnb Pending %pb_serve pbnb.Root(): ")
        with pytest.raises(AttributeError, match=r"has not been awaited.*x = await x.*use x.port"):
            server.port  # noqa: B018
        server = run(ip, "await srv")
        assert isinstance(server, pb.Server)
        # From the next cell on, the transformer awaits for you.
        assert isinstance(run(ip, "%pb_serve pbnb.Root()"), pb.Server)
        # With no loop running at all, the magic runs its work to the end and returns the result.
        assert isinstance(ip.run_line_magic("pb_serve", "pbnb.Root()"), pb.Server)


def test_reference_text_lists_methods_and_futures_show_their_outcome(shell):
    run(shell, "srv = %pb_serve Greeter()\nroot = %pb_connect 127.0.0.1:{srv.port}")
    root = shell.user_ns["root"]
    text = text_of(shell, root)
    assert text.startswith(f"<RemoteReference to Greeter at 127.0.0.1:{shell.user_ns['srv'].port} (#")
    assert "connected)>" in text
    [hello] = [line for line in text.splitlines() if "hello(" in line]
    assert hello.startswith("    hello(name") and hello.endswith("  # Say hello.")
    future = run(shell, "f = root.callRemote('hello', 'bob')\nf")
    assert text_of(shell, future) == f"<pending hello() on {root!r}>"
    run(shell, "await f")
    assert text_of(shell, future) == f"<done hello() on {root!r}: 'hello bob'>"
    failed = run(shell, "g = root.callRemote('boom')\ntry:\n    await g\nexcept Exception:\n    pass\ng")
    assert text_of(shell, failed) == f"<failed boom() on {root!r}: ValueError: bad>"


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_remote_method_names_tab_complete(shell):
    run(shell, "srv = %pb_serve Greeter()\nroot = %pb_connect 127.0.0.1:{srv.port}")
    _, matches = shell.complete("root.remote.he")
    assert matches == ["root.remote.hello", "root.remote.help_me"]
    assert "boom" in dir(shell.user_ns["root"].remote)


def test_login_reads_the_password_from_the_environment(shell, monkeypatch, capsys):
    monkeypatch.setenv("PBNB_TEST_PASSWORD", "s3cret")
    run(shell, "srv = %pb_serve Portal(Realm(), [Checker(ada='s3cret')])")
    run(shell, "me = %pb_connect 127.0.0.1:{srv.port} --user ada --password-env PBNB_TEST_PASSWORD")
    run(shell, "print(await me.remote.whoami())")
    assert capsys.readouterr().out == "ada\n"
    assert "ada@127.0.0.1:" in run(
        shell,
        "from pbnb.notebook._status import StatusReport\n"
        "StatusReport(get_ipython().magics_manager.registry['PBMagics']).text()",
    )


def test_login_asks_for_the_password_without_echo(shell, monkeypatch):
    asked = []
    monkeypatch.setattr("getpass.getpass", lambda prompt: asked.append(prompt) or "s3cret")
    run(shell, "srv = %pb_serve Portal(Realm(), [Checker(ada='s3cret')])")
    run(shell, "me = %pb_connect 127.0.0.1:{srv.port} --user ada")
    assert asked == [f"password for ada@127.0.0.1:{shell.user_ns['srv'].port}: "]
    for line in ("--password s3cret", "--password=s3cret", "--passw s3cret"):
        with pytest.raises(UsageError) as caught:
            run(shell, "%pb_connect 127.0.0.1:{srv.port} --user ada " + line)
        assert "s3cret" not in str(caught.value)
    with pytest.raises(UnauthorizedLogin):  # a wrong password: refused by the server
        monkeypatch.setattr("getpass.getpass", lambda prompt: "wrong")
        run(shell, "%pb_connect 127.0.0.1:{srv.port} --user ada")


def test_bad_input_gets_a_clear_error(shell):
    with pytest.raises(UsageError, match="HOST:PORT"):
        run(shell, "%pb_connect localhost:http")
    with pytest.raises(UsageError, match="is a int; serve a Root"):
        run(shell, "%pb_serve 42")
    with pytest.raises(UsageError, match="needs an expression"):
        run(shell, "%pb_serve")
    with pytest.raises(UsageError, match=r"no server '1' to stop \(running: none\)"):
        run(shell, "%pb_serve --stop 1")
    with pytest.raises(UsageError, match="no connection 'nope'"):
        run(shell, "%pb_disconnect nope")
    with pytest.raises(UsageError, match="PBNB_UNSET_VARIABLE is not set"):
        run(shell, "%pb_connect 1 --user ada --password-env PBNB_UNSET_VARIABLE")
    port = run(shell, "srv = %pb_serve Greeter()\nsrv.port")
    run(shell, f"%pb_serve --stop {port}")
    assert text_of(shell, shell.user_ns["srv"]) == f"<pbnb Server: Greeter on 127.0.0.1:{port}, stopped>"
    with pytest.raises(ConnectionRefusedError, match=f"no pbnb server at 127.0.0.1:{port}"):
        run(shell, f"%pb_connect {port}")


def test_a_served_object_can_cap_its_connections(shell):
    run(shell, "srv = %pb_serve Greeter() --max-connections 1\nfirst = %pb_connect {srv.port}")
    with pytest.raises(pb.ServerFull, match=r"is full \(max_connections=1\)"):
        run(shell, "%pb_connect {srv.port}")
    assert run(shell, "await first.remote.hello('ada')") == "hello ada"
    with pytest.raises(ValueError, match="at least 1"):
        run(shell, "%pb_serve Greeter() --max-connections 0")


def test_status_and_disconnect(shell, capsys):
    run(shell, "srv = %pb_serve Greeter()\na = %pb_connect 127.0.0.1:{srv.port}\nb = %pb_connect {srv.port}")
    capsys.readouterr()
    run(shell, "%pb_status")
    port = shell.user_ns["srv"].port
    status = capsys.readouterr().out
    assert f"127.0.0.1:{port}  Greeter  2 connection(s)" in status
    assert f"127.0.0.1:{port}  connected  root: Greeter" in status
    assert f"127.0.0.1:{port}#2  connected  root: Greeter" in status
    assert "held (remote objects we reference)  2" in status
    with pytest.raises(UsageError, match="say which connection"):
        run(shell, "%pb_disconnect")
    run(shell, "%pb_disconnect b")  # by the variable that holds its reference
    assert not shell.user_ns["b"].connected and shell.user_ns["a"].connected
    run(shell, "%pb_disconnect --all\n%pb_serve --stop")
    assert not shell.user_ns["a"].connected
    run(shell, "%pb_status")
    assert "servers: none\nconnections: none" in capsys.readouterr().out


def test_every_magic_has_help(shell):
    for name in ("pb_serve", "pb_connect", "pb_disconnect", "pb_status"):
        doc = shell.find_line_magic(name).__doc__
        assert doc and doc.strip(), name
    assert "--port" in shell.find_line_magic("pb_serve").__doc__
    assert "--password-env" in shell.find_line_magic("pb_connect").__doc__
    assert "--all" in shell.find_line_magic("pb_disconnect").__doc__


def test_importing_pbnb_does_not_import_the_notebook_stack():
    code = (
        "import sys, pbnb, pbnb.cred\n"
        "from pbnb.notebook import WritableCacheable\n"
        "heavy = sorted(m for m in ('IPython', 'ipywidgets', 'traitlets', 'ipykernel') if m in sys.modules)\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "[]\n"


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_help_and_completion_tell_the_remote_truth(shell):
    run(shell, "srv = %pb_serve Greeter()\nroot = %pb_connect 127.0.0.1:{srv.port}")
    _, matches = shell.complete("root.remote.nothing_like_this")
    assert matches == []
    with provisionalcompleter():  # IPython's rich completions are provisional API; we opt in
        completions = list(shell.Completer.completions("root.remote.hel", 15))
    assert {(c.text, c.type) for c in completions} == {
        ("root.remote.hello", "remote method"),
        ("root.remote.help_me", "remote method"),
    }

    info = shell.object_inspect("root.remote.hello")
    assert info["found"] and info["definition"].endswith("hello(name: str) -> str")
    assert info["docstring"].startswith("remote method hello(name: str) -> str on the peer")
    missing = shell.object_inspect("root.remote.nothing_like_this")
    offers = "has no remote method 'nothing_like_this' (it offers: boom, hello, help_me)"
    assert offers in missing["docstring"]
    assert "Awaitable" not in (missing["definition"] or "")

    for magic in ("pb_serve", "pb_connect", "pb_disconnect", "pb_status"):
        text = shell.object_inspect(f"%{magic}")["docstring"]
        assert "``" not in text and "%%" not in text, text
