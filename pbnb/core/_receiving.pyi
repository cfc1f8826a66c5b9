from collections.abc import Callable
from typing import Any

class FrameLoop:
    def __init__(
        self,
        reader_type: type,
        unpackb: Callable[[bytes], Any],
        check_prefix: Callable[[int, int, int], None],
        decode_header: Callable[[bytes | bytearray], list[Any]],
        refuse_kind: Callable[[Any, int], Any],
        malformed: Callable[[int, Exception], Exception],
        slow: Callable[[Any, bytes | bytearray, int, int], None],
        slow_feed: Callable[[Any, bytes | bytearray | memoryview, int], bool],
        copied_payload: int,
        /,
    ) -> None: ...
    def __call__(self, reader: Any, data: bytes | bytearray, pos: int, budget: int, /) -> None: ...
    def feed(self, reader: Any, data: bytes | bytearray | memoryview, max_frames: int, /) -> bool: ...

class QuickObserve:
    def __init__(
        self,
        broker: Any,
        call_received: type,
        call_fields: tuple[str, ...],
        unpackb: Callable[..., Any],
        no_ext: Callable[[int, bytes], Any],
        tree_depth_exceeds: Callable[[Any, int], bool],
        plain: int,
        /,
    ) -> None: ...
    def __call__(self, header: list[Any], payload: bytes | bytearray | memoryview, /) -> None: ...
