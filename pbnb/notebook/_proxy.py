"""Where a kernel's broker is reachable through jupyter-server-proxy, when that is installed.

jupyter-server-proxy forwards ``{base_url}proxy/{port}/`` of the Jupyter server to
``localhost:{port}``, WebSocket included, and a pbnb server takes WebSocket
clients on its port: so from outside the container, through JupyterHub, Binder or
any proxy in front of Jupyter, a kernel's broker is at that URL (with a token).
"""

from __future__ import annotations

import importlib.util
import os


def proxy_url(port: int) -> str | None:
    """The WebSocket URL (or, on a hub, the path) that reaches ``port``; None without the proxy."""
    if importlib.util.find_spec("jupyter_server_proxy") is None:
        return None
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")  # JupyterHub and Binder: /user/NAME/
    if prefix:  # the hub's public host is not known inside the kernel: a path on it
        return f"{prefix.rstrip('/')}/proxy/{port}/"
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    for info in list_running_servers():
        url = str(info["url"]).rstrip("/")  # includes the base_url
        return f"{'wss' if url.startswith('https') else 'ws'}{url[url.index(':') :]}/proxy/{port}/"
    return None
