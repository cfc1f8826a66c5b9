"""One shared cache in one process: publishing its changes and following its log in Redis.

Redis holds, for each name (keys ``<prefix>:{<name>}:...``):

* ``state``, a hash: ``epoch`` (which history this is), ``seq`` and ``last``
  (the sequence number and stream id of the last change the snapshot
  includes), and ``f:<field>`` per field;
* ``log``, a stream of changes (see ``entries``), each numbered ``n`` =
  ``seq`` + 1, trimmed to about ``history`` entries;
* ``origins``, a hash: per process token, the counter of its last change.

Two Lua scripts keep them consistent: ``publish`` checks the epoch, updates
the snapshot, numbers and appends the change and records the origin's counter
in one atomic step; ``attach`` returns the snapshot, first storing the
caller's state if there is none (a new name, or a Redis that lost its data:
a new epoch starts).

A ``Follower`` reads the log from the last entry it applied and expects the
numbers to follow each other. After losing Redis it reads on from there, so
nothing is lost or repeated; a number that jumps (the log was trimmed past
what this process had read) or a new epoch makes it load the snapshot and fan
out the fields that differ as one ``update``. Changes made meanwhile wait in
order and are sent once Redis is back, except those the ``origins`` counter
shows already arrived.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter, deque
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from ..core.observing import same_value
from ..errors import LimitExceeded
from . import entries
from .entries import Change, MalformedEntry

if TYPE_CHECKING:
    from .backplane import Backplane
    from .shared import SharedCacheable

log = logging.getLogger("pbnb.backplane")

#: How long one XREAD waits for news before asking again (ms); well under the socket timeout.
BLOCK_MS = 2000
#: Changes sent to Redis in one pipeline.
BATCH = 256

ATTACH = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local last = '0-0'
  local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #tail > 0 then last = tail[1][1] end
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0, 'last', last)
  redis.call('DEL', KEYS[3])
end
for i = 2, #ARGV, 2 do
  redis.call('HSETNX', KEYS[1], 'f:' .. ARGV[i], ARGV[i + 1])
end
return redis.call('HGETALL', KEYS[1])
"""

PUBLISH = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then
  return redis.error_reply('PBNBEPOCH the shared history changed')
