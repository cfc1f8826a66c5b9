"""Shared pytest set-up. Area-specific fixtures live in each area's own helper module."""

import gc
import logging
import sys
from pathlib import Path

logging.getLogger("pbnb").setLevel(logging.DEBUG)

# docs/_ext holds notebook_run, how the docs build and the notebook tests both run notebooks.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs" / "_ext"))


def pytest_collection_finish(session):
    """Freeze what collecting imported (IPython, Playwright, hypothesis, ...: 250,000 objects).

    They live until the run ends anyway. Frozen, the garbage collector no longer
    walks them, so each ``gc.collect()`` a test makes to release its references
    costs what the test itself allocated, not a second under a loaded machine.
    """
    gc.collect()
    gc.freeze()
