"""Every notebook in notebooks/ runs top to bottom, headless, in a fresh kernel with no errors.

They also run one after another against one shared demo broker, in any order
(a notebook must not depend on what another left in the shared counter), end
with their connections still live, and are committed without outputs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nbformat
import pytest
from notebook_run import execute_notebook  # docs/_ext: the docs build runs the notebooks the same way
from showcase_helpers import NOTEBOOKS

pytestmark = pytest.mark.slow

# Run after each notebook: which references and live copies are no longer connected.
DEAD_PROBE = """
import pbnb
from pbnb.notebook import TraitCache
print("DEAD", sorted(
    name for name, value in list(globals().items())
    if not name.startswith("_") and isinstance(value, (pbnb.RemoteReference, TraitCache))
    and not value.connected
))
"""
# What a notebook closes on purpose, to show what a dead reference does.
MEANT_TO_BE_DEAD = {
    "01-quickstart": {"spare_root"},
    "02-copies-and-security": {"small_library", "wary_library"},
    "03-login-and-chat": {"bob", "bob_board"},
}


def outputs_of(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def assert_ran_clean(notebook, name):
    outputs = outputs_of(notebook)
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, f"{name}: {errors}"
    stderr = [output.text for output in outputs if output.get("name") == "stderr"]
    assert not stderr, f"{name}: {stderr}"
    assert all(cell.execution_count for cell in notebook.cells if cell.cell_type == "code"), name


def test_there_is_a_notebook_for_each_showcase_topic():
    names = {path.stem.split("-", 1)[1] for path in NOTEBOOKS}
    assert {
        "quickstart",
        "copies-and-security",
        "live-dashboard",
        "two-kernels",
        "porting-from-twisted",
    } <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebooks_are_committed_without_outputs(path):
    raw = json.loads(path.read_text())
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            where = f"{path.name} cell {cell.get('id')}"
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{where} has outputs"
            assert "execution" not in cell["metadata"], f"{where} has timings"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_clean(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PBNB_DEMO", raising=False)  # each notebook starts its own demo broker
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert_ran_clean(execute_notebook(path), path.name)


@pytest.fixture
def shared_demo(tmp_path, monkeypatch):
    """One ``python -m pbnb demo`` for every notebook, as Binder runs it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pbnb", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        match = re.search(r"on (\S+:\d+)", process.stdout.readline())
        assert match, "the demo broker did not start"
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("PBNB_DEMO", match[1])
        yield match[1]
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("order", ["forward", "backward"])
def test_notebooks_run_in_any_order_against_one_demo_broker_and_end_connected(shared_demo, order):
    # Backward puts 05 (which leaves the shared counter at 4342) right before 04's slider.
    paths = NOTEBOOKS if order == "forward" else NOTEBOOKS[::-1]
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(DEAD_PROBE))
        executed = execute_notebook(path, notebook)
        assert_ran_clean(executed, path.name)
        printed = "".join(o.text for o in executed.cells[-1].outputs if o.get("name") == "stdout")
        [probe] = [line for line in printed.splitlines() if line.startswith("DEAD ")]
        dead = set(eval(probe.removeprefix("DEAD ")))
        assert dead <= MEANT_TO_BE_DEAD.get(path.stem, set()), f"{path.name} ends with {dead} dead"