end
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'f:' .. ARGV[i], ARGV[i + 1])
end
local n = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'e', ARGV[1], 'n', n, 'o', ARGV[3] .. ':' .. ARGV[4], 'm', ARGV[5], 'a', ARGV[6])
redis.call('HSET', KEYS[1], 'last', id)
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
return id
"""


class Resync(Exception):
    """The log no longer holds what we missed, or its history changed: load the snapshot."""


class _Pending:
    """A change made here, waiting to be appended to the log."""

    __slots__ = ("change", "counter", "packed_fields")

    def __init__(self, counter: int, change: Change):
        self.counter = counter
        self.change = change
        self.packed_fields = change.fields_packed()


class Follower:
    """The link between one SharedCacheable in this process and its name in Redis."""

    def __init__(self, backplane: Backplane, obj: SharedCacheable, name: str):
        self.backplane = backplane
        self.obj = obj
        self.name = name
        base = f"{backplane.prefix}:{{{name}}}"
        self.keys = [f"{base}:state", f"{base}:log", f"{base}:origins"]
        self.allowed = frozenset(obj.observed_fields)
        missing = [field for field in obj.observed_fields if not hasattr(obj, field)]
        if missing:
            raise AttributeError(f"{obj!r} has no value yet for observed field(s) {missing}")
        #: The observed fields as far as this process has applied the log.
        self.state: dict[str, Any] = {field: getattr(obj, field) for field in obj.observed_fields}
        self.epoch: bytes | None = None
        self.seq = 0
        self.last_id: bytes = b"0-0"
        self._need_snapshot = True
        self.synced = asyncio.Event()
        self._counter = 0
        self._unsent: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while no change made here waits for Redis
        self._drained.set()
        # Own changes not yet back from the log, per field: while one is on its way,
        # changes from elsewhere do not overwrite the owner's own newer assignment.
        self._own_pending: Counter[str] = Counter()
        self._own_latest: dict[str, Any] = {}
        # counter -> the observer whose own write that change is (not echoed back to it).
        self._skips: dict[int, tuple[Any, str]] = {}
        self._lost: BaseException | None = None
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------ publishing

    def publish(self, method: str, args: tuple, kwargs: dict[str, Any], skip: Any) -> None:
        """Queue one change for the log; refuse it here if it cannot be shared (raises)."""
        change = entries.encode(method, args, kwargs, self.allowed)
        pending = _Pending(self._counter + 1, change)
        size = len(change.payload) + sum(map(len, pending.packed_fields))
        if size > self.backplane.max_change:
            raise LimitExceeded(
                f"a change to the shared cache {self.name!r} is {size} bytes; "
                f"the backplane takes at most {self.backplane.max_change} (max_change)"
            )
        if len(self._unsent) >= self.backplane.max_pending:
            raise LimitExceeded(
                f"{len(self._unsent)} changes to {self.name!r} are already waiting for Redis "
                f"(max_pending={self.backplane.max_pending})"
            )
        self._counter += 1
        self._unsent.append(pending)
        self._drained.clear()
        self._own_pending.update(change.fields.keys())
        self._own_latest.update(change.fields)
        if skip is not None and change.method == "set":
            (field,) = change.fields
            self._skips[pending.counter] = (skip, field)
        self._wake.set()

    def local_fields(self, method: str, args: tuple) -> dict[str, Any]:
        """What the fields a refused ``set``/``update`` named should read in this process."""
        try:
            names = list(entries.state_fields(method, args, {}, self.allowed))
        except (TypeError, ValueError, AttributeError):
            return {}
        return {
            name: self._own_latest[name] if self._own_pending[name] else self.state[name] for name in names
        }

    async def flush(self) -> None:
        """Wait until every change made here so far is in the log."""
        await self._drained.wait()

    @property
    def waiting(self) -> int:
        """How many changes made here wait to be appended to the log."""
        return len(self._unsent)

    # -------------------------------------------------------------- applying

    def _apply(self, change: Change) -> None:
        """Apply one change of the log and fan it out to this process's observers."""
        fields = change.fields
        self.state.update(fields)
        token, _, counter_text = change.origin.rpartition(":")
        own = token == self.backplane.token
        counter = int(counter_text) if own and counter_text.isdigit() else None
        skip = None
        if counter is not None:
            self._own_pending.subtract(change.fields.keys())
            entry = self._skips.pop(counter, None)
            skip = entry[0] if entry is not None else None
        for key in [key for key, (_, field) in self._skips.items() if field in fields]:
            # The writer's copy is about to show another value: it must get its own back later.
            del self._skips[key]
        for name, value in fields.items():
            if self._own_pending[name] <= 0:  # else the owner's own newer assignment stands
                object.__setattr__(self.obj, name, value)  # quietly: the change goes out just below
        try:
            self.obj.send_packed(change.method, change.payload, skip)
        except Exception:
            log.exception(
                "shared cache %r: fanning out %s failed for some observers", self.name, change.method
            )

    def _adopt(self, state: dict[str, Any]) -> None:
        """Take a snapshot's fields; tell observers what differs, as one ``update``."""
        diff = {name: value for name, value in state.items() if not same_value(self.state.get(name), value)}
        # Own changes still waiting will be sent (again) and come back through the log;
        # the ones the snapshot already holds never will.
        self._own_pending = Counter(name for pending in self._unsent for name in pending.change.fields)
        waiting = {pending.counter for pending in self._unsent}
        self._skips = {key: value for key, value in self._skips.items() if key in waiting}
        if diff:
            self._apply(entries.encode("update", (diff,), {}, self.allowed))

    # ---------------------------------------------------------------- running

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"pbnb backplane {self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await _cancel(task)

    async def _run(self) -> None:
        delays = _backoff()
        while True:
            try:
                await self._sync()
                if self._lost is not None:
                    log.warning("shared cache %r: Redis is back; in step again", self.name)
                    self._lost = None
                delays = _backoff()
                self.synced.set()
                await self._follow()
            except Resync as exc:
                # After the short pause below, so a log that keeps contradicting its
                # snapshot (written by something else) cannot spin this loop.
                log.warning("shared cache %r: %s; loading the snapshot", self.name, exc)
                self._need_snapshot = True
            except self.backplane.transient as exc:
                self.synced.clear()
                if self._lost is None:
                    log.warning("shared cache %r: lost Redis (%s); changes wait here", self.name, exc)
                self._lost = exc
            except Exception:
                self.synced.clear()
                log.exception("shared cache %r: unexpected failure; starting over", self.name)
            await asyncio.sleep(next(delays))

    async def _sync(self) -> None:
        """Get in step with Redis: replay what we missed, or take the snapshot."""
        redis = self.backplane.redis
        state_pairs = [
            item for field, value in self.state.items() for item in (field, entries.pack_value(value))
        ]
        flat = await self.backplane.script("attach", self.keys, [secrets.token_hex(8), *state_pairs])
        snapshot = dict(zip(flat[::2], flat[1::2], strict=True))
        epoch = snapshot[b"epoch"]
        # Drop the waiting changes that did arrive before the link broke (none, in a new
        # history: its origins start empty). First, so a snapshot that holds them is not
        # expected to send them back.
        arrived = int(await redis.hget(self.keys[2], self.backplane.token) or 0)
        while self._unsent and self._unsent[0].counter <= arrived:
            self._unsent.popleft()
        if epoch != self.epoch or self._need_snapshot:
            state = self._snapshot_fields(snapshot)
            self.epoch, self.seq, self.last_id = epoch, int(snapshot[b"seq"]), snapshot[b"last"]
            self._need_snapshot = False
            self._adopt(state)

    def _snapshot_fields(self, snapshot: dict[bytes, bytes]) -> dict[str, Any]:
        state = {}
        for key, data in snapshot.items():
            if not key.startswith(b"f:"):
                continue
            try:
                state.update(entries.decode_snapshot({key: data}, self.allowed))
            except MalformedEntry as exc:
                log.warning("shared cache %r: skipped snapshot field %r: %s", self.name, key, exc)
        return state

    async def _follow(self) -> None:
        """Read the log and write our changes until either fails."""
        reader = asyncio.ensure_future(self._read())
        writer = asyncio.ensure_future(self._write())
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            await _cancel(reader, writer)
        for task in done:
            task.result()  # raises what ended it

    async def _read(self) -> None:
        redis = self.backplane.redis
        while True:
            reply = await redis.xread({self.keys[1]: self.last_id}, count=BATCH, block=BLOCK_MS)
            for _stream, items in reply or ():
                for entry_id, fields in items:
                    await self._take(entry_id, fields)

    async def _take(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        if fields.get(b"e") != self.epoch:
            if await self.backplane.redis.hget(self.keys[0], "epoch") != self.epoch:
                raise Resync("the shared history started again (Redis lost its data?)")
            return self._skip(entry_id, "of another history")
        number = fields.get(b"n", b"")
        if not number.isdigit():
            return self._skip(entry_id, "without a sequence number")
        if int(number) != self.seq + 1:
            if int(number) <= self.seq:
                return self._skip(entry_id, f"numbered {int(number)}, already past")
            raise Resync(f"the log no longer holds changes {self.seq + 1} to {int(number) - 1}")
        try:
            change = entries.decode(fields, self.allowed)
        except MalformedEntry as exc:
            return self._skip(entry_id, f"(malformed: {exc})")
        self.seq += 1
        self.last_id = entry_id
        self._apply(change)

    def _skip(self, entry_id: bytes, why: str) -> None:
        """Log and step over one entry nobody should have written (or written twice)."""
        log.warning("shared cache %r: skipped log entry %s %s", self.name, entry_id.decode(), why)
        self.last_id = entry_id

    async def _write(self) -> None:
        while True:
            if not self._unsent:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(islice(self._unsent, BATCH))
            arguments = [self._publish_arguments(pending) for pending in batch]
            results = await self.backplane.publish_batch(self.keys, arguments)
            for pending, result in zip(batch, results, strict=False):  # a short answer: retry the rest
                if isinstance(result, Exception):
                    if str(result).startswith("PBNBEPOCH"):
                        raise Resync
                    log.error(
                        "shared cache %r: Redis refused a %s change, dropped: %s",
                        self.name,
                        pending.change.method,
                        result,
                    )
                    self._own_pending.subtract(pending.change.fields.keys())
                    self._skips.pop(pending.counter, None)
                self._unsent.popleft()

    def _publish_arguments(self, pending: _Pending) -> list[Any]:
        change = pending.change
        return [
            self.epoch,
            self.backplane.history,
            self.backplane.token,
            pending.counter,
            change.method,
            change.payload,
            *pending.packed_fields,
        ]


async def _cancel(*tasks: asyncio.Future) -> None:
    """Cancel ``tasks`` and wait until they end.

    Cancelled again as long as one runs on: the redis client may swallow a
    cancellation that lands while a command is in flight.
    """
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.5)


def _backoff() -> Iterator[float]:
    delay = 0.05
    while True:
        yield delay
        delay = min(delay * 2, 2.0)
