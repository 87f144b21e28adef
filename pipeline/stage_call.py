"""The callables the runner hands to ``map_batches``: a plugin instance, its threads, its batches.

Every map stage runs inside :class:`StageCall`, which builds the plugin once per worker, sets
its thread count and cuts batches to the size that fits (:mod:`pipeline.batching`:
``batch_size: auto`` and out-of-memory halving). The choices it makes at run time go to the job's
:class:`~pipeline.guard.Ledger` actor as notes; the rows of every batch are counted by the error
guard around it (:mod:`pipeline.guard`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pipeline.batching import AdaptiveBatches
from pipeline.interfaces import MapStage

__all__ = ["StageCall", "set_threads"]

#: Environment variables the native thread pools of model libraries read when they load.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


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
        ledger: Any,
        eager: bool = False,
        auto_batch: bool = False,
        memory_limit: int | None = None,
        num_threads: int | None = None,
        batch_limit: int | None = None,
    ) -> None:
        self.plugin, self.params, self.key = plugin, params, key
        self.ledger = ledger  # the job's Ledger actor (run-time notes), or None
        self.num_threads = num_threads
        self.batches = AdaptiveBatches(key, auto_batch, memory_limit, self._note, limit=batch_limit)
        self._stage: MapStage | None = None
        if eager:  # actors: load the model in __init__, once per actor, not on the first batch
            self._stage = self._build()

    def _note(self, message: str) -> None:
        if self.ledger is not None:
            import ray  # only with a ledger, i.e. under Ray: the wrapper also runs without it

            ray.get(self.ledger.note.remote(message))

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
        return self.batches(self._instance(), batch)

    def counters(self) -> dict[str, float]:
        """The plugin's counters since the last call (see ``MapStage.counters``)."""
        return self._instance().counters()
