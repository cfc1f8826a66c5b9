"""The connection of one broker process to Redis, and the shared caches it follows.

``redis`` (the ``pbnb[redis]`` extra) is imported here only when ``connect``
runs, so ``import pbnb`` and ``import pbnb.backplane`` work without it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import BackplaneUnavailable
from .follower import ATTACH, BLOCK_MS, PUBLISH, Follower
from .shared import SharedCacheable, check_name, registered, registry_followers

log = logging.getLogger("pbnb.backplane")

DEFAULT_HISTORY = 10_000
DEFAULT_MAX_CHANGE = 4 * 1024 * 1024
DEFAULT_MAX_PENDING = 100_000


class Backplane:
    """This process's link to Redis: the shared caches it follows, by name.

    Made by ``await pbnb.backplane.connect(url)``; an async context manager.
    ``token`` names this process in the shared logs.
    """

    def __init__(
        self,
        redis: Any,
        url: str,
        *,
        prefix: str,
        history: int,
        max_change: int,
        max_pending: int,
        sync_timeout: float,
    ):
        import redis.exceptions as errors

        self.redis = redis
        self.url = url
        self.prefix = prefix
        self.history = history
        self.max_change = max_change
        self.max_pending = max_pending
        self.sync_timeout = sync_timeout
        self.token = secrets.token_hex(6)
        #: Failures that mean "Redis is away for now": followers retry after them.
        self.transient: tuple[type[BaseException], ...] = (
            errors.ConnectionError,
            errors.TimeoutError,
            OSError,
            asyncio.TimeoutError,
        )
        self._no_script = errors.NoScriptError
        self._scripts = {"attach": ATTACH, "publish": PUBLISH}
        self._sha: dict[str, str] = {}
        self._followers: dict[str, Follower] = {}

    @property
    def shared(self) -> dict[str, SharedCacheable]:
        """The objects this backplane shares, by name."""
        return {name: follower.obj for name, follower in self._followers.items()}

    def in_step(self, name: str) -> bool:
        """Whether the named cache has synced with Redis and is following its log now."""
        return self._followers[name].synced.is_set()

    def attach(self, obj: SharedCacheable, name: str) -> None:
        """Attach ``obj`` under ``name`` and start loading its state; do not wait for it.

        From now on its changes go to the shared log (they wait in order until
        the state is loaded); ``in_step(name)`` says when it is.
        """
        if not isinstance(obj, SharedCacheable):
            raise TypeError(f"only a SharedCacheable can be shared, not {type(obj).__qualname__}")
        check_name(name)
        if name in self._followers:
            raise ValueError(f"{name!r} is already shared on this backplane")
        if obj.shared_name is not None:
            raise ValueError(f"{obj!r} is already shared as {obj.shared_name!r}")
        follower = Follower(self, obj, name)
        self._followers[name] = follower
        object.__setattr__(obj, "_pb_link", follower)
        follower.start()

    async def share(self, obj: SharedCacheable, name: str) -> None:
        """Attach ``obj`` under ``name``: load (or store) its state, then follow its log.

        Returns once the object is in step with Redis; raises
        ``BackplaneUnavailable`` if that takes longer than ``sync_timeout``.
        """
        self.attach(obj, name)
        follower = self._followers[name]
        try:
            await asyncio.wait_for(follower.synced.wait(), self.sync_timeout)
        except TimeoutError:
            await self._detach(name)
            raise BackplaneUnavailable(
                f"could not load the shared cache {name!r} from {self.url} within {self.sync_timeout} s"
            ) from None

    async def _detach(self, name: str) -> None:
        follower = self._followers.pop(name)
        await follower.stop()
        object.__delattr__(follower.obj, "_pb_link")

    async def flush(self) -> None:
        """Wait until every change made in this process so far is in Redis."""
        await asyncio.gather(*(follower.flush() for follower in self._followers.values()))

    async def close(self, timeout: float = 5.0) -> None:
        """Send what waits (for up to ``timeout`` seconds), then stop following.

        The objects become plain caches of this process again.
        """
        if self.attach in registry_followers:
            registry_followers.remove(self.attach)
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            for name, follower in self._followers.items():
                if follower.waiting:
                    log.warning("shared cache %r: %d changes never reached Redis", name, follower.waiting)
        for name in list(self._followers):
            await self._detach(name)
        await self.redis.aclose()

    async def __aenter__(self) -> Backplane:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<pbnb.backplane.Backplane {self.url} sharing {sorted(self._followers)}>"

    # ------------------------------------------------------------- scripts

    async def script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run one of our Lua scripts, loading it first if this Redis does not know it."""
        sha = await self._load(name)
        try:
            return await self.redis.evalsha(sha, len(keys), *keys, *args)
        except self._no_script:  # Redis restarted and forgot it
            return await self.redis.evalsha(await self._load(name, again=True), len(keys), *keys, *args)

    async def publish_batch(self, keys: list[str], batch: list[list[Any]]) -> list[Any]:
        """Run ``publish`` for each argument list in one round trip; errors come back as values."""
        sha = await self._load("publish")
        pipe = self.redis.pipeline(transaction=False)
        for args in batch:
            pipe.evalsha(sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
        if any(isinstance(result, self._no_script) for result in results):
            # Redis forgot the script (it restarted): nothing of this batch ran from
            # the first such error on, so the caller's next round sends the rest.
            await self._load("publish", again=True)
            first = next(i for i, result in enumerate(results) if isinstance(result, self._no_script))
            return results[:first]
        return results

    async def _load(self, name: str, again: bool = False) -> str:
        if again or name not in self._sha:
            self._sha[name] = await self.redis.script_load(self._scripts[name])
        return self._sha[name]


async def connect(
    url: str,
    *,
    objects: dict[str, SharedCacheable] | None = None,
    prefix: str = "pbnb",
    history: int = DEFAULT_HISTORY,
    max_change: int = DEFAULT_MAX_CHANGE,
    max_pending: int = DEFAULT_MAX_PENDING,
    timeout: float = 10.0,
    **redis_options: Any,
) -> Backplane:
    """Connect to Redis at ``url`` and share ``objects`` (by default, all that ``share()`` marked).

    ``url`` is ``redis://[:password@]host:port/db``, ``rediss://`` for TLS, or
    ``unix:///path``. ``history`` is about how many changes each log keeps
    (a process away longer than that reloads the snapshot); ``max_change``
    caps one change's size in bytes and ``max_pending`` the changes that may
    wait for Redis; both are refused with ``LimitExceeded`` where they are made.
    Other keywords go to ``redis.asyncio.from_url`` (``ssl_ca_certs``, ...).
    Raises ``BackplaneUnavailable`` if Redis cannot be reached within ``timeout``.
    """
    try:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError:
        raise ImportError("the Redis backplane needs the redis client: pip install 'pbnb[redis]'") from None
    for option, value in (("history", history), ("max_change", max_change), ("max_pending", max_pending)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{option} must be a positive int, got {value!r}")
    shown = redacted(url)
    options = {
        # pbnb retries itself, knowing which changes arrived: a blind retry could apply one twice.
        "retry": Retry(NoBackoff(), 0),
        "socket_connect_timeout": timeout,
        "socket_timeout": max(timeout, BLOCK_MS / 1000 + 3),  # longer than a blocking read waits
        **redis_options,
    }
    try:
        client = aioredis.from_url(url, **options)
    except ValueError as exc:
        raise ValueError(f"not a Redis URL: {shown} ({exc})") from None
    import redis.exceptions as errors

    try:
        await asyncio.wait_for(client.ping(), timeout)
    except (errors.RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        reason = str(exc) or type(exc).__name__
        raise BackplaneUnavailable(f"cannot reach Redis at {shown}: {reason}") from None
    backplane = Backplane(
        client,
        shown,
        prefix=prefix,
        history=history,
        max_change=max_change,
        max_pending=max_pending,
        sync_timeout=timeout,
    )
    try:
        for name, obj in (registered() if objects is None else objects).items():
            await backplane.share(obj, name)
        if objects is None:
            registry_followers.append(backplane.attach)  # and the objects marked from now on
    except BaseException:
        await backplane.close()
        raise
    log.info("backplane %s: sharing %s", shown, sorted(backplane.shared) or "nothing yet")
    return backplane


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
