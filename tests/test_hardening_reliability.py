"""The short reliability run (``scripts/reliability.py --short``) passes every row.

The full run behind ``docs/reliability.md`` is the same script without
``--short``; this keeps the script working and its claims true in CI.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_short_reliability_run_passes_every_row():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reliability.py"), "--short"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert len(rows) >= 19, result.stdout
    assert all("| pass: " in row for row in rows), result.stdout
    soak = rows[0]
    assert soak.startswith("| soak: 50 clients")
    assert "0 wrong, 0 client errors" in soak and "0 entries, 0 Items alive, 0 cache observers" in soak
    for kind in (
        "limit: max_frame",
        "limit: max_string_len",
        "limit: max_depth",
        "limit: max_container_len",
        "limit: max_inbound_calls",
        "limit: max_references",
        "limit: max_caches",
        "limit: failed logins",
        "SIGKILL",
        "reset",
        "stops reading",
        "1 byte every",
        "silent peer",
        "garbage",
        "mutated",
        "idle",
    ):
        assert any(kind in row for row in rows), f"no row for {kind}"
