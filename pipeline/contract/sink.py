"""Sinks: where a job's rows go, and the records the core keeps of a staged job.

A :class:`FileSink` (required: ``output``, ``write_files``) writes a folder of files that the core
stages, commits per work unit, resumes and publishes; a :class:`TableSink` (required: ``target``)
hands the core a :class:`StagedTarget` run the same way; a :class:`DatasetSink` (required:
``write``) consumes the whole dataset itself. Every sink may refuse columns it cannot hold
(``check_schema``); a table sink's target refuses them in its own ``check``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.contract.plugin import _IOPlugin

if TYPE_CHECKING:  # Ray and pyarrow are imported by the plugins that use them.
    import pyarrow as pa
    import ray.data


@dataclass(frozen=True)
class FileOutput:
    """Where a file sink's output goes; the runner stages, commits, resumes and publishes it."""

    #: A ``pyarrow.fs.FileSystem``.
    filesystem: Any
    #: The output folder inside ``filesystem``.
    path: str
    #: The output as the user wrote it (for messages).
    location: str
    #: ``error`` (refuse an existing output), ``overwrite`` or ``append``.
    mode: str = "error"


@dataclass(frozen=True)
class SinkResult:
    """Where a :class:`DatasetSink` put the output and, if it knows, how many rows it wrote."""

    location: str | None = None
    rows: int | None = None


class BlockWriter(ABC):
    """Writes one Ray write task's rows where they stay invisible until the job publishes
    them (a staging folder's files, a table target's staged rows). Picklable: the core sends it
    to the write task and records what :meth:`write` returns once it has returned."""

    #: Rows a write task gathers before it writes (None: each block as it comes).
    min_rows_per_write: int | None = None

    @abstractmethod
    def write(self, tables: Iterable[pa.Table]) -> list[dict[str, Any]]:
        """Write ``tables`` (any number, possibly none); return what was written, JSON-able
        dicts each with ``rows`` (a file sink: ``{"name", "rows"}`` per file)."""


class Sink(_IOPlugin):
    """The base of every sink kind."""

    def check_schema(self, params: Any, schema: pa.Schema) -> None:
        """Refuse, before any model loads, a column this sink cannot hold (file and dataset
        sinks; a table sink's target checks columns in :meth:`StagedTarget.check`).

        ``schema`` is what the last stage yields. Raise a
        :class:`~pipeline.contract.errors.DataError` naming the column, the sink and what to do
        instead (another sink, or leave the column out). Columns of pickled Python objects are
        refused by the core for every sink.
        """


class DatasetSink(Sink, ABC):
    """Consumes the final Dataset itself (prints it, sends it somewhere). Runs on the driver.

    The job runs in one piece: no staging, no work units, no resume.
    """

    def check(self, params: Any) -> None:
        """Refuse before the job starts (e.g. a destination that cannot be written); raise a
        BulkInferError naming the key."""

    @abstractmethod
    def write(self, dataset: ray.data.Dataset, params: Any) -> SinkResult:
        """Consume ``dataset``; pass ``self.io`` settings to Ray's write call."""


class FileSink(Sink, ABC):
    """Writes a folder of files; the core makes the output atomic and resumable.

    The runner writes the job's files into a staging area beside :meth:`output`, records what
    each write task wrote as soon as it is written, and moves the whole output into place with
    a ``_SUCCESS`` manifest once the job succeeded (``mode``: error, overwrite or append).
    Required: :meth:`output` and :meth:`write_files`; optional: :meth:`writer`, through which
    the core records each write task's files as they are written (a stopped job then resumes
    from its last written row).
    """

    @abstractmethod
    def output(self, params: Any) -> FileOutput:
        """Where the output goes, and its mode."""

    @abstractmethod
    def write_files(self, dataset: ray.data.Dataset, folder: str, params: Any) -> dict[str, int]:
        """Write ``dataset`` as files into ``folder`` (empty, on the output's filesystem);
        return the rows of each file written, by file name, as the write tasks counted them."""

    def writer(self, folder: str, params: Any, part: str) -> BlockWriter | None:
        """A :class:`BlockWriter` the core sends to every write task: each task's files go
        into ``folder`` under names that start with ``part`` and differ from every other
        task's. Made on the driver. None (the default): the core writes with
        :meth:`write_files`."""
        return None


@dataclass(frozen=True)
class StoreFolder:
    """A folder (``filesystem``: pyarrow's, ``path`` in it, ``location`` for messages) where
    the core keeps a :class:`TableSink` job's record, e.g. ``<dataset>.__bulkinfer_staging``."""

    filesystem: Any
    path: str
    location: str


#: The key of a table job's target state naming the job (see :meth:`StagedTarget.publish`).
JOB_KEY = "bulkinfer_job"


