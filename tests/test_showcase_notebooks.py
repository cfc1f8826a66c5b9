"""Every notebook in notebooks/ runs top to bottom, headless, in a fresh kernel with no errors."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient
from showcase_helpers import NOTEBOOKS

pytestmark = pytest.mark.slow


def execute_notebook(path):
    """Run every cell of ``path`` in a new python3 kernel; return the executed notebook."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return notebook


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
def test_notebook_runs_clean(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PBNB_DEMO", raising=False)  # each notebook starts its own demo broker
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    executed = execute_notebook(path)
    outputs = [output for cell in executed.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    stderr = [output.text for output in outputs if output.get("name") == "stderr"]
    assert not stderr, stderr
    assert all(cell.execution_count for cell in executed.cells if cell.cell_type == "code")
