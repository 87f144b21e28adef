"""Map stages (preprocessors and predictors): ``map_batches`` callables built once per worker.

Required: ``__call__(batch)``. Optional: ``output_schema`` (the columns a stage adds, with their
Arrow types; without it they are decided at run time, from the stage's first batch),
``row_lengths`` (rows sorted by length into model batches), ``counters`` and
``summary``, ``preflight``, ``estimate``, ``env_vars``, ``job_services``, ``calls_per_actor``,
``keeps_journal`` and ``worker_memory`` (what one worker holds, for the planner's choice of
actors). Params reach a stage as ``cls(params)`` (``cls(params, services=...)`` with job
services or a journal) and every classmethod hook takes the validated ``params`` first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.contract.plugin import Plugin
from pipeline.contract.settings import StageSettings

if TYPE_CHECKING:
    import pyarrow as pa


class MapStage(Plugin, ABC):
    """A ``map_batches`` callable. ``__init__`` runs once per worker with the validated params.

    A stage whose :meth:`job_services` returns objects is built as ``cls(params, services=...)``
    with them; every other stage as ``cls(params)``.
    """

    default_stage: ClassVar[StageSettings] = StageSettings()
    #: True for a stage that may return fewer (or more) rows than it got, e.g. a filter: it
    #: returns each kept row with every column of its input that it does not replace,
    #: bulkinfer's row id column among them. Other stages return one row per input row, in
    #: order, and never see that column.
    passes_columns: ClassVar[bool] = False
    #: True for a stage whose results cost money or minutes each (an LLM endpoint's replies):
    #: it gets ``services["journal"]``, a :class:`~pipeline.contract.journal.Journal` kept in
    #: the job's staging area, where it stores each result under a key of its request as soon
    #: as it has it, and looks results up before asking again. A resumed job, an actor
    #: restarted after a crash and the guard's row-by-row retry of a failed batch find them
    #: there. Contract 1.3; default False (no journal).
    keeps_journal: ClassVar[bool] = False

    def __init__(self, params: Any) -> None:
        self.params = params

    @abstractmethod
    def __call__(self, batch: Any) -> Any:
        """One batch in the stage's ``batch_format`` -> the batch with the stage's columns."""

    @classmethod
    def output_schema(cls, params: Any, schema: pa.Schema) -> pa.Schema:
        """The columns and Arrow types after this stage, given those before it (no model load).

        Every column the stage adds or replaces must be declared with its type (an embedding
        ``fixed_size_list<float32>[n]``, or ``list<float32>`` when its length is only known once the
        model loads; generated text ``string``; a score ``float32``; ``null`` for a type only the
        model can tell): the planner checks the sink against the result before any model loads, and
        the core checks each output batch against it. Raise
        :class:`pipeline.contract.errors.ColumnNotFoundError` for a column the stage needs but the
        input lacks, and :class:`pipeline.contract.errors.DataError` for one of the wrong type, with
        keys relative to the stage (``params.input_column``).

        A stage that does not define it (a plugin written for bulkinfer 0.1, whose contract did
        not ask for it) has its columns decided at run time: the dry run says so, and the job
        types them from the stage's first output batch (each column's Arrow type as Ray Data
        holds it) and checks them against the sink before any row is written; later batches
        must keep those types. (The default returns ``schema`` unchanged; the planner does not
        call it.)
        """
        return schema

    @classmethod
    def declares_output_schema(cls) -> bool:
        """Whether the stage defines :meth:`output_schema` (else its columns are decided at run
        time, from its first output batch)."""
        own = getattr(cls.output_schema, "__func__", None)
        return own is not MapStage.output_schema.__func__

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
        :class:`~pipeline.contract.errors.BulkInferError` naming the key to fix (relative to the
        stage, ``params.base_url``); keep it to seconds. The default checks nothing."""

    @classmethod
    def estimate(cls, params: Any, rows: pa.Table, total_rows: int | None) -> str | None:
        """A dry run's forecast for this stage, one line (e.g. requests, tokens, cost).

        ``rows``: the first rows of the source (:meth:`Source.preview`; the source's columns,
        not those earlier stages add); ``total_rows``: the input's rows, exact or estimated
        (None: unknown). Runs on the driver without Ray. None: nothing to say (the default).
        """
        return None

    @classmethod
    def env_vars(cls, params: Any) -> dict[str, str]:
        """Environment variables every task and actor of the job starts with while this stage
        is in it (Ray's ``runtime_env`` ``env_vars``, set on the job's reads, map stages and
        writes alike, so Ray Data still fuses them), e.g. a model library's offline switches
        when the model is a local folder: ``{"HF_HUB_OFFLINE": "1"}``. The dry run prints
        them; a variable a stage's own ``stage.ray_remote_args.runtime_env.env_vars`` sets wins
        in that stage. No secrets: the plan shows them. The default: none."""
        return {}

    @classmethod
    def calls_per_actor(cls, params: Any, batch_size: int) -> int:
        """How many map batches one actor of the stage works on at once (Ray Data's
        ``ActorPoolStrategy(max_concurrent_calls_per_actor=...)``), given the stage's
        ``stage.batch_size`` in rows. More than 1 only for a stage that waits rather than
        computes (requests to a server): its ``__call__`` then runs on several threads of one
        actor at once and must be thread-safe. Contract 1.3; the default, 1, calls the stage
        with one batch at a time."""
        return 1

    @classmethod
    def worker_memory(cls, params: Any) -> int | None:
        """Bytes of memory one worker of this stage holds at its peak (its libraries, the
        model, a batch), estimated from ``params`` without loading anything; None (the
        default): unknown.

        The planner uses it for an actor stage on CPUs whose ``concurrency`` is unset: it runs
        one single-thread actor per core where the node's memory holds that many workers of
        this size, fewer (with more threads each) where it does not, and one actor with a
        thread per core when the size is unknown (:func:`pipeline.plan.shares.size_pools`).
        Contract 1.4.
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