class StagedTarget(ABC):
    """A table or dataset written by a :class:`TableSink`, in the steps the core runs:
    ``check`` (before any model loads) -> ``begin`` (once per job; the job record keeps the
    state it returns) -> ``write_unit`` per work unit (rows staged invisibly; the unit's marker
    keeps the receipt) -> ``publish`` (one commit makes every receipted row visible). A resumed
    job ``discard``s the units it redoes; a job that fails before committing a unit calls
    ``abandon``. Every step may be repeated after a crash. ``location``: the output for
    messages (credentials masked); ``key``: the config key naming it."""

    location: str
    key: str = "sink.params"

    @abstractmethod
    def check(self, schema: pa.Schema, resuming: bool) -> None:
        """Refuse (a :class:`~pipeline.contract.errors.DataError` naming the key) a column the
        target cannot hold and what ``mode`` forbids (an existing table with ``mode: error``). When
        ``resuming`` (this job's record is there) the target may hold what that job published:
        refuse only columns. Dry runs too: reads, creates nothing."""

    def writer(self, state: dict[str, Any], part: str) -> BlockWriter | None:
        """A :class:`BlockWriter` the core sends to every write task, staging rows as ``part``
        (each task's write returns parts of its own, which the receipts name); the core
        records what each task wrote as soon as it is written. Made on the driver (where the
        job's credentials are). None (the default): the core stages rows with
        :meth:`write_unit`."""
        return None

    @abstractmethod
    def job_store(self) -> JobStore | StoreFolder:
        """Where the job record goes: a :class:`StoreFolder` for the core's folder store, or
        a :class:`pipeline.contract.sink.JobStore` of its own. Read on dry runs: creates nothing."""

    @abstractmethod
    def begin(self, run_id: str, schema: pa.Schema) -> dict[str, Any]:
        """Prepare a new job's staging; returns its JSON-able state."""

    @abstractmethod
    def write_unit(
        self,
        dataset: ray.data.Dataset,
        state: dict[str, Any],
        unit_id: str,
        ray_remote_args: dict[str, Any],
    ) -> dict[str, Any]:
        """Stage one unit's rows; returns its receipt ``{"unit", "rows", "parts"}`` (only
        what a receipt names is ever published: a task Ray retried left rows none names)."""

    @abstractmethod
    def publish(self, state: dict[str, Any], receipts: list[dict[str, Any]]) -> dict[str, Any]:
        """Make every receipted row visible in one commit (repeated: finds it, does nothing);
        returns ``{"rows", "already", ...}`` with engine facts (``version``, ``snapshot_id``).
        ``state[JOB_KEY]``, which the core adds to what :meth:`begin` returned, names the job
        (its config and input): a target that keeps it with the commit returns it from
        :meth:`last_job`."""

    def last_job(self) -> dict[str, str] | None:
        """The job whose commit is the target's latest, as the target kept it:
        ``{"job": state[JOB_KEY], "run_id": ..., "at": ...}`` (``at``: when, as the engine
        tells it), or None when it keeps none or there is no table (the default). With it, a
        ``run.resume=true`` that finds nothing staged is refused when this very job already
        published (a process killed after its commit), instead of writing its rows again.
        Contract 1.5."""
        return None

    @abstractmethod
    def discard(
        self, state: dict[str, Any], unit_ids: list[str], receipts: list[dict[str, Any]]
    ) -> None:
        """Drop what the uncommitted ``unit_ids`` staged (``receipts``: those known)."""

    @abstractmethod
    def abandon(self, state: dict[str, Any]) -> None:
        """Drop everything the job staged (it committed no unit); never after ``publish``."""


class TableSink(Sink, ABC):
    """Writes a table or dataset through a :class:`StagedTarget`, run like a :class:`FileSink`
    (units committed in the target's job store, one commit at the end, ``run.resume=true``)."""

    @abstractmethod
    def target(self, params: Any) -> StagedTarget:
        """The target ``params`` name (opens nothing yet)."""


class JobStore(Protocol):
    """Where a staged job keeps its record and its units' markers (JSON-able dicts), one atomic
    step per method. :class:`FolderStore` serves file sinks and a target's
    :class:`~pipeline.contract.sink.StoreFolder`; a target with a store of its own (tables in its
    database) implements these methods. Optional: ``start_over(named) -> str``, how a user drops
    the leftovers (``drop tables ...``)."""

    #: Where the store is, as messages show it (no credentials).
    location: str

    def load(self) -> dict[str, Any] | None:
        """The job record, or None when there is none. Creates nothing."""

    def start(self, job: dict[str, Any]) -> None:
        """Write a new job record, dropping any markers a previous record had."""

    def save(self, job: dict[str, Any]) -> None:
        """Replace the job record (e.g. its ``state``)."""

    def committed(self) -> dict[str, dict[str, Any]]:
        """The markers of the committed units, by unit id."""

    def add_marker(self, marker: dict[str, Any]) -> None:
        """Write a unit's marker (``marker["unit"]`` is its id): the unit is committed."""

    def remove(self) -> None:
        """Drop the record and every marker (nothing to do when there are none)."""
