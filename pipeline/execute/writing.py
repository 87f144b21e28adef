"""Writing a job's rows and recording each write task's output as soon as it is durable.

:class:`JournaledDatasink` is the Ray Data datasink of every staged job. Each write task takes
the row ids off its blocks (:data:`~pipeline.output.progress.ROW_ID`), hands the rows to the
sink's :class:`~pipeline.contract.sink.BlockWriter` (files in the staging folder, a table
target's staged rows), and when the writer has returned, adds a
:class:`~pipeline.output.records.Written` record to the job's store. A record is the only
thing that makes a task's output count (the task then tells the job's ledger, for the progress
line): a task killed before it is written left output that no
record names, which the job never publishes, and its rows are read again when it resumes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from ray.data import Datasink
from ray.data.block import BlockAccessor

from pipeline.contract.errors import BulkInferError, OutputError
from pipeline.contract.halts import halt
from pipeline.contract.sink import BlockWriter, JobStore
from pipeline.output.progress import ROW_ID, ranges_of
from pipeline.output.records import JobRecord, Written


class JournaledDatasink(Datasink[list[str]]):
    """Writes through ``writer`` (made on the driver, sent to every write task; see the module
    docstring) and records each task's output in
    ``store``, for the job whose record has ``job_id`` as its run id, as written by its run
    ``run_id`` (each resume is a new run); ``location``/``key`` name the output in errors;
    ``ledger`` (the job's ledger actor, or None) is told of each record."""

    def __init__(
        self,
        writer: BlockWriter,
        store: JobStore,
        job_id: str,
        run_id: str,
        location: str,
        key: str,
        min_rows_per_write: int | None = None,
        ledger: Any = None,
    ) -> None:
        self.writer, self.store, self.ledger = writer, store, ledger
        self.job_id, self.run_id = job_id, run_id
        self.location, self.key = location, key
        self._min_rows = min_rows_per_write

    @property
    def min_rows_per_write(self) -> int | None:
        return self._min_rows

    def get_name(self) -> str:
        return "Write"

    def write(self, blocks: Iterable[Any], ctx: Any) -> list[str]:
        part = f"{ctx.task_idx:06d}-{uuid.uuid4().hex[:8]}"
        ids: list[Any] = []
        tagged = [True]

        def tables() -> Iterable[Any]:
            for block in _upstream(blocks):
                table = BlockAccessor.for_block(block).to_arrow()
                if ROW_ID in table.column_names:
                    ids.append(table.column(ROW_ID).to_numpy())
                    table = table.drop_columns([ROW_ID])
                elif table.num_rows:
                    tagged[0] = False
                yield table

        try:
            written = self.writer.write(tables())
        except _Upstream as upstream:  # a stage fused into this task failed: its own error
            raise upstream.error from None
        except BulkInferError as error:  # the sink's: its key made absolute (sink.params.x)
            raise error.within("sink") from None
        except Exception as exc:  # an engine's or a filesystem's error, as one line
            text = str(getattr(exc, "orig", None) or exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise OutputError(
                f"writing into {self.location} failed: {type(exc).__name__}: {first}",
                key=self.key,
            ) from None
        rows = sum(int(w["rows"]) for w in written)
        if not rows:
            return []
        halt("written")
        ranges = None
        if tagged[0] and ids:
            import numpy as np

            ranges = ranges_of(np.concatenate(ids))
        job = self.store.load()
        if job is None or JobRecord.from_json(job).run_id != self.job_id:
            # The job ended (failed with nothing recorded, and its staging was removed) while
            # this task still ran: leave nothing of it behind.
            if job is None:
                self.store.remove()
            return []
        record = Written(part=part, rows=rows, ranges=ranges, written=written, run_id=self.run_id)
        self.store.add_marker(record.to_json())
        if self.ledger is not None:  # for the progress line only: not awaited
            self.ledger.written.remote(record.id, rows, ranges)
        halt("recorded")
        return [record.id]


class _Upstream(Exception):
    """What a stage fused into the write task raised while the writer pulled its blocks."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _upstream(blocks: Iterable[Any]) -> Iterable[Any]:
    iterator = iter(blocks)
    while True:
        try:
            block = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            raise _Upstream(exc) from None
        yield block
