"""What a Broker reports to the layer that drives it.

Every event goes into the broker's one queue; ``Broker.next_events()``
drains it. A driver turns each into an action (run a method, settle a
future, call ``stoppedObserving``, close the transport). They carry no
behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .progress import Progress, Throttle

if TYPE_CHECKING:
    from .broker import Broker
    from .flavors import Cacheable
    from .reference import CacheObserver


@dataclass(slots=True)
class HandshakeCompleted:
    """The peer's preamble and HELLO arrived: calls may go out and come in.

    ``max_frame`` is the largest frame body the peer accepts (from its HELLO).
    """

    max_frame: int


@dataclass(slots=True)
class CallReceived:
    """The peer asked to run ``method``; answer with Broker.answer/fail unless request_id is 0.

    ``broker`` is the one that received it (``Broker.progress`` reports on
    it); ``throttle`` is for the driver, which keeps the call's progress
    record there once the method reports (see ``core.progress.Throttle``).
    """

    request_id: int
    method: Callable[..., Any]
    args: list
    kwargs: dict
    perspective: Any
    target: Any
    name: str
    broker: Broker  # its invoker is the driver that runs the call
    throttle: Throttle | None = None


@dataclass(slots=True)
class AnswerReceived:
    """A call we made succeeded; ``token`` is what we passed to Broker.call."""

    token: Any
    value: Any


@dataclass(slots=True)
class ProgressReceived:
    """A call we made reported how far it has got; ``token`` is what we passed to Broker.call."""

    token: Any
    progress: Progress


@dataclass(slots=True)
class CallFailed:
    """A call we made failed (remote error, undecodable answer, lost connection)."""

    token: Any
    error: BaseException


@dataclass(slots=True)
class CancelRequested:
    """The peer no longer wants the answer to ``request_id``."""

    request_id: int


@dataclass(slots=True)
class StreamOpened:
    """The answer to our call is a stream (its window is granted); call ``Broker.bind_stream``.

    ``token`` is the call's token; the stream's later events carry the token
    the driver binds, which may be another object (one that does not keep the
    consumer's iterator alive, say).
    """

    token: Any
    request_id: int


@dataclass(slots=True)
class StreamItems:
    """Items of one of our streams arrived, in order; tell ``Broker.stream_read`` as they are read.

    ``size`` is what they cost in payload bytes, all together: the reader
    reports its share of it with the items it read (``StreamItems.shares``).
    """

    token: Any
    values: list
    size: int

    def shares(self) -> list[int]:
        """Each item's share of ``size`` (they add up to it exactly)."""
        count = len(self.values)
        share, rest = divmod(self.size, count)
        return [share + rest, *[share] * (count - 1)]


@dataclass(slots=True)
class StreamEnded:
    """One of our streams is over: ``error`` is None for its normal end."""

    token: Any
    error: BaseException | None


@dataclass(slots=True)
class CreditGranted:
    """The peer granted credit to the stream answering its call ``request_id``: items may go."""

    request_id: int


@dataclass(slots=True)
class ObjectReleased:
    """The peer dropped its last reference to ``obj`` (or the connection closed)."""

    obj: Any


@dataclass(slots=True)
class CacheReleased:
    """The peer's copy of ``cacheable`` is gone: call ``stoppedObserving``."""

    cacheable: Cacheable
    perspective: Any
    observer: CacheObserver


@dataclass(slots=True)
class MessageRefused:
    """A message from the peer was refused; the peer was told. For logging."""

    error: BaseException
    description: str


@dataclass(slots=True)
class CallbackFailed:
    """A notifyOnDisconnect callback or a copy's connectionLost raised. For logging."""

    callback: Callable[..., Any]
    error: BaseException


@dataclass(slots=True)
class ConnectionFailed:
    """The byte stream can no longer be trusted; close the transport.

    ``error`` says why; a GOODBYE explaining it has been queued for the peer
    unless the peer was the one saying goodbye (``by_peer``).
    """

    error: BaseException
    by_peer: bool = False


#: Every event a broker reports.
Event = (
    HandshakeCompleted
    | CallReceived
    | AnswerReceived
    | ProgressReceived
    | CallFailed
    | CancelRequested
    | StreamOpened
    | StreamItems
    | StreamEnded
    | CreditGranted
    | ObjectReleased
    | CacheReleased
    | MessageRefused
    | CallbackFailed
    | ConnectionFailed
)
