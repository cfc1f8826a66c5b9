"""Run a notebook top to bottom in a fresh kernel: for the docs build and the notebook tests alike."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute_notebook(
    path: Path,
    notebook: nbformat.NotebookNode | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> nbformat.NotebookNode:
    """Run every cell of ``path`` (or of ``notebook``, read from it) in a new python3 kernel.

    The kernel runs in the notebook's folder, with ``env`` (default: this process's
    environment). Saved outputs are cleared first, so every output comes from this run.
    Returns the executed notebook; a cell that raises stops the run with nbclient's
    ``CellExecutionError``.
    """
    path = Path(path).resolve()
    notebook = without_outputs(notebook or nbformat.read(path, as_version=4))
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(**({"env": env} if env is not None else {}))
    return notebook


def fresh_machine_env(home: str) -> dict[str, str]:
    """This process's environment as a new machine would have it: ``home`` as HOME, no ``PBNB_DEMO``.

    Without ``PBNB_DEMO`` each notebook starts its own demo broker.
    """
    return {**{key: value for key, value in os.environ.items() if key != "PBNB_DEMO"}, "HOME": home}


def without_outputs(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` with the outputs and execution counts of its code cells cleared (in place)."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return notebook


def stderr_of(notebook: nbformat.NotebookNode) -> list[str]:
    """The text the code cells wrote to stderr."""
    return [
        output.text
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.get("name") == "stderr"
    ]
