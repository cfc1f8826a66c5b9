"""The ``%pb_*`` magics: serve, connect, disconnect and inspect from a notebook.

``%load_ext pbnb`` registers them, the display of references and call
futures, and the input transformer that awaits the async magics (see
``_loop``). Servers and connections live on the kernel's own loop, so the
peer's messages are handled while no cell runs.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..aio.client import Client, connect
from ..aio.server import Server, serve
from ..core.flavors import IPBRoot, Referenceable
from ..core.reference import RemoteReference
from . import _traceback, _widgets
from ._complete import RemoteMethodMatcher
from ._log import panel
from ._loop import AwaitMagics, start
from ._proxy import proxy_url
from ._status import StatusReport, server_bundle


def parse_address(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare port (on 127.0.0.1) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"expected HOST:PORT with a port from 1 to 65535, got {text!r}")
    return host, int(port)


@dataclass
class Connected:
    """One connection opened by ``%pb_connect``: its client, the reference it returned, how to redo it."""

    client: Client
    reference: RemoteReference
    user: str | None
    redo: Any = None  # a coroutine function making the connection again, if it can be made unattended


@magics_class
class PBMagics(Magics):
    """Serve, connect to and inspect Perspective Broker objects from IPython."""

    def __init__(self, shell: Any):
        super().__init__(shell)
        self.servers: dict[str, Server] = {}
        self.connections: dict[str, Connected] = {}

    # ------------------------------------------------------------- serving

    @magic_arguments()
    @argument(
        "expr", nargs="*", help="A Root, a Referenceable (or its class: one per connection) or a Portal"
    )
    @argument("--host", default="127.0.0.1", help="The interface to listen on (default 127.0.0.1)")
    @argument("--port", type=int, default=0, help="The port to listen on (default 0: pick a free one)")
    @argument("--max-connections", type=int, default=None, help="Serve at most this many clients at once")
    @argument("--stop", action="store_true", help="Stop the server at EXPR (HOST:PORT or PORT)")
    @line_magic
    def pb_serve(self, line: str) -> Any:
        """Serve an object from inside this kernel; returns the Server.

        %pb_serve Greeter() --port 8787 evaluates the expression in the
        notebook's namespace and serves it; several servers may run at once.
        %pb_serve --stop 8787 stops one (%pb_status lists them).
        """
        args = parse_argstring(self.pb_serve, line)
        expr = " ".join(args.expr)
        if args.stop:
            return start(self._stop_server(self._server_name(expr)), "%pb_serve --stop")
        if not expr:
            raise UsageError("%pb_serve needs an expression to serve, e.g. %pb_serve MyRoot()")
        root = self._evaluate(expr)
        serving = self._serve(root, args.host, args.port, args.max_connections)
        return start(serving, f"%pb_serve {expr}")

    @property
    def _namespace(self) -> dict[str, Any]:
        """The user's variables (a magic always runs in a shell)."""
        assert self.shell is not None
        return self.shell.user_ns

    def _evaluate(self, expr: str) -> Any:
        root = eval(expr, self._namespace)  # the user typed it in their own notebook
        servable = (
            isinstance(root, Referenceable)
            or isinstance(root, IPBRoot)
            or (isinstance(root, type) and issubclass(root, Referenceable))
        )
        if not servable:
            raise UsageError(
                f"{expr} is a {type(root).__qualname__}; serve a Root, a Referenceable "
                "(or a Referenceable class, for one root per connection) or a Portal"
            )
        return root

    async def _serve(self, root: Any, host: str, port: int, max_connections: int | None) -> Server:
        server = await serve(root, host=host, port=port, max_connections=max_connections)
        self.servers[f"{server.host}:{server.port}"] = server
        if url := proxy_url(server.port):
            print(f"pbnb: through jupyter-server-proxy at {url} (pbnb.connect(URL), with a token)")
        return server

    def _server_name(self, text: str) -> str:
        if not text and len(self.servers) == 1:
            return next(iter(self.servers))
        for name in self.servers:
            if text in (name, name.rpartition(":")[2]):
                return name
        known = ", ".join(self.servers) or "none"
        raise UsageError(f"no server {text!r} to stop (running: {known})")

    async def _stop_server(self, name: str) -> None:
        await self.servers.pop(name).close()

    # ---------------------------------------------------------- connecting

    @magic_arguments()
    @argument("address", help="Where the server listens: HOST:PORT (or just PORT, on 127.0.0.1)")
    @argument("--user", "-u", help="Log in as this user and return the avatar instead of the root")
    @argument(
        "--password-env",
        metavar="VAR",
        help="Read the password from environment variable VAR (default: ask, without echo)",
    )
    @argument("--name", help="A name for this connection in %%pb_status and %%pb_disconnect")
    @argument("--timeout", type=float, default=30.0, help="Seconds to wait for the server (default 30)")
    @line_magic
    def pb_connect(self, line: str) -> Any:
        """Connect to a PB server; returns the root reference (or, with --user, the avatar).

        root = %pb_connect localhost:8787 makes root usable on the next line.
        With --user ada the password is asked for without echo, or read from
        the variable named by --password-env; never give it on the line.
        """
        args = _parse_connect(self.pb_connect, line)
        host, port = parse_address(args.address)
        password = self._password(args) if args.user else None
        name = self._connection_name(args.name or (f"{args.user}@" if args.user else "") + f"{host}:{port}")
        work = self._connect(name, host, port, args.user, password, args.timeout)

        def redo() -> Any:
            again = self._password(args) if args.user else None
            return self._reconnect(name, host, port, args.user, again, args.timeout)

        # Without a prompt a button can connect again; with one, it cannot.
        can_redo = args.user is None or args.password_env
        return start(self._remember(work, name, redo if can_redo else None), f"%pb_connect {args.address}")

    async def _remember(self, work: Any, name: str, redo: Any) -> RemoteReference:
        reference = await work
        self.connections[name].redo = redo
        if redo is not None:
            _widgets.reconnectors[reference] = redo
        return reference

    async def _reconnect(
        self, name: str, host: str, port: int, user: str | None, password: str | None, timeout: float
    ) -> RemoteReference:
        """Open ``name``'s connection again; variables that held the old reference get the new one."""
        old = self.connections.pop(name, None)
        if old is not None and old.client.connected:
            await old.client.close()
        reference = await self._connect(name, host, port, user, password, timeout)
        self.connections[name].redo = old.redo if old is not None else None
        if old is not None:
            if old.redo is not None:
                _widgets.reconnectors[reference] = old.redo
            namespace = self._namespace
            for variable, value in list(namespace.items()):
                if value is old.reference and not variable.startswith("_"):
                    namespace[variable] = reference
        return reference

    @staticmethod
    def _password(args: Any) -> str:
        if args.password_env:
            password = os.environ.get(args.password_env)
            if password is None:
                raise UsageError(f"environment variable {args.password_env} is not set")
            return password
        return getpass.getpass(f"password for {args.user}@{args.address}: ")

    def _connection_name(self, wanted: str) -> str:
        name, number = wanted, 1
        while name in self.connections:
            number += 1
            name = f"{wanted}#{number}"
        return name

    async def _connect(
        self, name: str, host: str, port: int, user: str | None, password: str | None, timeout: float
    ) -> RemoteReference:
        client = await connect(host, port, timeout=timeout)
        try:
            if user is None:
                reference = await client.getRootObject()
            else:
                from ..cred import UsernamePassword

                reference = await client.login(UsernamePassword(user, password or ""))
            await _widgets.describe(reference)  # names for tab completion, type for display
        except BaseException:
            await client.close()
            raise
        self.connections[name] = Connected(client, reference, user)
        return reference

    # -------------------------------------------------------- disconnecting

    @magic_arguments()
    @argument(
        "name", nargs="?", help="The connection's name (see %%pb_status) or a variable holding its reference"
    )
    @argument("--all", action="store_true", help="Close every connection opened with %%pb_connect")
    @line_magic
    def pb_disconnect(self, line: str) -> Any:
        """Close a connection opened with %pb_connect (or all of them with --all)."""
        args = parse_argstring(self.pb_disconnect, line)
        if args.all:
            names = list(self.connections)
        elif args.name:
            names = [self._find_connection(args.name)]
        elif len(self.connections) == 1:
            names = list(self.connections)
        else:
            raise UsageError(f"say which connection to close, or --all (open: {self._open_names()})")
        return start(self._disconnect(names), "%pb_disconnect")

    def _find_connection(self, text: str) -> str:
        if text in self.connections:
            return text
        value = self._namespace.get(text)
        if isinstance(value, RemoteReference):
            for name, connected in self.connections.items():
                if connected.client.broker is value.broker:
                    return name
        raise UsageError(f"no connection {text!r} (open: {self._open_names()})")

    def _open_names(self) -> str:
        return ", ".join(self.connections) or "none"

    async def _disconnect(self, names: list[str]) -> None:
        for name in names:
            await self.connections.pop(name).client.close()

    # -------------------------------------------------------------- status

    @line_magic
    def pb_status(self, line: str = "") -> None:
        """Show this kernel's servers, connections, references, caches and pbnb's log, kept up to date."""
        from IPython.display import display

        display(StatusReport(self))

    async def close_all(self) -> None:
        """Close every connection and stop every server (on unload)."""
        await self._disconnect(list(self.connections))
        for name in list(self.servers):
            await self._stop_server(name)


