"""The callables the runner hands to ``map_batches``: a plugin instance plus row accounting.

Every map stage runs inside :class:`StageCall`, which builds the plugin once per worker, cuts
batches to the size that fits (:mod:`pipeline.batching`: ``batch_size: auto`` and out-of-memory
halving) and reports each batch's rows in and out to a :class:`JobCounters` actor, so the runner
knows exact rows in and out of every stage without relying on Ray Data's internal stats (which
count file listings and write results as rows, and lose the read count when Ray fuses a read into
a write).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import ray

from pipeline.batching import AdaptiveBatches, batch_rows
from pipeline.interfaces import MapStage

__all__ = ["JobCounters", "StageCall", "batch_rows", "set_threads"]

#: Environment variables the native thread pools of model libraries read when they load.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@ray.remote(num_cpus=0)
class JobCounters:
    """Rows in and out of each stage, summed over every batch of the job, and run-time notes."""

    def __init__(self) -> None:
        self.rows: dict[str, list[int]] = {}
        self.notes: list[str] = []

    def add(self, key: str, rows_in: int, rows_out: int) -> None:
        totals = self.rows.setdefault(key, [0, 0])
        totals[0] += rows_in
        totals[1] += rows_out

    def note(self, message: str) -> None:
        """A decision a worker made at run time (``batch_size: auto``, out-of-memory halving)."""
        if message not in self.notes:
            self.notes.append(message)

    def snapshot(self) -> dict[str, list[int]]:
        return self.rows

    def get_notes(self) -> list[str]:
        return self.notes


def set_threads(count: int) -> None:
    """Size the native thread pools of this worker before a model library loads.

    OpenMP-based libraries (torch, XGBoost, BLAS) read these variables when they load; if torch is
    already loaded in this process, its pool is resized too (without importing it here).
    """
    for name in THREAD_VARIABLES:
        os.environ[name] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(count)


#: The plugin instance of a task stage, kept per worker process: a task gets a fresh copy of its
#: callable, but the (possibly expensive) plugin instance is built once per process. A new stage
#: (another job of a sweep) replaces the old one, so an idle worker never holds two models.
_TASK_INSTANCES: dict[tuple[str, str], MapStage] = {}


class StageCall:
    """Wraps a map-stage plugin for ``map_batches``: as an actor class or a task callable."""

    def __init__(
        self,
        plugin: type[MapStage],
        params: Any,
        key: str,
        counters: Any,
        eager: bool = False,
        auto_batch: bool = False,
        memory_limit: int | None = None,
        num_threads: int | None = None,
        batch_limit: int | None = None,
    ) -> None:
        self.plugin, self.params, self.key = plugin, params, key
        self.counters = counters
        self.num_threads = num_threads
        self.batches = AdaptiveBatches(key, auto_batch, memory_limit, self._note, limit=batch_limit)
        self._stage: MapStage | None = None
        if eager:  # actors: load the model in __init__, once per actor, not on the first batch
            self._stage = self._build()

    def _note(self, message: str) -> None:
        if self.counters is not None:
            ray.get(self.counters.note.remote(message))

    def _build(self) -> MapStage:
        if self.num_threads:
            set_threads(self.num_threads)
        return self.plugin(self.params)

    def _instance(self) -> MapStage:
        if self._stage is None:
            cache_key = (self.key, self.params.model_dump_json())
            if cache_key not in _TASK_INSTANCES:
                _TASK_INSTANCES.clear()
                _TASK_INSTANCES[cache_key] = self._build()
            self._stage = _TASK_INSTANCES[cache_key]
        return self._stage

    def __call__(self, batch: Any) -> Any:
        rows_in = batch_rows(batch)
        out = self.batches(self._instance(), batch)
        if self.counters is not None:
            ray.get(self.counters.add.remote(self.key, rows_in, batch_rows(out)))
        return out
