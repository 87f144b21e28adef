"""The plugin contract: one small abstract class per plugin kind.

A plugin class carries ``Params``, a pydantic model (``extra="forbid"``, each field with a
description) that validates its ``params`` block. Sources and sinks run on the driver and hand Ray
Data a dataset (or take one); preprocessors and predictors are ``map_batches`` callables whose
``__init__`` does the heavy set-up once per worker. Errors a plugin raises name keys relative to
its own block (``params.input_column``); the core makes them absolute
(``predictor.params.input_column``), on the driver and inside workers alike.

Kinds, and what a plugin must implement (the abstract methods):

- :class:`Source`: ``read(params, unit)``; optionally ``schema`` (types known before the job),
  ``units`` (work units for resume), ``explain_read_error`` and ``preview`` (a few rows on the
  driver, for a dry run's estimates).
- :class:`MapStage` (:class:`Preprocessor`, :class:`Predictor`): ``__call__(batch)``;
  ``output_schema`` for the columns it adds; optionally ``preflight`` (check an outside service
  before a run), ``estimate`` (a dry run's forecast) and ``job_services`` (objects shared by
  every worker of the job, such as a job-wide rate limiter).
- Sinks: a :class:`FileSink` writes a folder of files that the core stages, commits per work
  unit, resumes and publishes (``output``, ``write_files``); a :class:`TableSink` hands the core
  a :class:`StagedTarget` (a table or dataset that stages each unit's rows invisibly and
  publishes them in one commit), which the core runs the same way; a :class:`DatasetSink`
  consumes the whole dataset itself (``write``), e.g. printing rows. File and dataset sinks may
  refuse columns they cannot hold (``check_schema``); a table sink's target does (``check``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from pipeline.settings import StageSettings

if TYPE_CHECKING:  # Ray is imported by the plugins that use it, at run time only.
    import pyarrow as pa
    import ray.data

    from pipeline.jobstore import JobStore


class PluginParams(BaseModel):
    """Base for plugin ``Params``: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(
        extra="forbid",
        validate_default=True,
        protected_namespaces=(),
        # A field may take a name BaseModel reserves (``schema``) through an alias; dumps
        # (the dry-run plan, the fingerprint) use the name users write.
        serialize_by_alias=True,
    )


class Plugin:
    """Common to every plugin: the params model and a one-line summary (the docstring)."""

    Params: ClassVar[type[PluginParams]] = PluginParams
    #: Distributions (pip names) whose versions decide the plugin's results, e.g. the model
    #: library; a run records their versions in its metrics.
    libraries: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class IOContext:
    """What the planner decided for read and write tasks; pass it on to Ray's I/O calls."""

    #: Ray remote args for read/write tasks (the planner's CPU share), e.g. ``{"num_cpus": 0.5}``.
    ray_remote_args: dict[str, Any] = field(default_factory=dict)
    #: Blocks the source should produce so every worker of every stage gets work (None: Ray's).
    num_blocks: int | None = None
    #: The job's config fingerprint (what determines the output), for sinks that record it.
    fingerprint: str | None = None
    #: Target size of a work unit, for sources that split their input (``run.unit_rows``).
    unit_rows: int | None = None
    #: Target bytes of input files per work unit (``run.unit_bytes``).
    unit_bytes: int | None = None


@dataclass(frozen=True)
class WorkUnit:
    """A deterministic slice of a source's input: what the runner commits and resumes by.

    ``id`` must be stable across runs of the same config on the same input (it names the
    committed work); ``spec`` is the source's own JSON-able description (files, a row range).
    """

    id: str
    spec: Any = None


#: The unit of a source that does not split its input: the whole source, run in one piece.
WHOLE_SOURCE = WorkUnit(id="all")


@dataclass(frozen=True)
class Preview:
    """The first rows of a source, read on the driver without Ray (:meth:`Source.preview`)."""

    #: At most the ``limit`` asked for, with the types :meth:`Source.schema` gives.
    rows: pa.Table
    #: Rows of the whole input: exact, estimated, or None when unknown.
    total_rows: int | None
    #: How ``total_rows`` was found, for the dry run's report, e.g. "exact: Parquet footers" or
    #: "estimated: 2.1 MiB of files at the first 1,000 rows' bytes per row".
    how: str = ""


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


class _IOPlugin(Plugin):
    def __init__(self, io: IOContext | None = None) -> None:
        self.io = io or IOContext()