def _parse_connect(magic: Any, line: str) -> Any:
    # A stray password must not be echoed back in an error message.
    if re.search(r"(^|\s)--password(=|\s|$)", line):
        raise UsageError("never put a password on the line: use the prompt or --password-env VAR")
    try:
        return parse_argstring(magic, line)
    except UsageError as exc:
        if "unrecognized arguments" not in str(exc):
            raise
        options = " ".join(word for word in line.split() if word.startswith("-"))
        raise UsageError(f"unrecognized option among: {options} (see %pb_connect?)") from None


# "--password" must not pass for an abbreviation of "--password-env", nor any other prefix.
for _magic in (PBMagics.pb_serve, PBMagics.pb_connect, PBMagics.pb_disconnect):
    _magic.parser.allow_abbrev = False


def load_ipython_extension(shell: Any) -> None:
    """Register the magics, the displays and the awaiting transformer in ``shell``."""
    if any(isinstance(t, AwaitMagics) for t in shell.input_transformers_post):
        return
    shell.register_magics(PBMagics)
    shell.input_transformers_post.append(AwaitMagics(shell))
    shell.Completer.custom_matchers.append(RemoteMethodMatcher(shell))
    _widgets.register_formatters(shell)
    shell.display_formatter.mimebundle_formatter.for_type(Server, server_bundle)
    panel.install()
    _traceback.install(shell)


def unload_ipython_extension(shell: Any) -> None:
    """Close what the magics opened and remove everything ``load_ipython_extension`` added."""
    magics = shell.magics_manager.registry.pop(PBMagics.__name__, None)
    shell.input_transformers_post[:] = [
        t for t in shell.input_transformers_post if not isinstance(t, AwaitMagics)
    ]
    matchers = shell.Completer.custom_matchers
    matchers[:] = [m for m in matchers if not isinstance(m, RemoteMethodMatcher)]
    _widgets.unregister_formatters(shell)
    shell.display_formatter.mimebundle_formatter.pop(Server, None)
    panel.uninstall()
    _traceback.uninstall(shell)
    for kind, names in PBMagics.magics.items():
        for name in names:
            shell.magics_manager.magics[kind].pop(name, None)
    if magics is not None:
        start(magics.close_all(), "closing pbnb connections")
