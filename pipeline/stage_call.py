"""The callables the runner hands to ``map_batches``: a plugin instance plus row accounting.

Every map stage runs inside :class:`StageCall`, which builds the plugin once per worker and
reports each batch's rows in and out to a :class:`JobCounters` actor, so the runner knows exact
rows in and out of every stage without relying on Ray Data's internal stats (which count file
listings and write results as rows, and lose the read count when Ray fuses a read into a write).
"""

from __future__ import annotations

from typing import Any

import ray

from pipeline.interfaces import MapStage


def batch_rows(batch: Any) -> int:
    """Rows in a batch of any Ray batch format (pyarrow Table, pandas DataFrame, dict of arrays)."""
    if isinstance(batch, dict):
        return len(next(iter(batch.values()))) if batch else 0
    return len(batch)


@ray.remote(num_cpus=0)
class JobCounters:
    """Rows in and out of each stage, summed over every batch of the job."""

    def __init__(self) -> None:
        self.rows: dict[str, list[int]] = {}

    def add(self, key: str, rows_in: int, rows_out: int) -> None:
        totals = self.rows.setdefault(key, [0, 0])
        totals[0] += rows_in
        totals[1] += rows_out

    def snapshot(self) -> dict[str, list[int]]:
        return self.rows


#: The plugin instance of a task stage, kept per worker process: a task gets a fresh copy of its
#: callable, but the (possibly expensive) plugin instance is built once per process. A new stage
#: (another job of a sweep) replaces the old one, so an idle worker never holds two models.
_TASK_INSTANCES: dict[tuple[str, str], MapStage] = {}


class StageCall:
    """Wraps a map-stage plugin for ``map_batches``: as an actor class or a task callable.

    ``plugin=None`` is a pass-through that only counts (a job without map stages).
    """

    def __init__(
        self,
        plugin: type[MapStage] | None,
        params: Any,
        key: str,
        counters: Any,
        eager: bool = False,
    ) -> None:
        self.plugin, self.params, self.key = plugin, params, key
        self.counters = counters
        self._stage: MapStage | None = None
        if eager:  # actors: load the model in __init__, once per actor, not on the first batch
            self._stage = self._build()

    def _build(self) -> MapStage | None:
        return self.plugin(self.params) if self.plugin is not None else None

    def _instance(self) -> MapStage | None:
        if self._stage is None and self.plugin is not None:
            cache_key = (self.key, self.params.model_dump_json())
            if cache_key not in _TASK_INSTANCES:
                _TASK_INSTANCES.clear()
                _TASK_INSTANCES[cache_key] = self._build()
            self._stage = _TASK_INSTANCES[cache_key]
        return self._stage

    def __call__(self, batch: Any) -> Any:
        rows_in = batch_rows(batch)
        stage = self._instance()
        out = stage(batch) if stage is not None else batch
        ray.get(self.counters.add.remote(self.key, rows_in, batch_rows(out)))
        return out


def actor_class(plugin: type[MapStage] | None) -> type[StageCall]:
    """A StageCall subclass named after the plugin, so Ray's progress shows the plugin's name."""
    return type(plugin.__name__ if plugin is not None else "Count", (StageCall,), {})
