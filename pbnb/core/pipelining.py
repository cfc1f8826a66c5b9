"""Promise pipelining: calls addressed to the answer of a call still in flight.

``root.callRemote("user", "ada").callRemote("inbox")`` sends both calls at
once: the second goes out as PIPELINE, naming the first one's request id
instead of an object. The rules, from both ends (docs/protocol.md has them
with the frames):

* **The callee keeps answers that are references.** When it answers a call
  with one of its own objects (an export) or with one of the caller's (a
  RemoteReference), it keeps that target under the request id until the
  caller says FINISH. A PIPELINE naming a call still running waits for its
  answer; one naming a held answer runs at once on that target. Other
  answers are not kept, so a PIPELINE naming one is answered with a
  PipelineError, which the caller turns into the real reason (below).
* **The caller finishes what it received.** After decoding an answer that is
  a reference, the caller queues FINISH for its request id. It sends PIPELINE
  only while the call is pending, so every PIPELINE for an answer is on the
  wire before that answer's FINISH: the callee never drops a target a call
  still needs.
* **Failures are the original ones.** The caller remembers the outcome of a
  call that has pipelined calls waiting on it. When the callee says a
  pipelined call had no reference to run on, the caller fails it with that
  call's own error, or with a PipelineError naming what the answer was.
* **Order.** Calls waiting for one answer run in the order they came, when
  the answer is sent and before any later message is read; a call that the
  caller sends after it saw the answer therefore runs after them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import LimitExceeded, PipelineError
from .failure import clip
from .flavors import Referenceable
from .reference import RemoteReference

#: How the callee says "no reference to run on" (the ERROR's remote type).
BROKEN_PROMISE = f"{PipelineError.__module__}.{PipelineError.__qualname__}"


class Forward:
    """A call target for an answer that is one of the caller's own objects: calls go back to it."""

    __slots__ = ("ref",)

    def __init__(self, ref: RemoteReference):
        self.ref = ref

    def _pb_method(self, name: str, perspective: Any) -> Callable[..., Any]:
        return functools.partial(self.ref.callRemote, name)

    def _pb_perspective(self, sent_to: Any) -> Any:
        return None


@dataclass(slots=True)
class WaitingCall:
    """A pipelined call that arrived before the answer it is addressed to."""

    request_id: int
    name: Any
    mode: Any
    payload: bytes


class HeldAnswers:
    """The callee's side: answers the peer may still pipeline on, and calls waiting for answers."""

    __slots__ = ("held", "limit", "waiting")

    def __init__(self, limit: int):
        self.limit = limit
        # peer's request id -> (call target, its export entry or None): the answer
        # was a reference, kept until the peer's FINISH
        self.held: dict[int, tuple[Any, Any]] = {}
        # peer's request id still running -> pipelined calls waiting for its answer
        self.waiting: dict[int, list[WaitingCall]] = {}

    def hold(self, request_id: int, target: Any, entry: Any) -> bool:
        """Keep ``target`` as the answer of ``request_id``; False when ``limit`` answers are held."""
        if len(self.held) >= self.limit:
            return False
        self.held[request_id] = (target, entry)
        return True

    def finish(self, request_ids: list[int]) -> None:
        for request_id in request_ids:
            self.held.pop(request_id, None)

    def drop_waiting(self, request_id: int) -> bool:
        """Forget the waiting call ``request_id`` (its caller cancelled it); True if it was waiting."""
        for promise_id, calls in self.waiting.items():
            for index, call in enumerate(calls):
                if call.request_id == request_id:
                    del calls[index]
                    if not calls:
                        del self.waiting[promise_id]
                    return True
        return False

    def clear(self) -> None:
        self.held.clear()
        self.waiting.clear()


class Promises:
    """The caller's side: which of our calls were pipelined on which, and the outcomes they need."""

    __slots__ = ("dependents", "finished", "outcomes", "sent_on")

    def __init__(self) -> None:
        # our pipelined request id -> the request id of the answer it was sent to
        self.sent_on: dict[int, int] = {}
        # our request id -> how many of our pipelined calls on its answer are unsettled
        self.dependents: dict[int, int] = {}
        # our request id that has dependents and was settled -> its answer or error
        self.outcomes: dict[int, Any] = {}
        # our request ids whose answer was a reference: FINISH goes out for them
        self.finished: list[int] = []

    def sent(self, request_id: int, promise_id: int) -> None:
        self.sent_on[request_id] = promise_id
        self.dependents[promise_id] = self.dependents.get(promise_id, 0) + 1

    def resolved(self, request_id: int, outcome: Any) -> None:
        """Our call ``request_id`` answered ``outcome`` (a value or an exception)."""
        if request_id in self.dependents:
            self.outcomes[request_id] = outcome

    def settled(self, request_id: int) -> None:
        """Our call ``request_id`` is over (answered, failed or cancelled)."""
        promise_id = self.sent_on.pop(request_id, None)
        if promise_id is None:
            return
        left = self.dependents[promise_id] - 1
        if left:
            self.dependents[promise_id] = left
        else:
            del self.dependents[promise_id]
            self.outcomes.pop(promise_id, None)

    def broken(self, request_id: int) -> BaseException:
        """Why the pipelined call ``request_id`` had nothing to run on, from its promise's outcome."""
        promise_id = self.sent_on.get(request_id)
        outcome = self.outcomes.get(promise_id, _GONE) if promise_id is not None else _GONE
        if isinstance(outcome, BaseException):
            return outcome
        if outcome is _GONE:
            return PipelineError("the answer this call was pipelined on is gone (its call was cancelled)")
        if is_reference(outcome):
            return LimitExceeded(
                "the peer could not keep the answer this call was pipelined on (max_held_answers)"
            )
        shown = clip(repr(outcome), 60)
        return PipelineError(
            f"the answer this call was pipelined on is {type(outcome).__name__} {shown}, not a reference"
        )

    def clear(self) -> None:
        self.sent_on.clear()
        self.dependents.clear()
        self.outcomes.clear()
        self.finished.clear()


_GONE = object()


def is_reference(value: Any) -> bool:
    """Whether an answer can be pipelined on: a Referenceable, or a RemoteReference (not a cache)."""
    return isinstance(value, Referenceable) or type(value) is RemoteReference