class Source(_IOPlugin, ABC):
    """Reads the input into Ray Datasets, one per work unit. Runs on the driver."""

    #: A map stage run on the rows right after the read (decoding files, parsing records), with
    #: the source's params, inside the guard with key ``source`` and the ``source.stage``
    #: settings: a row that does not decode is named, skipped or set aside
    #: (``source.stage.on_error``). :meth:`schema` then gives what the read yields and the
    #: decoder's ``output_schema`` what it makes of it. None: the read yields the rows.
    decoder: ClassVar[type[MapStage] | None] = None

    def schema(self, params: Any) -> pa.Schema | None:
        """The columns and Arrow types the source yields, found on the driver without Ray.

        Exactly what :meth:`read` will produce (a file source reads metadata or a sample of its
        first file, then reads every file with those types). The planner checks every stage and
        the sink against it before any model loads. Raise a
        :class:`~pipeline.errors.DataError` naming the key for an input that cannot be reached
        or read, and :class:`~pipeline.errors.EmptyInputError` for one without rows. None:
        unknown until read (the runner then asks the first unit's dataset).
        """
        return None

    def unit_rows(self, params: Any, unit: WorkUnit) -> int | None:
        """Rows in ``unit`` if known unread (:func:`pipeline.budget.fit_windows`); else None."""
        return None

    def units(self, params: Any) -> list[WorkUnit]:
        """Split the input into work units (sized by ``self.io.unit_rows``/``unit_bytes``).

        The runner runs and commits the job unit by unit, so a resumed job skips finished
        units. The default is one unit: the whole source.
        """
        return [WHOLE_SOURCE]

    @abstractmethod
    def read(self, params: Any, unit: WorkUnit = WHOLE_SOURCE) -> ray.data.Dataset:
        """A lazy Dataset of ``unit``'s rows (one returned by :meth:`units`, or the whole
        source); pass ``self.io`` settings to Ray's read call."""

    def explain_read_error(self, params: Any, unit: WorkUnit) -> Exception | None:
        """After reading ``unit`` failed: a BulkInferError naming the input at fault, if found."""
        return None

    def preview(self, params: Any, limit: int) -> Preview | None:
        """At most ``limit`` rows from the start of the input and the input's row count, read
        on the driver without Ray (a dry run hands them to the stages' :meth:`MapStage.estimate`).
        None: the source cannot preview (the default)."""
        return None


class Sink(_IOPlugin):
    """What every sink can do before the job: refuse an output or columns it cannot take."""

    def check(self, params: Any) -> None:
        """Refuse before the job starts (e.g. a target that cannot be written); raise a
        BulkInferError naming the key."""

    def check_schema(self, params: Any, schema: pa.Schema) -> None:
        """Refuse, before any model loads, a column this sink cannot hold.

        ``schema`` is what the last stage yields. Raise a :class:`~pipeline.errors.DataError`
        naming the column, the sink and what to do instead (another sink, or leave the column
        out). Columns of pickled Python objects are refused by the core for every sink.
        """


class DatasetSink(Sink, ABC):
    """Consumes the final Dataset itself (prints it, sends it somewhere). Runs on the driver.

    The job runs in one piece: no staging, no work units, no resume.
    """

    @abstractmethod
    def write(self, dataset: ray.data.Dataset, params: Any) -> SinkResult:
        """Consume ``dataset``; pass ``self.io`` settings to Ray's write call."""


class FileSink(Sink, ABC):
    """Writes a folder of files; the core makes the output atomic and resumable.

    The runner writes each work unit into its own folder of a staging area beside
    :meth:`output`, commits it with the row counts :meth:`write_files` reports, and moves the
    whole output into place with a ``_SUCCESS`` manifest once the job succeeded (``mode``:
    error, overwrite or append).
    """

    @abstractmethod
    def output(self, params: Any) -> FileOutput:
        """Where the output goes, and its mode."""

    @abstractmethod
    def write_files(self, dataset: ray.data.Dataset, folder: str, params: Any) -> dict[str, int]:
        """Write ``dataset`` as files into ``folder`` (empty, on the output's filesystem);
        return the rows of each file written, by file name, as the write tasks counted them."""


