"""A real ``redis-server`` for the backplane tests: own loopback port, own directory.

``scripts/setup.sh`` installs Debian's redis-server. Each test starts its own
(``RedisServer.start``), may kill it (SIGKILL, as a crash would) and start it
again on the same port, and stops it in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

needs_redis = pytest.mark.skipif(
    not Path(REDIS_SERVER).exists(), reason="redis-server is not installed (scripts/setup.sh installs it)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """One redis-server process; ``url`` reaches it. ``persistent`` keeps data across restarts."""

    def __init__(self, *, persistent: bool = False, password: str | None = None, tls: Any = None):
        self.port = free_port()
        self.persistent = persistent
        self.password = password
        self.tls = tls  # (certfile, keyfile) to listen with TLS instead of plain TCP
        self.directory = Path(tempfile.mkdtemp(prefix="pbnb-redis-"))
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _arguments(self) -> list[str]:
        arguments = [
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
            "--protected-mode", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            arguments += ["--requirepass", self.password]
        if self.tls:
            certfile, keyfile = self.tls
            arguments += ["--port", "0", "--tls-port", str(self.port)]
            arguments += ["--tls-cert-file", certfile, "--tls-key-file", keyfile, "--tls-auth-clients", "no"]
        else:
            arguments += ["--port", str(self.port)]
        return arguments

    async def start(self, timeout: float = 30.0) -> RedisServer:
        self.process = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            *self._arguments(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await self._wait_ready(timeout)
        return self

    async def _wait_ready(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        log = self.directory / "redis.log"
        while "Ready to accept connections" not in (log.read_text() if log.exists() else ""):
            if self.process.returncode is not None:
                raise RuntimeError(f"redis-server exited: {log.read_text() if log.exists() else ''}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"redis-server did not start in {timeout} s")
            await asyncio.sleep(0.02)

    async def kill(self) -> None:
        """Kill the server as a crash would (no save, connections reset)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        log = self.directory / "redis.log"
        if log.exists():
            log.unlink()  # so the next start waits for its own "ready" line

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    async def stop(self) -> None:
        await self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def redis_server(**options: Any):
    server = RedisServer(**options)
    try:
        yield await server.start()
    finally:
        await server.stop()
