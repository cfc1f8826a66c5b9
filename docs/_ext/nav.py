"""The site's nav is docs/index.md: its links, in order, grouped by its ``##`` sections.

A page joins the nav by being linked from index.md (as on GitHub, where index.md is
the table of contents too), so there is no second list to keep in step. A page that
nothing includes fails the strict build with a message that says where to add it.
"""

from __future__ import annotations

import re
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

logger = logging.getLogger(__name__)

LINK = re.compile(r"\]\(([^)\s]+)\)")
SECTION = re.compile(r"^##\s+(.+?)\s*$")


def pages_by_real_path(env: BuildEnvironment) -> dict[Path, str]:
    """Each page's source file (symlinks resolved) -> its docname."""
    return {Path(env.doc2path(docname)).resolve(): docname for docname in env.found_docs}


def linked_pages(text: str, folder: Path, pages: dict[Path, str]) -> list[tuple[str | None, list[str]]]:
    """(section heading, docnames) for the pages ``text`` links to, each page once, in order."""
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    seen: set[str] = set()
    for line in text.splitlines():
        heading = SECTION.match(line)
        if heading:
            sections.append((heading[1], []))
            continue
        for target in LINK.findall(line):
            path = target.split("#", 1)[0]
            if not path or "://" in path or path.startswith("mailto:"):
                continue
            docname = pages.get((folder / path).resolve())
            if docname is not None and docname not in seen:
                seen.add(docname)
                sections[-1][1].append(docname)
    return [(heading, docnames) for heading, docnames in sections if docnames]


def add_nav(app: Sphinx, docname: str, source: list[str]) -> None:
    """Append index.md's links to it as hidden toctrees: that is the nav."""
    if docname != app.config.root_doc:
        return
    env = app.env
    folder = Path(env.doc2path(docname)).parent
    toctrees = []
    for heading, docnames in linked_pages(source[0], folder, pages_by_real_path(env)):
        caption = f":caption: {heading}\n" if heading else ""
        toctrees.append("```{toctree}\n:hidden:\n" + caption + "\n" + "\n".join(docnames) + "\n```\n")
    source[0] += "\n\n" + "\n".join(toctrees)


def report_pages_outside_the_nav(app: Sphinx, env: BuildEnvironment) -> None:
    """Name each page that no toctree includes, and say how to add it."""
    included = set(env.files_to_rebuild).union(*env.included.values())  # by a toctree, or an include
    root = app.config.root_doc
    for docname in sorted(env.found_docs - included - {root}):
        if "orphan" in env.metadata[docname]:
            continue
        logger.warning(
            "%s is not in the nav: link it from docs/%s (the nav follows that page's links)",
            env.doc2path(docname, False),
            env.doc2path(root, False),
            location=docname,
            type="nav",
            subtype="not_included",
        )
        env.metadata[docname]["orphan"] = True  # said once, here, rather than again by Sphinx


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("source-read", add_nav)
    app.connect("env-updated", report_pages_outside_the_nav)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
