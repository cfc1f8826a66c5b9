"""Sphinx configuration for pbnb's documentation site.

Build it with ``bash scripts/docs.sh`` (``--serve`` to browse it). The prose pages are
Markdown (MyST) in this folder, the API reference comes from the docstrings (autodoc),
the notebooks are executed afresh and rendered as pages (myst-nb). The nav follows
the links of ``index.md``; see ``_ext/nav.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import pbnb  # noqa: E402  (after the path is set, so the build documents this checkout)

# argparse wraps the magics' help to the terminal's width: fix it, so pages don't depend on it.
os.environ["COLUMNS"] = "80"

project = "pbnb"
author = "the pbnb authors"
copyright = "the pbnb authors"
release = version = pbnb.__version__

#: The source repository: links from the pages to files outside docs/ point here.
repository_url = "https://github.com/pbnb/pbnb"
repository_branch = "main"

#: The modules whose public names the API reference documents, in the order the pages show
#: them (a name two of them export links to the first).
api_modules = ["pbnb", "pbnb.cred", "pbnb.aio.blocking", "pbnb.backplane", "pbnb.notebook", "pbnb.demo"]

extensions = [
    "myst_nb",  # Markdown pages (MyST) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "nav",
    "api_reference",
    "repo_links",
    "notebook_pages",
]

exclude_patterns = ["_build", "_ext", "img/*.py", "**.ipynb_checkpoints"]
nitpicky = True  # every cross-reference must resolve (see api_reference.py for annotations)

# Markdown
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # `[x](page.md#a-heading)` works as on GitHub
myst_ref_domains = ["std", "py"]

# Notebooks: notebook_pages.py executes each one as it is read, like the notebook tests do;
# myst-nb only renders the outputs.
nb_execution_mode = "off"
nb_merge_streams = True

# API reference
autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
python_use_unqualified_type_names = True
add_module_names = False

# HTML
html_theme = "furo"
html_title = f"pbnb {release}"
html_static_path: list[str] = []
html_theme_options = {
    "source_repository": repository_url,
    "source_branch": repository_branch,
    "source_directory": "docs/",
    "navigation_with_keys": True,
}
html_show_sourcelink = False
