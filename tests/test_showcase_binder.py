"""THE BINDER CHECK: the binder/ files alone make an environment where every notebook runs.

Binder itself cannot run in CI, so this does the closest thing: a fresh virtualenv
(no system site-packages) gets only what ``binder/requirements.txt`` (and
``binder/postBuild``, if there is one) installs, then ``binder/start`` launches the
demo broker and execs a command that runs every notebook headless against it. This
is the slow showcase test (a pip install); everything else about notebooks is
checked faster in test_showcase_notebooks.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from showcase_helpers import NOTEBOOKS, REPO

pytestmark = pytest.mark.slow

# Runs inside the binder environment, after the notebooks, against the broker
# binder/start launched: the two-kernel notebook leaves the shared counter at 4342
# (+5, a write of 4242, +100), and the broker's log shows the connections the
# dashboard (1), the two-kernel notebook (2) and the streams notebook (1) opened: so
# they used this broker rather than starting their own.
CHECK_BROKER = """
import asyncio, os, re, pbnb as pb, pbnb.demo

async def main():
    host, port = os.environ["PBNB_DEMO"].rsplit(":", 1)
    async with await pb.connect(host, int(port)) as client:
        counter = await (await client.getRootObject()).callRemote("counter")
        print("counter", counter.value)
    async with await pb.connect(os.environ["PBNB_DEMO_WS"]) as client:  # the same broker over WebSocket
        counter = await (await client.getRootObject()).callRemote("counter")
        print("ws counter", counter.value)
asyncio.run(main())
log = open(os.environ["PBNB_DEMO_LOG"]).read()
print("connections", len(re.findall(r"connection from \\S+$", log, re.M)))
"""


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.timeout(1200)
def test_binder_files_alone_build_an_environment_that_runs_every_notebook(tmp_path):
    venv = tmp_path / "binder-env"
    run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    bin_dir = venv / "bin"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "VIRTUAL_ENV": str(venv),
        "TMPDIR": str(tmp_path),
        **{key: value for key, value in os.environ.items() if key.startswith("PIP_")},
    }
    pip_install = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"]
    run(pip_install, cwd=REPO, env=env, timeout=900)
    if (REPO / "binder" / "postBuild").exists():
        run(["bash", "binder/postBuild"], cwd=REPO, env=env, timeout=600)
    # The environment really is separate: pbnb comes from the new virtualenv.
    where = run([str(bin_dir / "python"), "-c", "import pbnb, sys; print(sys.prefix)"], cwd=tmp_path, env=env)
    assert where.stdout.strip() == str(venv)

    notebooks = [str(path) for path in NOTEBOOKS]
    command = f"jupyter execute {' '.join(notebooks)} && python -c '{CHECK_BROKER}'"
    process = subprocess.Popen(
        ["binder/start", "bash", "-c", command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the broker binder/start leaves behind is in this group
    )
    try:
        out, err = process.communicate(timeout=600)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, f"{out[-3000:]}\n{err[-5000:]}"
    assert "pbnb demo broker on 127.0.0.1:" in err
    assert "counter 4342" in out and "ws counter 4342" in out, out
    assert "connections 6" in out, out  # the four above, and the check's own two
