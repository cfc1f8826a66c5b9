"""Helpers for the showcase tests: run ``python -m pbnb`` in a subprocess, find notebooks."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
DOCS = sorted((REPO / "docs").rglob("*.md"))
_ADDRESS = re.compile(rb"on (\S+):(\d+)")


class PbnbProcess:
    """``python -m pbnb ARGS`` running in a subprocess, with the address it printed."""

    def __init__(self, process: asyncio.subprocess.Process, host: str, port: int):
        self.process = process
        self.host = host
        self.port = port

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None, timeout: float = 30) -> PbnbProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pbnb",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
            cwd=REPO,
        )
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
        match = _ADDRESS.search(line)
        if match is None:
            process.kill()
            _, err = await process.communicate()
            raise AssertionError(f"pbnb {args} printed {line!r}; stderr: {err.decode()}")
        return cls(process, match[1].decode(), int(match[2]))

    async def stop(self, signum: int, timeout: float = 30) -> tuple[int, str, str]:
        """Send ``signum``; return (exit status, rest of stdout, stderr)."""
        self.process.send_signal(signum)
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        return self.process.returncode, out.decode(), err.decode()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.communicate()
