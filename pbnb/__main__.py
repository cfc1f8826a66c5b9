"""``python -m pbnb``: serve an object, run the demo broker, manage a password file.

* ``serve MODULE:ATTR``: serve a Root, a Portal, or a factory called per connection
  (``--certfile``/``--keyfile`` for TLS, ``--max-connections N`` to cap the clients served at once,
  ``--keepalive SECONDS`` and ``--handshake-timeout SECONDS`` for servers facing strangers;
  ``--backplane redis://...`` to share the module's ``SharedCacheable`` objects with other broker
  processes, ``--workers N`` to run N of them on this port: see ``docs/scaling.md``).
* ``demo``: the demo broker the notebooks and Binder use (``pbnb.demo``).
* ``passwd``: edit a password file for ``FilePasswordChecker`` (``pbnb.cred.passwd``).

Servers run on uvloop when it is installed (``pip install 'pbnb[speed]'``), else
on asyncio's own loop; they log which at start. They print
``pbnb: serving ... on HOST:PORT`` on stdout once they listen (so
``--port 0`` is usable from scripts), log connections on stderr, and stop
cleanly, exiting 0, on Ctrl-C, on SIGTERM, or when a served object closes the
server (``pb.current_server().close()`` in a remote method).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pbnb as pb
from pbnb.errors import BackplaneUnavailable


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["passwd"]:
        # Its options belong to pbnb.cred.passwd, which may not parse like ours.
        from pbnb.cred.passwd import main as passwd_main

        return passwd_main(argv[1:]) or 0
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.command == "demo":
        from pbnb.demo_service import make_demo_service  # not pbnb.demo: that imports traitlets

        return _run(make_demo_service(), "the pbnb demo", args)
    if args.workers > 1:
        return _supervise(argv, args)
    try:
        target = load_target(args.target)
    except (ValueError, ImportError, AttributeError) as exc:
        print(f"pbnb serve: {exc}", file=sys.stderr)
        return 2
    return _run(target, args.target, args)


def _supervise(argv: list[str], args: argparse.Namespace) -> int:
    from pbnb.workers import Supervisor

    # The workers get our arguments but these, which the supervisor sets for them.
    child_args = _without(argv[1:], {"--workers": True, "--host": True, "--port": True})
    supervisor = Supervisor(args.target, child_args, args.host, args.port, args.workers)
    try:
        return asyncio.run(supervisor.run())
    except OSError as exc:
        print(f"pbnb: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _without(argv: list[str], options: dict[str, bool]) -> list[str]:
    """``argv`` less the given options (``--opt value`` or ``--opt=value``; True: takes a value)."""
    kept: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.partition("=")[0]
        if name in options:
            skip = options[name] and "=" not in item
            continue
        kept.append(item)
    return kept


def load_target(spec: str) -> Any:
    """Import ``MODULE:ATTR`` (ATTR may be dotted) and return the attribute."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"expected MODULE:ATTR, like myapp.server:root, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # the `pbnb` script, unlike `python -m`, does not add it
    target: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        target = getattr(target, attr)
    return target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pbnb", description="pbnb: Perspective Broker tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve MODULE:ATTR (a Root, a Portal or a factory)")
    serve.add_argument("target", metavar="MODULE:ATTR")
    demo = commands.add_parser("demo", help="run the demo broker used by the notebooks")
    for command in (serve, demo):
        command.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
        command.add_argument(
            "--port", type=_port, default=pb.portno, help=f"port, 0 picks a free one ({pb.portno})"
        )
        command.add_argument("--certfile", help="serve over TLS with this PEM certificate (chain)")
        command.add_argument("--keyfile", help="the certificate's private key, if not in --certfile")
        command.add_argument(
            "--max-connections",
            type=_positive,
            metavar="N",
            help="serve at most N clients at once; more are told the server is full (no cap)",
        )
        command.add_argument(
            "--keepalive",
            type=_seconds,
            metavar="SECONDS",
            help="ping each client this often and drop one silent for three pings (off)",
        )
        command.add_argument(
            "--websocket-origin",
            action="append",
            metavar="ORIGIN",
            help="a web page origin (https://host:port, or *) whose pages may connect over WebSocket; "
            "repeatable (same-origin pages only)",
        )
        command.add_argument(
            "--websocket-path", metavar="PATH", help="take WebSocket clients on this path only (any)"
        )
        command.add_argument(
            "--no-websocket",
            dest="websocket",
            action="store_false",
            help="take raw PB clients only, not WebSocket ones on the same port",
        )
        command.add_argument(
            "--handshake-timeout",
            type=_seconds,
            default=10.0,
            metavar="SECONDS",
            help="drop a client that has not completed the handshake by then (10)",
        )
    serve.add_argument(
        "--backplane",
        metavar="URL",
        help="share the served module's SharedCacheables through Redis "
        "(redis://[:password@]host:port/db, rediss:// for TLS; needs pbnb[redis])",
    )
    serve.add_argument(
        "--backplane-history",
        type=_positive,
        default=10_000,
        metavar="N",
        help="changes each shared log keeps for processes catching up (10000)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="run N broker processes sharing the port, each with its own connections (1)",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="listen with SO_REUSEPORT, so other processes may serve the same port",
    )
    commands.add_parser("passwd", help="edit a password file (see: passwd --help)")
    return parser


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, not {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.certfile is None:
        if args.keyfile is not None:
            raise ValueError("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.certfile, args.keyfile)
    return context


def _run(root: Any, label: str, args: argparse.Namespace) -> int:
    try:
        tls = _tls_context(args)
    except (ValueError, OSError, ssl.SSLError) as exc:
        print(f"pbnb: cannot use the TLS certificate: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=_loop_factory(tls)) as runner:
            runner.run(_serve_until_stopped(root, label, args, tls))
    except _NoBackplane as exc:
        print(f"pbnb: {exc}", file=sys.stderr)
        return exc.status
    except OSError as exc:
        print(f"pbnb: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _loop_factory(tls: ssl.SSLContext | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the ``speed`` extra), else None: asyncio's.

    Not for TLS: the server starts TLS on a connection it already reads with a
    buffered protocol, which uvloop's ``start_tls`` refuses ("empty buffer in get_buffer").
    """
    if tls is not None:
        logging.getLogger("pbnb.serve").info("event loop: asyncio (TLS)")
        return None
    try:
        import uvloop
    except ImportError:
        logging.getLogger("pbnb.serve").info("event loop: asyncio (pip install 'pbnb[speed]' for uvloop)")
        return None
    logging.getLogger("pbnb.serve").info("event loop: uvloop %s", uvloop.__version__)
    return uvloop.new_event_loop


class _NoBackplane(Exception):
    """--backplane could not be used; ``status`` is the exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


async def _connect_backplane(args: argparse.Namespace) -> Any:
    """The backplane named by ``--backplane``, sharing every object the module marked, or None."""
    if getattr(args, "backplane", None) is None:
        return None
    try:
        from pbnb.backplane import connect

        return await connect(args.backplane, history=args.backplane_history)
    except ImportError as exc:
        raise _NoBackplane(str(exc), 2) from None
    except ValueError as exc:
        raise _NoBackplane(f"--backplane: {exc}", 2) from None
    except BackplaneUnavailable as exc:
        raise _NoBackplane(str(exc), 1) from None


async def _serve_until_stopped(
    root: Any, label: str, args: argparse.Namespace, tls: ssl.SSLContext | None
) -> None:
    # Shared state is loaded before the first client can ask for it.
    backplane = await _connect_backplane(args)
    try:
        server = await pb.serve(
            root,
            host=args.host,
            port=args.port,
            ssl=tls,
            max_connections=args.max_connections,
            reuse_port=getattr(args, "reuse_port", False),
            keepalive=args.keepalive,
            handshake_timeout=args.handshake_timeout,
            websocket=args.websocket,
            websocket_path=args.websocket_path,
            websocket_origins=args.websocket_origin,
        )
    except BaseException:
        if backplane is not None:
            await backplane.close()
        raise
    over = " over TLS" if tls else ""
    print(f"pbnb: serving {label}{over} on {server.host}:{server.port}", flush=True)
    if server.websocket is not None:
        scheme = "wss" if tls else "ws"
        print(
            f"pbnb: WebSocket clients: {scheme}://{server.host}:{server.port}{args.websocket_path or '/'}",
            flush=True,
        )
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, server.close)
    try:
        # A signal closes the server, and so may the served objects (pb.current_server().close()).
        await server.wait_closed()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await server.close()
        if backplane is not None:
            await backplane.close()
    print("pbnb: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
