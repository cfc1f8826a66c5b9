"""Keep the API reference complete, and link the prose to it.

- A public module, class, function, method or property without a docstring is a
  warning (an error in the strict build): every public name is documented.
- A signature names classes by the module that defines them (``pbnb.aio.client.Client``);
  such references go to the public entry (``pbnb.Client``). A reference to a pbnb name
  that is not in the reference is a warning. Names from other libraries are shown
  unlinked: the build runs offline, without other projects' inventories.
- Public data that a module imports (``pbnb.current_perspective``) is documented from
  the ``#:`` comment above its definition; autodoc alone shows only a module's own data.
- Inline code in the prose that names an entry, such as ``pb.RemoteReference.callRemote``,
  ``pbnb.cred.Portal`` or ``Root``, links to it. Code that starts with ``pb.`` or
  ``pbnb.`` but names nothing in pbnb is a warning: a renamed method, a typo. (On a
  page whose title mentions Twisted, ``pb.`` may be Twisted's module, so there only
  ``pbnb.`` names are checked.)
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
import types
from collections.abc import Iterator

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.pycode import ModuleAnalyzer
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_refnode

logger = logging.getLogger(__name__)

#: autodoc object kinds that must have a docstring (attributes and data may go without).
NEEDS_DOCSTRING = {
    "module",
    "class",
    "exception",
    "function",
    "method",
    "property",
    "classmethod",
    "staticmethod",
}

#: Inline code that may name an API entry: a dotted name, maybe called, as in ``pb.connect(host, port)``.
CODE_NAME = re.compile(r"(?:await\s+)?(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\(.*\))?", re.S)


def report_missing_docstring(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if what in NEEDS_DOCSTRING and not any(line.strip() for line in lines):
        logger.warning(
            "%s has no docstring (every public name needs one)", name, type="api", subtype="docstring"
        )


def document_imported_data(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """Append a ``py:data`` entry for each public non-callable an API module imports."""
    if what != "module" or name not in app.config.api_modules:
        return
    own_docs = ModuleAnalyzer.for_module(name).find_attr_docs()
    for attr in getattr(obj, "__all__", ()):
        value = getattr(obj, attr)
        if callable(value) or isinstance(value, types.ModuleType) or ("", attr) in own_docs:
            continue
        doc = definition_doc(attr, value)
        if not doc:
            logger.warning(
                "%s.%s has no docstring: add a #: comment above its definition", name, attr, type="api"
            )
        lines += ["", f".. py:data:: {attr}", f"   :module: {name}", ""]
        lines += [f"   {line}" for line in doc]


def definition_doc(attr: str, value: object) -> list[str]:
    """The ``#:`` comment above the assignment that defines ``attr`` in a pbnb module, or []."""
    for module_name, module in sorted(sys.modules.items()):
        if module_name.split(".")[0] != "pbnb" or getattr(module, attr, None) is not value:
            continue
        doc = ModuleAnalyzer.for_module(module_name).find_attr_docs().get(("", attr))
        if doc:
            return [line for line in doc if line]
    return []


@functools.cache
def public_names(api_modules: tuple[str, ...]) -> dict[int, str]:
    """id(object) -> its public qualified name, from the API modules' ``__all__`` (first module wins)."""
    names: dict[int, str] = {}
    for module_name in api_modules:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if isinstance(obj, type) or callable(obj):
                names.setdefault(id(obj), f"{module_name}.{name}")
    return names


def import_path(path: str) -> object | None:
    """The object a dotted path names (a module, then attributes), or None."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for part in parts[split:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def public_target(app: Sphinx, target: str) -> str | None:
    """The documented name for a path to a pbnb object (``pbnb.aio.client.Client`` -> ``pbnb.Client``)."""
    if not target.startswith("pbnb."):
        return None
    names = public_names(tuple(app.config.api_modules))
    parts = target.split(".")
    for split in range(len(parts), 1, -1):  # the longest prefix that is a public object, then its members
        public = names.get(id(import_path(".".join(parts[:split]))))
        if public is not None:
            return ".".join([public, *parts[split:]])
    return None


def find_entry(env: BuildEnvironment, name: str) -> tuple[str, str] | None:
    """(docname, anchor) of the API entry documented as ``name``."""
    domain = env.domains["py"]
    if name in domain.objects:
        entry = domain.objects[name]
        return entry.docname, entry.node_id
    if name in domain.modules:
        module = domain.modules[name]
        return module.docname, module.node_id
    return None


def resolve_internal_path(
    app: Sphinx, env: BuildEnvironment, node: addnodes.pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """``missing-reference``: pbnb's internal paths go to the public entry; other libraries stay unlinked."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    if not target.startswith("pbnb."):
        return contnode  # a builtin, or another library's name: shown, not linked (no inventories offline)
    public = target if find_entry(env, target) else public_target(app, target)
    entry = find_entry(env, public) if public else None
    if entry is None:
        if import_path(target) is None:
            logger.warning("%s does not exist", target, location=node, type="api", subtype="ref")
        return contnode  # an internal class in a public signature: shown, not linked
    return make_refnode(app.builder, node["refdoc"], entry[0], entry[1], contnode, public)


