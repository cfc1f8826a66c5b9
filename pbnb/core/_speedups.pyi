from collections.abc import Callable
from typing import Any

def needs_graph(leaves: frozenset[type], is_leaf_flavor: Callable[[type], bool], root: Any, /) -> bool: ...
def tree_depth_exceeds(root: Any, max_depth: int, /) -> bool: ...

class TupleDefault:
    def __init__(self, tag: Any, fallback: Callable[[Any], Any], /) -> None: ...
    def __call__(self, obj: Any, /) -> Any: ...

class PlainHooks:
    def __init__(
        self,
        tags: dict[int, Any],
        tuple_tag: Any,
        candidates: list[Any],
        free_candidates: int,
        guard: Callable[[], None],
        ext_fallback: Callable[[int, bytes], Any],
        list_fallback: Callable[[list[Any]], Any],
        /,
    ) -> None: ...
    def ext_hook(self, code: int, data: bytes, /) -> Any: ...
    def list_hook(self, items: list[Any], /) -> Any: ...
