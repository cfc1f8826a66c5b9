"""Helpers for the notebook tests: a broker in another process and a real kernel.

The kernel is driven with jupyter_client directly, because nbclient waits for
each cell's reply before sending the next and so never reproduces "Run All",
which queues every cell at once.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def child_env(home: Path) -> dict[str, str]:
    """An environment for child processes: a private HOME, the fixtures importable."""
    path = os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "HOME": str(home),
        "IPYTHONDIR": str(home / ".ipython"),
        "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
        "JUPYTER_DATA_DIR": str(home / ".local/share/jupyter"),
        "JUPYTER_RUNTIME_DIR": str(home / ".local/share/jupyter/runtime"),
        "PYTHONPATH": path,
    }


class BrokerProcess:
    """``broker.py`` in a child process: ``.port``, and ``command(line)`` for its replies."""

    def __init__(self, home: Path):
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "broker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(home),
            cwd=HERE,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.reply(timeout=30)
        assert first.startswith("PORT "), first
        self.port = int(first.split()[1])

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self._lines.put(line.strip())

    def reply(self, timeout: float = 60) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"broker said nothing for {timeout}s") from None

    def command(self, line: str) -> str:
        self.process.stdin.write(line + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return self.reply()

    def close(self) -> None:
        """End the broker by closing its stdin (killed if it lingers); safe to call twice."""
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class Kernel:
    """A real IPython kernel in a child process, with helpers to run cells and read iopub."""

    def __init__(self, home: Path):
        from jupyter_client import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=child_env(home), cwd=str(HERE))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run_all(self, cells: list[str], timeout: float = 60) -> list[dict[str, Any]]:
        """Queue every cell at once, like "Run All"; return each cell's outputs, in order.

        Each result has ``text`` (stdout), ``errors`` (ename: evalue) and ``data``
        (display and result bundles); iopub messages are kept in ``self.seen``.
        """
        ids = [self.client.execute(cell) for cell in cells]
        results = {msg_id: {"text": "", "errors": [], "data": []} for msg_id in ids}
        idle: set[str] = set()
        self.seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(idle) < len(ids):
            msg = self.next_iopub(deadline)
            self.seen.append(msg)
            parent = msg["parent_header"].get("msg_id")
            if parent not in results:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                results[parent]["text"] += content["text"]
            elif kind == "error":
                results[parent]["errors"].append(f"{content['ename']}: {content['evalue']}")
            elif kind in ("display_data", "execute_result"):
                results[parent]["data"].append(content["data"])
            elif kind == "status" and content["execution_state"] == "idle":
                idle.add(parent)
        return [results[msg_id] for msg_id in ids]

    def run_answering(self, cell: str, answer: str, timeout: float = 60) -> tuple[dict[str, Any], str]:
        """Run one cell that asks for input; answer it. Return (the input request, stdout)."""
        msg_id = self.client.execute(cell, allow_stdin=True)
        request = self.client.get_stdin_msg(timeout=timeout)
        self.client.input(answer)
        text, deadline = "", time.monotonic() + timeout
        while True:
            msg = self.next_iopub(deadline)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                text += msg["content"]["text"]
            elif msg["msg_type"] == "error":
                raise AssertionError(f"{msg['content']['ename']}: {msg['content']['evalue']}")
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return request["content"], text

    def next_iopub(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out waiting for the kernel")
        try:
            return self.client.get_iopub_msg(timeout=remaining)
        except queue.Empty:
            raise AssertionError("timed out waiting for the kernel") from None

    def wait_for(self, predicate: Any, timeout: float = 60) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read iopub until ``predicate(msg)``; return that message and every one before it."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            msg = self.next_iopub(deadline)
            if predicate(msg):
                return msg, before
            before.append(msg)

    def send_comm_update(self, comm_id: str, state: dict[str, Any]) -> None:
        """Do what a browser does when a person edits a widget."""
        content = {"comm_id": comm_id, "data": {"method": "update", "state": state, "buffer_paths": []}}
        msg = self.client.session.msg("comm_msg", content)
        self.client.shell_channel.send(msg)

    def close(self) -> None:
        """Stop the channels and the kernel."""
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def widget_models(bundles: list[dict[str, Any]]) -> list[str]:
    """The widget model ids displayed in a cell's outputs."""
    mime = "application/vnd.jupyter.widget-view+json"
    return [data[mime]["model_id"] for data in bundles if mime in data]
