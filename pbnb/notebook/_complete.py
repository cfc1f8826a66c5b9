"""Tab completion of remote method names: ``root.remote.he<TAB>``.

IPython's completer will not evaluate a property of an arbitrary object, so
it cannot see ``ref.remote``'s names by itself. This matcher reads the names
the peer gave when the reference was described; for a reference never
described, it asks the peer in the background, so the next TAB knows.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from IPython.core.completer import SimpleCompletion

from ..core.reference import RemoteReference
from ._loop import loop_of, spawn
from ._widgets import describe

_REMOTE_ATTRIBUTE = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.remote\.(\w*)$")


class RemoteMethodMatcher:
    """An IPython matcher (API v2) for ``<reference>.remote.<name>``: the remote names, and only them.

    Each completion's type says whether the method is async on the peer; the
    other matchers are silenced there, so nothing local is offered as remote.
    """

    matcher_identifier = "pbnb.remote_methods"
    matcher_api_version = 2

    def __init__(self, shell: Any):
        self.shell = shell
        self.__qualname__ = type(self).__qualname__  # IPython names matchers by it

    def __call__(self, context: Any) -> dict[str, Any]:
        match = _REMOTE_ATTRIBUTE.search(context.text_until_cursor)
        if match is None or not context.token.endswith(match[0]):
            return {"completions": []}
        path, prefix = match.groups()
        ref = self._lookup(path)
        if not isinstance(ref, RemoteReference):
            return {"completions": []}
        names = dir(ref.remote)
        if not names and ref.connected:
            spawn(loop_of(ref), lambda: describe(ref))
        completions = []
        for name in names:
            if name.startswith(prefix):
                method = ref.broker.method_description(ref, name) or {}
                kind = "async remote method" if method.get("is_async") else "remote method"
                completions.append(SimpleCompletion(f"{path}.remote.{name}", type=kind))
        return {"completions": completions, "suppress": True}

    def _lookup(self, path: str) -> Any:
        first, *rest = path.split(".")
        value = self.shell.user_ns.get(first)
        for name in rest:
            # Static lookup: completing must never run a property or __getattr__.
            try:
                value = inspect.getattr_static(value, name)
            except AttributeError:
                return None
        return value