@dataclass(frozen=True)
class StoreFolder:
    """A folder (``filesystem``: pyarrow's, ``path`` in it, ``location`` for messages) where
    the core keeps a :class:`TableSink` job's record, e.g. ``<dataset>.__bulkinfer_staging``."""

    filesystem: Any
    path: str
    location: str


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
        """Refuse (a :class:`~pipeline.errors.DataError` naming the key) a column the target
        cannot hold and what ``mode`` forbids (an existing table with ``mode: error``). When
        ``resuming`` (this job's record is there) the target may hold what that job
        published: refuse only columns. Dry runs too: reads, creates nothing."""

    @abstractmethod
    def job_store(self) -> JobStore | StoreFolder:
        """Where the job record goes: a :class:`StoreFolder` for the core's folder store, or
        a :class:`pipeline.jobstore.JobStore` of its own. Read on dry runs: creates nothing."""

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
        returns ``{"rows", "already", ...}`` with engine facts (``version``, ``snapshot_id``)."""

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


class MapStage(Plugin, ABC):
    """A ``map_batches`` callable. ``__init__`` runs once per worker with the validated params.

    A stage whose :meth:`job_services` returns objects is built as ``cls(params, services=...)``
    with them; every other stage as ``cls(params)``.
    """

    default_stage: ClassVar[StageSettings] = StageSettings()

    def __init__(self, params: Any) -> None:
        self.params = params

    @abstractmethod
    def __call__(self, batch: Any) -> Any:
        """One batch in the stage's ``batch_format`` -> the batch with the stage's columns."""

    @classmethod
    def output_schema(cls, params: Any, schema: pa.Schema) -> pa.Schema:
        """The columns and Arrow types after this stage, given those before it (no model load).

        Every column the stage adds or replaces must be declared with its type (an embedding
        ``fixed_size_list<float32>[n]``, or ``list<float32>`` when its length is only known
        once the model loads; generated text ``string``; a score ``float32``; ``null`` for a
        type only the model can tell): the planner checks the sink against the result before
        any model loads, and the core checks each output batch against it. Raise
        :class:`pipeline.errors.ColumnNotFoundError` for a column the stage needs but the input
        lacks, and :class:`pipeline.errors.DataError` for one of the wrong type, with keys
        relative to the stage (``params.input_column``). The default: columns pass unchanged.
        """
        return schema

    def row_lengths(self, batch: Any) -> Any:
        """How long each row is for the model (tokens of a text), one integer per row, for a
        stage that returns one row per input row and whose cost grows with the longest row of
        a model batch. A stage that defines it gets windows of rows sorted by length, cut into
        model batches of ``stage.batch_size``, its outputs restored to input order: less
        padding, the same results. The default (None) leaves rows in input order."""
        return None

    @classmethod
    def sorts_by_length(cls) -> bool:
        """Whether the stage defines :meth:`row_lengths` (the planner then sizes a window)."""
        return cls.row_lengths is not MapStage.row_lengths

    def counters(self) -> dict[str, float]:
        """Amounts since the last call (e.g. requests, retries, tokens), reported with each
        batch: the core adds them up per stage (a retried batch replaces its report) into
        ``metrics.json`` and :meth:`summary`. The default reports nothing."""
        return {}

    @classmethod
    def summary(cls, params: Any, counters: dict[str, float], seconds: float) -> str | None:
        """One line on the job's totals of :meth:`counters` over the job's ``seconds``, printed
        before the summary line."""
        return None

    @classmethod
    def preflight(cls, params: Any) -> None:
        """Check, on the driver, what the stage needs from outside the job (a server, a
        service's credentials) before a real run spends any rows; dry runs skip it. Raise a
        :class:`~pipeline.errors.BulkInferError` naming the key to fix (relative to the stage,
        ``params.base_url``); keep it to seconds. The default checks nothing."""

    @classmethod
    def estimate(cls, params: Any, rows: pa.Table, total_rows: int | None) -> str | None:
        """A dry run's forecast for this stage, one line (e.g. requests, tokens, cost).

        ``rows``: the first rows of the source (:meth:`Source.preview`; the source's columns,
        not those earlier stages add); ``total_rows``: the input's rows, exact or estimated
        (None: unknown). Runs on the driver without Ray. None: nothing to say (the default).
        """
        return None

    @classmethod
    def job_services(cls, params: Any) -> dict[str, Any]:
        """Objects every worker of this stage shares for one job, made on the driver once Ray
        is up and before any work unit runs (e.g. a Ray actor holding a job-wide rate limit).

        Each worker gets them as ``cls(params, services=<this dict>)``; they must pickle. At
        the end of the job (done or failed) the core calls ``close()`` on each value that has
        one. The default: none, and the stage is built as ``cls(params)``.
        """
        return {}


class Preprocessor(MapStage):
    """A CPU transform of batches; runs as tasks unless its ``default_stage`` says otherwise."""


class Predictor(MapStage):
    """Runs a model on batches; an actor pool by default so the model loads once per actor."""

    default_stage: ClassVar[StageSettings] = StageSettings(compute="actors", concurrency=1)
