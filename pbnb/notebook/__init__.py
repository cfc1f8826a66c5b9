"""pbnb in Jupyter: magics, widgets for remote objects, and traitlets-backed caches.

``%load_ext pbnb`` registers the magics. Names load on first use, so a server
that only imports ``pbnb.notebook`` does not import IPython or ipywidgets.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "PBMagics": "._magics",
    "Pending": "._loop",
    "ReferenceWidget": "._widgets",
    "FutureWidget": "._widgets",
    "StreamWidget": "._stream_widget",
    "link": "._link",
    "TraitCache": "._traits",
    # In the core since they need nothing from Jupyter; still importable from here.
    "WritableCacheable": "pbnb.core.observing",
    "ReadOnlyField": "pbnb.errors",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'pbnb.notebook' has no attribute {name!r}")
    return getattr(import_module(where, __name__), name)


def __dir__() -> list[str]:
    return __all__
