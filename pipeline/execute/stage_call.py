"""The callables the runner hands to ``map_batches``: a plugin instance, its threads, its batches.

Every map stage runs inside :class:`StageCall`, which builds the plugin once per worker, sets
its thread count and cuts what Ray hands it into model batches of ``stage.batch_size`` rows
(:mod:`pipeline.execute.batching`: ``batch_size: auto`` and out-of-memory halving). For a stage that
tells its rows' lengths (:meth:`~pipeline.contract.stage.MapStage.row_lengths`, e.g. tokens per
text), the rows Ray hands over, a window the planner sizes, are sorted by length first, so each
model batch pads little, and the outputs are put back in input order. The choices it makes at
run time go to the job's ledger as notes; the rows of every batch are counted by the error guard
around it (:mod:`pipeline.execute.guard`).

Ray is imported only where a note goes to the ledger: with ``ledger=None`` a :class:`StageCall`
builds and calls its plugin in any Python process, Ray installed or not (``benchmarks/gpu_check.py``
runs the predictors this way on a machine without Ray).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pipeline.contract.batches import batch_rows, length_order, take_rows
from pipeline.contract.errors import DataError
from pipeline.contract.stage import MapStage
from pipeline.execute.batching import AdaptiveBatches

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
_TASK_INSTANCES: dict[tuple[str, ...], MapStage] = {}


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
        sort_by_length: bool = False,
        services: dict[str, Any] | None = None,
    ) -> None:
        self.plugin, self.params, self.key = plugin, params, key
        #: The job services of the stage (``MapStage.job_services``), or None.
        self.services = services
        self.ledger = ledger  # the job's Ledger actor (run-time notes), or None
        self.num_threads = num_threads
        self.sort_by_length = sort_by_length
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
        if self.services:
            return self.plugin(self.params, services=self.services)
        return self.plugin(self.params)

    def _instance(self) -> MapStage:
        if self._stage is None:
            # Each job has services of its own (an actor handle's repr names its actor): a
            # task worker never reuses an instance built with another job's.
            services = repr(sorted((self.services or {}).items()))
            cache_key = (self.key, self.params.model_dump_json(), services)
            if cache_key not in _TASK_INSTANCES:
                _TASK_INSTANCES.clear()
                _TASK_INSTANCES[cache_key] = self._build()
            self._stage = _TASK_INSTANCES[cache_key]
        return self._stage

    def __call__(self, batch: Any) -> Any:
        stage = self._instance()
        rows = batch_rows(batch)
        if not self.sort_by_length or rows < 2:
            return self.batches(stage, batch)
        import numpy as np

        order = length_order(stage.row_lengths(batch))
        out = self.batches(stage, take_rows(batch, order))
        if batch_rows(out) != rows:
            raise DataError(
                f"stage {self.key!r} tells its rows' lengths, so it must return one row per "
                f"input row; it returned {batch_rows(out)} for {rows}",
                key=self.key,
            )
        restore = np.empty_like(order)
        restore[order] = np.arange(rows)
        return take_rows(out, restore)

    def counters(self) -> dict[str, float]:
        """The plugin's counters since the last call (see ``MapStage.counters``)."""
        return self._instance().counters()
