"""Reading a job's input in one Ray Data execution, each row with its id, the written ones left out.

A source that defines :meth:`~pipeline.contract.source.Source.read_unit` is read here: one Ray
read task per group of work units (as many groups as the planner asks for read tasks, never
more than units), each task calling ``read_unit`` for its units in order, giving every row its
id (:mod:`pipeline.output.progress`) in the column :data:`~pipeline.output.progress.ROW_ID`,
dropping the rows a resumed job has already written and cutting the rest into blocks of the
plan's rows per block. Other sources are read with their own ``read`` (their rows get no id).

The source object goes into Ray's object store once per read and every read task carries only
a reference to it: Ray Data stores each read task in the object store for the whole execution,
and a source may hold its whole file listing (10,000 files: about 1 MB), which copied into
each of 10,000 read tasks made 9 GB.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pipeline.contract.errors import BulkInferError, DataError
from pipeline.contract.source import Source, WorkUnit
from pipeline.execute.guard import describe_error
from pipeline.output.progress import ROW_ID, UNIT_SHIFT, Progress

#: Rows per block when the plan does not set them.
DEFAULT_BLOCK_ROWS = 4096


class UnitsDatasource(Datasource):
    """The pending rows of ``units`` (``(index, unit)`` pairs, index as in the job's unit list)
    of ``source``, read with ``params``; ``done``: the rows written before this run."""

    def __init__(
        self,
        source: Source,
        params: Any,
        units: list[tuple[int, WorkUnit]],
        done: Progress,
        block_rows: int | None,
    ) -> None:
        super().__init__()
        self.source, self.params, self.units, self.done = source, params, units, done
        self.block_rows = block_rows or DEFAULT_BLOCK_ROWS

    def get_name(self) -> str:
        return f"Read{type(self.source).__name__}"

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        groups = max(1, min(parallelism, len(self.units)))
        source = ray.put(self.source)  # one copy for every task (see the module docstring)
        tasks = []
        for g in range(groups):
            mine = self.units[g::groups]
            # Each task carries only its own units and the written rows among them.
            indexes = {index for index, _ in mine}
            done = Progress(r for r in self.done.ranges if r[0] >> UNIT_SHIFT in indexes)
            read = partial(_read, source, self.params, mine, done, self.block_rows)
            metadata = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None)
            tasks.append(ReadTask(read, metadata))
        return tasks


#: The source a worker process last read for (by object id): unpickled once, not per task.
_SOURCE: dict[str, Source] = {}


def _source(ref: Any) -> Source:
    """The source ``ref`` (an ObjectRef) holds, kept for the next task in this process."""
    key = ref.hex()
    if key not in _SOURCE:
        _SOURCE.clear()
        _SOURCE[key] = ray.get(ref)
    return _SOURCE[key]


def _read(
    source_ref: Any,
    params: Any,
    units: list[tuple[int, WorkUnit]],
    done: Progress,
    block_rows: int,
) -> Iterator[Any]:
    """One read task: its units' rows in order, each with its id, the written ones dropped.

    What ``read_unit`` raises reaches the user as one line: a
    :class:`~pipeline.contract.errors.BulkInferError` with its key made absolute
    (``params.path`` -> ``source.params.path``), anything else as the error the source's
    :meth:`~pipeline.contract.source.Source.explain_read_error` finds, else a
    :class:`~pipeline.contract.errors.DataError` naming the source, the unit and the cause.
    ``source_ref``: an ObjectRef of the source."""
    source = _source(source_ref)
    for index, unit in units:
        try:
            yield from _read_unit(source, params, index, unit, done, block_rows)
        except BulkInferError as error:
            raise error.within("source") from None
        except Exception as exc:
            raise _read_failure(source, params, unit, exc) from None


def _read_failure(source: Source, params: Any, unit: WorkUnit, exc: Exception) -> BulkInferError:
    try:
        explained = source.explain_read_error(params, unit)
    except Exception:  # the diagnosis must not hide the original error
        explained = None
    if isinstance(explained, BulkInferError):
        return explained.within("source")
    return DataError(
        f"source {type(source).__name__} failed reading work unit {unit.id!r}: "
        f"{describe_error(exc)}",
        key="source",
    )


def _read_unit(
    source: Source, params: Any, index: int, unit: WorkUnit, done: Progress, block_rows: int
) -> Iterator[Any]:
    import numpy as np
    import pyarrow as pa

    offset = 0
    for table in source.read_unit(params, unit):
        rows = table.num_rows
        if not rows:
            continue
        ids = np.arange(offset, offset + rows, dtype=np.int64) | (index << UNIT_SHIFT)
        offset += rows
        table = table.append_column(ROW_ID, pa.array(ids, pa.int64()))
        pending = done.pending(ids)
        if pending is not None:
            table = table.filter(pa.array(pending))
        for start in range(0, table.num_rows, block_rows):
            yield table.slice(start, block_rows)


def read_pending(
    source: Source,
    params: Any,
    units: list[WorkUnit],
    done: Progress,
    read_tasks: int | None,
    block_rows: int | None,
) -> ray.data.Dataset:
    """The job's pending rows as one lazy Dataset (see the module docstring)."""
    indexed = list(enumerate(units))
    datasource = UnitsDatasource(source, params, indexed, done, block_rows)
    blocks = max(1, min(read_tasks or len(indexed), len(indexed)))
    return ray.data.read_datasource(
        datasource, override_num_blocks=blocks, **dict(source.io.ray_remote_args)
    )
