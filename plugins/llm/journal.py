"""Answers by request: the key of a request body, and the journal kept when the core gives none.

The predictor keeps every answer under :func:`request_key` of its request body in the journal the
core makes for it in the job's staging area (:class:`pipeline.contract.journal.Journal`), before
the answer's row is handed on, so a resumed job, a restarted actor or the guard's row-by-row retry
never pays for it again. Without a staged output (or with a database job store) the core gives
none and :class:`MemoryJournal` keeps them for the worker's lifetime.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from pipeline.contract.journal import Journal

__all__ = ["Journal", "MemoryJournal", "request_key"]


def request_key(body: dict[str, Any]) -> str:
    """A SHA-256 digest (hex) of a request body as JSON with sorted keys: bodies that differ only
    in key order get the same key; anything else that differs (model, prompt, max_tokens,
    temperature, response_format) gets another."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class MemoryJournal:
    """A :class:`~pipeline.contract.journal.Journal` in this process's memory: nothing from
    earlier runs (``take`` finds nothing), nothing kept after it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str) -> Any | None:
        with self._lock:
            return self._values.get(key)

    def take(self, key: str) -> Any | None:
        return None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._values[key] = value
