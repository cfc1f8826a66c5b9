"""The docs and README: every ```python block runs; pages and links are where they should be.

The blocks of one page run in order in one namespace, in a fresh interpreter,
with top-level ``await`` allowed (as in a notebook cell). A block that is only a
fragment opts out with the line ``<!-- docs-test: skip -->`` right before its
fence; docs/index.md documents the marker.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
from showcase_helpers import DOCS, REPO

import pbnb as pb

SKIP_MARKER = "<!-- docs-test: skip -->"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)

# Runs in the subprocess: argv[1:] are (first line, source) pairs of one page's blocks.
RUNNER = """
import ast, asyncio, inspect, sys
loop = asyncio.new_event_loop()
namespace = {"__name__": "__main__"}
blocks = sys.argv[2:]
for line, source in zip(blocks[0::2], blocks[1::2]):
    code = compile(source, f"{sys.argv[1]}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        loop.run_until_complete(result)
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of each ```python block not preceded by the skip marker."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.strip() != SKIP_MARKER:
            blocks.append((text.count("\n", 0, match.start()) + 2, match[1]))
    return blocks


def test_block_extraction_honours_the_skip_marker():
    page = "```python\nx = 1\n```\n\n<!-- docs-test: skip -->\n```python\nfragment(\n```\n"
    assert python_blocks(page) == [(2, "x = 1\n")]


README = REPO / "README.md"
PAGES = [page for page in [*DOCS, README] if python_blocks(page.read_text())]


@pytest.mark.slow  # a fresh interpreter per page
@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(REPO)) for page in PAGES])
def test_python_blocks_run(page, tmp_path):
    args = [str(part) for block in python_blocks(page.read_text()) for part in block]
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, page.name, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, f"{page.name}:\n{result.stderr}"


def test_core_pages_exist_and_are_linked_from_the_index():
    index = (REPO / "docs" / "index.md").read_text()
    for name in ("concepts", "tutorial", "porting", "security", "api", "protocol", "architecture"):
        assert (REPO / "docs" / f"{name}.md").exists(), name
        assert f"({name}.md)" in index, name


def test_readme_opens_with_the_demo_and_test_commands():
    text = README.read_text()
    title, blank, fence, demo, test = text.splitlines()[:5]
    assert title.startswith("# ") and blank == "" and fence == "```bash"
    assert demo.startswith("bash scripts/demo.sh") and test.startswith("bash scripts/test.sh")
    for linked in ("docs/index.md", "benchmarks/README.md", "mybinder.org", "docs/img/live-dashboard.png"):
        assert linked in text
    for notebook in (REPO / "notebooks").glob("*.ipynb"):
        assert f"notebooks/{notebook.name}" in text


def test_security_page_lists_every_limit():
    page = (REPO / "docs" / "security.md").read_text()
    for field in dataclasses.fields(pb.Limits):
        assert f"| `{field.name}` |" in page, f"docs/security.md does not list the {field.name} limit"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")


@pytest.mark.parametrize(
    "page", [*DOCS, README], ids=[str(page.relative_to(REPO)) for page in [*DOCS, README]]
)
def test_relative_links_point_at_files_that_exist(page):
    targets = [target for target in LINK.findall(page.read_text()) if "://" not in target]
    missing = [target for target in targets if not (page.parent / target).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"
