"""The benchmarks' helper runs (benchmarks.instructions inner runs, benchmarks.profiling) end cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["sequential", "pipelined", "stream"])
@pytest.mark.parametrize("peer", ["raw_asyncio", "pbnb_peer"])
def test_an_inner_run_exits_without_output(peer, workload):
    # A traceback at exit (asyncio cancelling the floor's connection handlers, which
    # Python 3.11's streams then print) reads like a failed measurement.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.instructions", "--inner", peer, workload, "64"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.slow
def test_the_profiler_leaves_no_task_pending():
    """benchmarks.profiling hangs up before its loop goes; the server then closes in order."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.profiling", "tuples", "--count", "100", "--top", "1"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and "===== server" in done.stdout
    assert done.stderr == ""
