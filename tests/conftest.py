"""Shared pytest set-up. Area-specific fixtures live in each area's own helper module."""

import logging
import sys
from pathlib import Path

logging.getLogger("pbnb").setLevel(logging.DEBUG)

# docs/_ext holds notebook_run, how the docs build and the notebook tests both run notebooks.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs" / "_ext"))
