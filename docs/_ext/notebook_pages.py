"""Notebooks as pages, with outputs from a fresh run.

Each notebook is executed as Sphinx reads it, by ``notebook_run.execute_notebook``, the
same function ``tests/test_showcase_notebooks.py`` runs them with; myst-nb then renders
the executed copy. Nothing is cached: a build always shows what the notebooks do now.
A cell that fails, or output on stderr, is a warning (an error in a strict build).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from notebook_run import execute_notebook, fresh_machine_env, stderr_of, without_outputs
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)


def execute_on_read(app: Sphinx, docname: str, source: list[str]) -> None:
    """Replace a notebook's source with its freshly executed copy before myst-nb renders it."""
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".ipynb":
        return
    if not app.config.notebook_pages_execute:  # a quick build: code without outputs, never stale ones
        source[0] = nbformat.writes(without_outputs(nbformat.reads(source[0], as_version=4)))
        return
    try:
        with tempfile.TemporaryDirectory(prefix="pbnb-notebook-home-") as home:
            notebook = execute_notebook(path, env=fresh_machine_env(home))
    except CellExecutionError as error:
        problems = [f"failed to run: {error.ename}: {error.evalue}"]
        notebook = without_outputs(nbformat.reads(source[0], as_version=4))  # show nothing stale
    except (CellTimeoutError, DeadKernelError) as error:
        problems = [f"failed to run: {error}"]
        notebook = without_outputs(nbformat.reads(source[0], as_version=4))
    else:
        problems = [f"wrote to stderr: {text.strip()}" for text in stderr_of(notebook)]
    for problem in problems:
        logger.warning("%s %s", path.name, problem, location=docname, type="notebook")
    source[0] = nbformat.writes(notebook)


def setup(app: Sphinx) -> dict[str, object]:
    # -D notebook_pages_execute=0: render the notebooks without outputs (a quick look at the prose)
    app.add_config_value("notebook_pages_execute", True, "env", types=[bool])
    app.connect("source-read", execute_on_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
