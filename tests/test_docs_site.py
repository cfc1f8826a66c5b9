"""The documentation site: scripts/docs.sh builds it strictly, and what a reader needs is in it.

One full build (every notebook executed afresh) is shared by the module; a second,
quick build of a copy of docs/ with deliberate mistakes checks that the strict build
refuses each kind of mistake with a message that says what to do.
"""

from __future__ import annotations

import functools
import http.server
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import sync_playwright
from showcase_helpers import NOTEBOOKS, REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

_spec = importlib.util.spec_from_file_location("docs_conf", REPO / "docs" / "conf.py")
assert _spec is not None and _spec.loader is not None
conf = importlib.util.module_from_spec(_spec)  # docs/conf.py: api_modules, repository_url
_spec.loader.exec_module(conf)


def docs_sh(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(cwd / "scripts" / "docs.sh"), *args],
        capture_output=True,
        text=True,
        timeout=840,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    # A folder of our own: pytest prunes old tmp_path folders, those of other runs included.
    with tempfile.TemporaryDirectory(prefix="pbnb-site-") as folder:
        out = Path(folder) / "site"
        result = docs_sh("--out", str(out))
        assert result.returncode == 0, f"the strict docs build failed:\n{result.stdout}\n{result.stderr}"
        assert "WARNING: " not in result.stderr  # Sphinx's; a kernel's "[IPKernelApp] WARNING | ..." is noise
        yield out


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pbnb-docs-") as folder:
        yield Path(folder)


def test_the_nav_follows_the_index_page(site: Path) -> None:
    """Every page is in the sidebar, grouped under index.md's section headings."""
    html = (site / "index.html").read_text()
    sidebar = html[html.index('class="sidebar-tree"') :]
    for heading in ("Learn", "Use", "Reference"):
        assert f'<span class="caption-text">{heading}</span>' in sidebar, heading
    pages = [page.relative_to(REPO / "docs").with_suffix(".html") for page in (REPO / "docs").glob("*.md")]
    pages += [Path("notebooks") / f"{notebook.stem}.html" for notebook in NOTEBOOKS]
    for page in pages:
        if page.name != "index.html":
            assert f'href="{page.as_posix()}"' in sidebar, f"{page} is not in the nav"


def test_every_public_name_has_an_api_entry(site: Path) -> None:
    """Each name in an API module's __all__ has an entry: there, or at the first module that exports it."""
    html = "".join(page.read_text() for page in (site / "api").glob("*.html"))
    first: dict[int, str] = {}
    for module_name in conf.api_modules:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            entry = first.setdefault(id(getattr(module, name)), f"{module_name}.{name}")
            assert f'id="{entry}"' in html, f"{module_name}.{name} has no API entry"
    assert 'id="pbnb.RemoteReference.callRemote"' in html
    assert "Twisted" in (site / "api" / "pbnb.html").read_text()  # the module docstring is shown


def test_inline_code_in_the_prose_links_to_the_api(site: Path) -> None:
    links = re.findall(r'<a class="([^"]*api-link[^"]*)" href="([^"]+)"', (site / "porting.html").read_text())
    targets = {href for _, href in links}
    assert "api/pbnb.html#pbnb.connect" in targets
    assert targets & {"api/cred.html#pbnb.cred.Portal", "api/pbnb.html#pbnb.Portal"}  # `pbnb.cred.Portal`
    tutorial = (site / "tutorial.html").read_text()
    assert (
        'href="api/pbnb.html#pbnb.RemoteReference.callRemote"' in tutorial
        or 'href="api/pbnb.html#pbnb.Root"' in tutorial
    )


def test_links_that_leave_docs_go_to_the_page_or_the_repository(site: Path) -> None:
    index = (site / "index.html").read_text()
    assert f'href="{conf.repository_url}/blob/main/benchmarks/README.md"' in index
    assert f'href="{conf.repository_url}/tree/main/examples/chat"' in index
    assert 'href="notebooks/01-quickstart.html"' in index  # ../notebooks/01-quickstart.ipynb is a page


def test_notebook_pages_show_the_outputs_of_a_fresh_run(site: Path) -> None:
    for notebook in NOTEBOOKS:
        html = (site / "notebooks" / f"{notebook.stem}.html").read_text()
        assert "cell_output" in html, f"{notebook.name} shows no outputs"
    quickstart = (site / "notebooks" / "01-quickstart.html").read_text()
    assert "hello ada, you are guest number 1" in quickstart
    assert "DeadReferenceError:" in quickstart  # printed by a late cell: the run went to the end


def test_the_site_has_search(site: Path) -> None:
    assert (site / "search.html").exists()
    index = (site / "searchindex.js").read_text()
    terms = json.loads(index[index.index("(") + 1 : index.rindex(")")])["terms"]
    assert {"callremot", "perspect", "cacheabl"} <= set(terms)  # stemmed words from the prose and the API


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_search_in_a_browser_finds_the_api_entry(site: Path) -> None:
    """Typing in the sidebar's search box, in headless chromium, lists callRemote's API entry."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu", "--headless=new"]
            )
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{server.server_port}/index.html")
                page.fill("input[name=q]", "callRemote")
                page.press("input[name=q]", "Enter")
                results = "#search-results ul.search li a"
                page.wait_for_selector(results, timeout=60_000)
                hrefs = page.eval_on_selector_all(results, "links => links.map(a => a.getAttribute('href'))")
            finally:
                browser.close()
    finally:
        server.shutdown()
    assert "api/pbnb.html#pbnb.RemoteReference.callRemote" in hrefs, hrefs


def test_the_strict_build_refuses_each_kind_of_mistake(workdir: Path) -> None:
    """A small docs/ with one of each mistake, built by the real script and config: it fails, naming each."""
    for name in (".venv", "pbnb", "scripts"):
        (workdir / name).symlink_to(REPO / name)
    docs = workdir / "docs"
    shutil.copytree(
        REPO / "docs",
        docs,
        ignore=lambda folder, names: [n for n in names if n.endswith((".md", "notebooks"))],
    )
    (docs / "index.md").write_text(
        "# Mistakes\n\n## Reference\n\n- [undocumented](api/undocumented.md), [broken](broken.ipynb)\n"
        "- `pbnb.RemoteReference.callRemot` and [a page that is gone](gone.md)\n"
    )
    (docs / "orphan.md").write_text("# Orphan\n\nNot linked from the index.\n")
    (workdir / "undocumented_api.py").write_text(
        '"""A module."""\n\n__all__ = ["f"]\n\n\ndef f():\n    pass\n'
    )
    (docs / "api" / "undocumented.md").write_text(
        "# Undocumented\n\n```{eval-rst}\n.. automodule:: undocumented_api\n```\n"
    )
    with (docs / "conf.py").open("a") as conf_file:
        conf_file.write('\napi_modules = ["pbnb", "undocumented_api"]\n')
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Broken"),
            nbformat.v4.new_code_cell("raise ValueError('boom')"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.write(notebook, docs / "broken.ipynb")
    result = docs_sh("--out", str(workdir / "out"), cwd=workdir)
    assert result.returncode != 0
    for expected in (
        "orphan.md is not in the nav: link it from docs/index.md",
        "undocumented_api.f has no docstring",
        "broken.ipynb failed to run: ValueError: boom",
        "`pbnb.RemoteReference.callRemot` names nothing in pbnb",
        "gone.md",
    ):
        assert expected in result.stderr, f"{expected!r} not in:\n{result.stderr}"
    assert not (workdir / "out").exists()  # a failed build leaves no site behind
