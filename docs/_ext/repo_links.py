"""Links from a page to files outside docs/ (``../benchmarks/README.md``, ``../examples/chat/``).

The pages link such files relatively, so the links work when the Markdown is read on
GitHub. On the site, a link to a file that is also a page (the notebooks, through the
``docs/notebooks`` symlink) goes to that page, and a link to any other file or folder of
the repository goes to it in the source repository. A link to a path that does not
exist is left alone, so MyST still reports it.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from nav import pages_by_real_path
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform


class RepositoryLinks(SphinxTransform):
    """Rewrite MyST's links that leave docs/, before Sphinx collects them as downloads."""

    default_priority = 400

    def apply(self) -> None:
        env = self.env
        srcdir = Path(env.srcdir).resolve()
        repo = srcdir.parent
        folder = Path(env.doc2path(env.docname)).parent
        pages = pages_by_real_path(env)
        for node in list(self.document.findall(self.is_local_myst_link)):
            target, anchor = self.link_target(node, folder)
            if target.is_relative_to(srcdir) or not target.is_relative_to(repo) or not target.exists():
                continue
            docname = pages.get(target)
            if docname is not None:
                new: nodes.Element = addnodes.pending_xref(
                    "",
                    refdomain="doc",
                    reftype="myst",
                    reftarget=docname,
                    reftargetid=anchor or None,
                    refdoc=env.docname,
                    refexplicit=node.get("refexplicit", False),
                )
            else:
                kind = "tree" if target.is_dir() else "blob"
                url = f"{self.config.repository_url}/{kind}/{self.config.repository_branch}/"
                url += target.relative_to(repo).as_posix() + (f"#{anchor}" if anchor else "")
                new = nodes.reference("", "", refuri=url, classes=["external"])
            new.extend(node.children)
            new.source, new.line = node.source, node.line
            node.replace_self(new)

    @staticmethod
    def is_local_myst_link(node: nodes.Node) -> bool:
        """A MyST link to a path: a file or folder, or a page outside docs/ (an absolute docname)."""
        if not isinstance(node, (addnodes.pending_xref, addnodes.download_reference)):
            return False
        if node.get("reftype") != "myst":
            return False
        return node.get("refdomain") in (None, "") or node["reftarget"].startswith("/")

    def link_target(self, node: nodes.Element, folder: Path) -> tuple[Path, str]:
        """(the path a link points at, with symlinks resolved; its #anchor or "")."""
        if node.get("refdomain") == "doc":  # MyST dropped the suffix of a page outside docs/
            for suffix in self.config.source_suffix:
                if Path(node["reftarget"] + suffix).exists():
                    return Path(node["reftarget"] + suffix).resolve(), node.get("reftargetid") or ""
            return Path(node["reftarget"]), ""
        path, _, anchor = node["reftarget"].partition("#")
        return (folder / path).resolve(), anchor


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("repository_url", "", "env", types=[str])
    app.add_config_value("repository_branch", "main", "env", types=[str])
    app.add_transform(RepositoryLinks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
