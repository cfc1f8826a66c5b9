"""Live caches shared by several broker processes through Redis (``pip install 'pbnb[redis]'``).

Mark a ``SharedCacheable`` with ``share(obj, name)`` in the module you serve,
then run each broker with ``python -m pbnb serve MOD:ROOT --backplane
redis://host:port/0`` (or ``await connect(url)`` in your own program). Every
process keeps a replica of the object, follows one change log in Redis, and
fans each change out to its own observers. See ``docs/scaling.md``.

Importing this package does not import ``redis``: ``connect`` does.
"""

from __future__ import annotations

from ..errors import BackplaneUnavailable
from .backplane import Backplane, connect
from .shared import SharedCacheable, registered, share

__all__ = ["Backplane", "BackplaneUnavailable", "SharedCacheable", "connect", "registered", "share"]
