"""Results kept for the guard's second call, so that no row is ever requested twice.

When a batch has a failed row the predictor raises, and the core's guard (``on_error: skip`` or
``dead_letter``) calls the predictor again with each row alone. Those rows were already
answered (or already failed after every retry): :class:`Replay` hands their results back
instead of sending the requests again. Results are keyed by the request body, as a multiset, so
two identical rows in one batch get one result each.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from plugins.llm.journal import request_key as body_key

R = TypeVar("R")


class Replay(Generic[R]):
    """Results by request body, each handed out once; at most ``max_entries`` are kept (the
    oldest bodies go first)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, deque[R]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()  # several batches of one actor at once

    def __len__(self) -> int:
        return self._size

    def keep(self, bodies: Sequence[dict[str, Any]], results: Sequence[R]) -> None:
        """Keep ``results[i]`` for ``bodies[i]``."""
        with self._lock:
            self._keep(bodies, results)

    def _keep(self, bodies: Sequence[dict[str, Any]], results: Sequence[R]) -> None:
        for body, result in zip(bodies, results, strict=True):
            key = body_key(body)
            self._entries.setdefault(key, deque()).append(result)
            self._entries.move_to_end(key)
            self._size += 1
        while self._size > self.max_entries and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._size -= len(dropped)

    def take(self, body: dict[str, Any]) -> R | None:
        """The oldest result kept for ``body`` (removed), or None."""
        key = body_key(body)
        with self._lock:
            queue = self._entries.get(key)
            if not queue:
                return None
            result = queue.popleft()
            self._size -= 1
            if not queue:
                del self._entries[key]
            return result
