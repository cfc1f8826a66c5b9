"""SharedCacheable: a WritableCacheable whose state and changes live in Redis.

Every broker process that serves the object holds a local replica: an
instance of the same class, attached to a backplane under one name. A change
made in any process (the owner's code assigning a field, ``update()``,
``notify()``, or a peer writing through its copy) is not broadcast at once:
it is appended to the shared log in Redis, and every process, the one that
made it included, applies the log in its one order and fans each change out
to its own observers. So every observer of every process sees the same
changes in the same order, each once.

The replica needs nothing of Redis itself. It routes every change it makes
(the core's ``send_change`` hook) to the link's ``publish``; the link,
``pbnb.backplane.follower``, assigns the fields of each change it reads from
the log and fans it out with the core's ``send_packed``. Unattached, the
object is an ordinary WritableCacheable of one process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.observing import CallArguments, WritableCacheable

if TYPE_CHECKING:
    from .follower import Follower

#: The objects ``share()`` marked in this process, by name: what ``connect()`` attaches.
_registered: dict[str, SharedCacheable] = {}
#: What to call with (obj, name) for each object marked later: the ``attach`` of every
#: backplane that follows the marked objects (``connect()`` without ``objects=``).
registry_followers: list[Callable[[SharedCacheable, str], None]] = []


class SharedCacheable(WritableCacheable):
    """A cache whose ``observed_fields`` are shared by every process attached to one backplane.

    Fields are last-writer-wins: the log's order decides. The owner's code
    reads its own writes at once; a new observer starts from the state the
    log has reached in this process, so it never sees a change twice. The
    values of fields and notifications must be plain data (numbers, text,
    bytes, containers, dates): a reference means nothing to another process.
    ``notify_each`` (arguments per perspective) is refused once attached.
    """

    __slots__ = ("_pb_link",)
    _pb_link: Follower  # set while attached (see Backplane.share)

    def _link(self) -> Follower | None:
        try:
            return self._pb_link
        except AttributeError:
            return None

    @property
    def shared_name(self) -> str | None:
        """The name this object is shared under in Redis, or None if it is not attached."""
        link = self._link()
        return None if link is None else link.name

    def getStateToCacheFor(self, perspective: Any) -> Any:
        """The observed fields as far as this process has applied the shared log."""
        link = self._link()
        if link is None:
            return super().getStateToCacheFor(perspective)
        return dict(link.state)

    def send_change(self, name: str, args: tuple, kwargs: dict[str, Any], skip: Any = None) -> int:
        """Attached, append the change to the shared log (observers hear it from there); else send it."""
        link = self._link()
        if link is None:
            return super().send_change(name, args, kwargs, skip)
        try:
            link.publish(name, args, kwargs, skip)
        except BaseException:
            # Refused where it was made: the assignment that led here must not
            # linger in this one process.
            for field, value in link.local_fields(name, args).items():
                object.__setattr__(self, field, value)
            raise
        return len(self._watchers())

    def notify_each(self, name: str, arguments_for: Callable[[Any], CallArguments]) -> int:
        """Per-perspective arguments stay in one process: refused once attached."""
        if self._link() is not None:
            raise TypeError(
                f"{type(self).__qualname__} is shared: every process sends the same change to "
                "every observer, so notify_each (arguments per perspective) cannot be used"
            )
        return super().notify_each(name, arguments_for)


def share(obj: SharedCacheable, name: str) -> SharedCacheable:
    """Mark ``obj`` to be shared under ``name`` by the backplane this process connects; return it.

    ``pbnb.backplane.connect(url)`` (and ``python -m pbnb serve --backplane``)
    attaches every object marked so, loading its state from Redis (or storing
    this process's state there if Redis has none yet). An object marked once
    that backplane is connected (a room made at run time) is attached at once:
    its changes are shared from now on, and its state follows Redis's as soon as
    it is loaded.
    """
    if not isinstance(obj, SharedCacheable):
        raise TypeError(f"only a SharedCacheable can be shared, not {type(obj).__qualname__}")
    check_name(name)
    other = _registered.get(name)
    if other is not None and other is not obj:
        raise ValueError(f"{name!r} is already shared by {other!r}")
    _registered[name] = obj
    for attach in list(registry_followers):
        attach(obj, name)
    return obj


def registered() -> dict[str, SharedCacheable]:
    """A snapshot of the objects ``share()`` marked in this process."""
    return dict(_registered)


def check_name(name: Any) -> None:
    """A shared name is a non-empty str without braces (they delimit it in the Redis keys)."""
    if not isinstance(name, str) or not name or "{" in name or "}" in name:
        raise ValueError(f"a shared name is a non-empty str without braces, not {name!r}")