class ApiModule(SphinxDirective):
    """``.. api-module:: NAME``: autodoc's page for one of ``api_modules``, each object documented once.

    A name the module shares with an earlier API module is documented there, and listed
    here with a link to it.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        modules = tuple(self.config.api_modules)
        if name not in modules:
            raise self.error(f"{name} is not in api_modules (docs/conf.py)")
        first = public_names(modules)
        module = importlib.import_module(name)
        elsewhere = {
            attr: first[id(getattr(module, attr))]
            for attr in module.__all__
            if first.get(id(getattr(module, attr)), f"{name}.{attr}") != f"{name}.{attr}"
        }
        lines = [f".. automodule:: {name}"]
        if elsewhere:
            links = ", ".join(f":py:obj:`{attr} <{target}>`" for attr, target in elsewhere.items())
            lines = [f"Also importable from ``{name}``: {links}.", "", *lines]
            lines += [f"   :exclude-members: {', '.join(elsewhere)}"]
        return self.parse_text_to_nodes("\n".join(lines))


class LinkCodeToApi(SphinxPostTransform):
    """Inline code naming an API entry becomes a link to it."""

    default_priority = 100

    def run(self, **kwargs: object) -> None:
        prefixes = [("pb.", "pbnb."), ("pbnb.", "pbnb.")]
        for node in list(self.code_outside_links()):
            match = CODE_NAME.fullmatch(node.astext())
            if match is None:
                continue
            name = match["name"]
            candidates = [new + name.removeprefix(old) for old, new in prefixes if name.startswith(old)]
            qualified = bool(candidates)
            if not qualified:  # a member of the class being described, or a top-level name
                candidates = [f"{cls}.{name}" for cls in self.enclosing_classes(node)] + [f"pbnb.{name}"]
            entry = next((found for candidate in candidates if (found := self.entry_for(candidate))), None)
            if entry is None:
                if qualified and import_path(candidates[0]) is None and not self.about_twisted(name):
                    self.warn_unknown(node)
                continue
            if entry[0] == self.env.docname and self.inside_own_entry(node, entry[1]):
                continue
            ref = make_refnode(self.app.builder, self.env.docname, entry[0], entry[1], node.deepcopy())
            ref["classes"].append("api-link")
            node.replace_self(ref)

    @staticmethod
    def enclosing_classes(node: nodes.Node) -> list[str]:
        """The classes whose API entries ``node`` sits in, innermost first (``pbnb.Client``)."""
        classes = []
        parent = node.parent
        while parent is not None:
            if isinstance(parent, addnodes.desc) and parent.get("objtype") in ("class", "exception"):
                signature = next(parent.findall(addnodes.desc_signature), None)
                if signature is not None and signature.get("ids"):
                    classes.append(signature["ids"][0])
            parent = parent.parent
        return classes

    def entry_for(self, name: str) -> tuple[str, str] | None:
        """The entry documenting ``name``, or the object it names under another public name."""
        entry = find_entry(self.env, name)
        if entry is None and (public := public_target(self.app, name)) is not None:
            entry = find_entry(self.env, public)
        return entry

    def code_outside_links(self) -> Iterator[nodes.literal]:
        for node in self.document.findall(nodes.literal):
            parents = []
            parent = node.parent
            while parent is not None:
                parents.append(parent)
                parent = parent.parent
            if not any(
                isinstance(p, (nodes.reference, addnodes.desc_signature, nodes.title)) for p in parents
            ):
                yield node

    @staticmethod
    def inside_own_entry(node: nodes.Node, anchor: str) -> bool:
        """True in the description of the entry itself: no link from an entry to itself."""
        parent = node.parent
        while parent is not None:
            if isinstance(parent, addnodes.desc):
                return any(anchor in sig.get("ids", ()) for sig in parent.findall(addnodes.desc_signature))
            parent = parent.parent
        return False

    def about_twisted(self, name: str) -> bool:
        """On a page about Twisted (its title says so), ``pb.`` may be Twisted's module."""
        title = self.env.titles.get(self.env.docname)
        return name.startswith("pb.") and title is not None and "Twisted" in title.astext()

    def warn_unknown(self, node: nodes.literal) -> None:
        logger.warning(
            "`%s` names nothing in pbnb (a typo, or a renamed name)",
            node.astext(),
            location=node,
            type="api",
            subtype="code",
        )


def setup(app: Sphinx) -> dict[str, object]:
    app.add_config_value("api_modules", [], "env", types=[list])
    app.connect("autodoc-process-docstring", report_missing_docstring)
    app.connect("autodoc-process-docstring", document_imported_data)
    app.connect("missing-reference", resolve_internal_path)
    app.add_directive("api-module", ApiModule)
    app.add_post_transform(LinkCodeToApi)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
