"""Shared pytest set-up. Area-specific fixtures live in each area's own helper module."""

import gc
import logging
import sys
from pathlib import Path

import pytest

logging.getLogger("pbnb").setLevel(logging.DEBUG)

# docs/_ext holds notebook_run, how the docs build and the notebook tests both run notebooks.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs" / "_ext"))


def _freeze_what_lives() -> None:
    """Move every object alive now out of the garbage collector's sight.

    What collecting imported (IPython, Playwright, hypothesis: 250,000 objects)
    and what a module's tests leave for good (jedi after a completion test:
    100,000 more) live until the run ends. Frozen, they are no longer walked,
    so the ``gc.collect()`` a test makes to release its own references costs
    what that test allocated. Garbage is collected first, so none is kept.
    """
    gc.collect()
    gc.freeze()


def pytest_collection_finish(session):
    _freeze_what_lives()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if nextitem is None or nextitem.module is not item.module:
        _freeze_what_lives()  # the module's fixtures are gone: what is left stays
