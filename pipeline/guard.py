"""Bad rows: the wrapper the runner puts around every map stage (``stage.on_error``).

A stage's plugin is called on a whole batch. If that raises, ``on_error: fail`` stops the job with
a message naming the stage; ``skip`` and ``dead_letter`` call the plugin again row by row, so only
the rows that still fail are set aside (``dead_letter`` keeps them, with the stage and the error,
for ``<output>/_errors/``).

Every batch is reported to a :class:`Ledger` actor: rows in, rows out and the rows set aside. The
ledger keys each report by the Ray Data task and the batch's position in it, so a task that Ray
retries (a worker died) overwrites its earlier report instead of counting twice. The driver reads
the ledger after each work unit; the ledger also stops the job early once a stage is over its
error budget.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import traceback
from dataclasses import dataclass
from typing import Any

from pipeline.errors import BulkInferError, ColumnNotFoundError, ConfigError, DataError, PlanError
from pipeline.interfaces import MapStage

#: A stage is stopped early (before the end of a work unit) only after it has seen this many rows,
#: so a few bad rows at the start do not fail a job whose overall error rate is within budget.
EARLY_STOP_MIN_ROWS = 1000
#: Longest error text kept per set-aside row.
MAX_ERROR_CHARS = 2000


class StageFailedError(DataError):
    """A map stage raised on a batch and its ``on_error`` is ``fail``."""


class ErrorBudgetError(DataError):
    """A stage set aside more rows than its ``max_error_rate`` allows."""


class StageOutputError(DataError):
    """A stage returned columns its ``output_schema`` does not declare, or of another type."""


#: Errors that are never about one row: raising them row by row would only hide them.
NOT_ROW_ERRORS = (ConfigError, PlanError, ColumnNotFoundError, StageOutputError)


@dataclass(frozen=True)
class StageGuard:
    """How one stage handles errors, and where it reports rows (picklable, sent to workers)."""

    key: str  # config key of the stage, e.g. "preprocessors[0]"
    name: str  # plugin name
    on_error: str = "fail"
    max_error_rate: float = 0.0
    ledger: Any = None  # Ledger actor handle, or None (no accounting)
    #: The ``pyarrow.Schema`` the stage declares for its output (None: not checked).
    schema: Any = None


def describe_error(exc: BaseException) -> str:
    """``Type: message (at file:line)``, one line, with the innermost frame of the traceback."""
    text = f"{type(exc).__name__}: {exc}".strip()
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno})"
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def budget_message(guard_key: str, name: str, rate: float, bad: int, rows: int, first: str) -> str:
    """The message for a stage over its error budget."""
    return (
        f"stage '{name}' set aside {bad} of {rows} rows ({bad / max(rows, 1):.1%}), more than "
        f"max_error_rate={rate:g} allows. First error: {first or 'unknown'}. Fix the data or the "
        f"stage, or raise {guard_key}.stage.max_error_rate."
    )


# --- batches in any of Ray Data's formats (dict of numpy arrays, pandas, pyarrow) ---------------


def num_rows(batch: Any) -> int:
    """Rows in a batch of any format."""
    if isinstance(batch, dict):
        return len(next(iter(batch.values()))) if batch else 0
    if hasattr(batch, "num_rows"):
        return int(batch.num_rows)
    return len(batch)


def take_row(batch: Any, i: int) -> Any:
    """Row ``i`` as a one-row batch of the same format."""
    if isinstance(batch, dict):
        return {k: v[i : i + 1] for k, v in batch.items()}
    if hasattr(batch, "slice") and hasattr(batch, "num_rows"):
        return batch.slice(i, 1)
    return batch.iloc[i : i + 1]


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def row_values(batch: Any, i: int) -> dict[str, Any]:
    """Row ``i`` as a JSON-friendly mapping of column -> value."""
    if isinstance(batch, dict):
        return {k: _plain(v[i]) for k, v in batch.items()}
    if hasattr(batch, "slice") and hasattr(batch, "num_rows"):
        return {k: _plain(v) for k, v in batch.slice(i, 1).to_pylist()[0].items()}
    return {str(k): _plain(v) for k, v in batch.iloc[i].items()}


def as_table(batch: Any) -> Any:
    """A batch of any of Ray Data's formats as the Arrow table Ray Data would build from it
    (tensors become Ray's tensor extension columns); pyarrow alone when Ray is not installed."""
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    try:
        from ray.data.block import BlockAccessor
    except ImportError:  # a stage wrapper used without Ray (the GPU check)
        from plugins.batches import to_arrow

        return to_arrow(batch)
    return BlockAccessor.for_block(BlockAccessor.batch_to_block(batch)).to_arrow()


def check_output(table: Any, guard: StageGuard) -> None:
    """Raise :class:`StageOutputError` unless ``table`` holds exactly the declared columns,
    each of a type that keeps the declared promise (:func:`pipeline.schema.conforms`)."""
    from pipeline.schema import conforms, describe_schema, is_python_object, type_name

    declared = guard.schema
    where = f"stage '{guard.name}' ({guard.key})"
    for column in table.schema:
        if is_python_object(column.type):
            raise StageOutputError(
                f"{where} returned column {column.name!r} holding Python objects that Arrow "
                "cannot store (Ray Data would pickle them); return numbers, strings, lists or "
                "arrays",
                key=guard.key,
            )
        if column.name not in declared.names:
            raise StageOutputError(
                f"{where} returned column {column.name!r} ({type_name(column.type)}), which its "
                f"output_schema does not declare (declared: {describe_schema(declared)})",
                key=guard.key,
            )
        kind = declared.field(column.name).type
        if not conforms(column.type, kind):
            raise StageOutputError(
                f"{where} returned column {column.name!r} as {type_name(column.type)}, but its "
                f"output_schema declares {type_name(kind)}",
                key=guard.key,
            )
    missing = [name for name in declared.names if name not in table.schema.names]
    if missing:
        raise StageOutputError(
            f"{where} did not return column {missing[0]!r}, which its output_schema declares",
            key=guard.key,
        )


def _outputs(result: Any) -> list[Any]:
    """A stage's return value as a list of batches (a generator stage is run to the end)."""
    if result is None:
        return []
    if isinstance(result, dict) or hasattr(result, "num_rows") or hasattr(result, "iloc"):
        return [result]
    return list(result)


# --- the wrapper -------------------------------------------------------------------------------


def _task_position(stage_key: str) -> str | None:
    """``op/task/batch`` for the Ray Data task running this batch, stable across task retries."""
    try:
        from ray.data._internal.execution.interfaces.task_context import TaskContext
    except ImportError:  # moved in another Ray version: fall back to the content hash
        return None
    ctx = TaskContext.get_current()
    if ctx is None:
        return None
    # A fresh TaskContext arrives with every task attempt, so a retried task counts from zero.
    seqs = ctx.__dict__.setdefault("_bulkinfer_batches", {})
    seq = seqs.get(stage_key, 0)
    seqs[stage_key] = seq + 1
    return f"{ctx.op_name}/{ctx.task_idx}/{seq}"


def batch_key(stage_key: str, batch: Any) -> str:
    """A key for one batch of one stage that a retry of the same task reproduces."""
    position = _task_position(stage_key)
    if position is None:
        position = hashlib.sha1(pickle.dumps(batch, protocol=5)).hexdigest()
    return f"{stage_key}|{position}"


class Guarded:
    """Calls one stage instance on batches under its :class:`StageGuard`."""

    def __init__(self, stage: MapStage, guard: StageGuard) -> None:
        self.stage = stage
        self.guard = guard

    def _fail(self, exc: Exception, rows: int) -> BulkInferError:
        if isinstance(exc, BulkInferError):
            return exc
        g = self.guard
        return StageFailedError(
            f"stage '{g.name}' failed on a batch of {rows} rows: {describe_error(exc)}. Set "
            f"{g.key}.stage.on_error=skip or dead_letter to set failing rows aside.",
            key=g.key,
        )

    def __call__(self, batch: Any) -> Any:
        try:
            return self._call(batch)
        except BulkInferError as error:
            # Ray Data wraps what a UDF raises in its own exception types, and the original does
            # not always survive the trip to the driver; the ledger hands it over intact.
            if self.guard.ledger is not None:
                import ray

                ray.get(self.guard.ledger.fail.remote(error))
            raise

    def _call(self, batch: Any) -> Any:
        g = self.guard
        key = batch_key(g.key, batch) if g.ledger is not None else ""
        rows = num_rows(batch)
        records: list[dict[str, Any]] = []
        try:
            outputs = _outputs(self.stage(batch))
        except NOT_ROW_ERRORS:
            raise
        except Exception as exc:
            if g.on_error == "fail":
                raise self._fail(exc, rows) from None
            outputs = []
            for i in range(rows):
                try:
                    outputs += _outputs(self.stage(take_row(batch, i)))
                except NOT_ROW_ERRORS:
                    raise
                except Exception as row_exc:
                    record: dict[str, Any] = {
                        "stage": g.key,
                        "plugin": g.name,
                        "error": describe_error(row_exc),
                    }
                    if g.on_error == "dead_letter":
                        record["row"] = row_values(batch, i)
                    records.append(record)
        if g.schema is not None:
            outputs = [as_table(o) for o in outputs]
            for table in outputs:
                check_output(table, g)
        if g.ledger is not None:
            import ray

            rows_out = sum(num_rows(o) for o in outputs)
            over = ray.get(g.ledger.record.remote(key, g.key, rows, rows_out, records))
            if over:
                raise ErrorBudgetError(over, key=f"{g.key}.stage.max_error_rate")
        if len(outputs) == 1:
            return outputs[0]
        return (o for o in outputs if num_rows(o))


class GuardedActor:
    """Actor-pool wrapper: builds the stage once per actor, then guards every batch."""

    def __init__(self, plugin: type[MapStage], params: Any, guard: StageGuard) -> None:
        self._guarded = Guarded(plugin(params), guard)

    def __call__(self, batch: Any) -> Any:
        return self._guarded(batch)


class GuardedTask:
    """Task wrapper. ``plugin`` builds the stage; the runner passes a :class:`StageCall`
    builder, which keeps the plugin instance (the model) once per worker process itself, so
    building it here once per task is cheap and never reuses another job's accounting."""

    def __init__(self, plugin: Any, params: Any, guard: StageGuard) -> None:
        self.plugin = plugin
        self.params = params
        self.guard = guard
        self._stage: Any = None

    def __call__(self, batch: Any) -> Any:
        if self._stage is None:
            self._stage = self.plugin(self.params)
        return Guarded(self._stage, self.guard)(batch)


def named_like(wrapper: type, plugin: type) -> type:
    """A subclass of ``wrapper`` named after ``plugin``, so Ray Data's operator names stay
    ``MapBatches(<Plugin>)`` in progress bars and stats."""
    return type(plugin.__name__, (wrapper,), {"__qualname__": plugin.__qualname__})


# --- the ledger --------------------------------------------------------------------------------


def _empty_counts() -> dict[str, int]:
    return {"rows_in": 0, "rows_out": 0, "skipped": 0, "dead_letter": 0}


def add_counts(into: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    """Add per-stage counts ``more`` into ``into``."""
    for stage, counts in more.items():
        total = into.setdefault(stage, {})
        for name, value in counts.items():
            total[name] = total.get(name, 0) + value


class Ledger:
    """Rows in/out and set-aside rows per stage for the work unit being run (a Ray actor), and
    the decisions stages made at run time (notes), for the whole job.

    Reports are keyed by batch (see :func:`batch_key`): a retried task replaces its reports.
    ``budgets`` maps stage key -> (plugin name, max_error_rate) for stages that set rows aside.
    """

    def __init__(self, budgets: dict[str, tuple[str, float]]) -> None:
        self.budgets = budgets
        self.job_notes: list[str] = []
        self.reset({})

    def note(self, message: str) -> None:
        """A decision a worker made at run time (``batch_size: auto``, out-of-memory halving)."""
        if message not in self.job_notes:
            self.job_notes.append(message)

    def notes(self) -> list[str]:
        """The job's notes, in the order they first arrived."""
        return self.job_notes

    def reset(self, base: dict[str, dict[str, int]]) -> None:
        """Start a new unit; ``base`` holds the counts of the units already committed."""
        self.error: BulkInferError | None = None
        self.base = base
        self.batches: dict[str, tuple[str, int, int, list[dict[str, Any]]]] = {}
        self.totals: dict[str, dict[str, int]] = {}
        self.first_error: dict[str, str] = {}

    def _apply(self, stage: str, rows_in: int, rows_out: int, records: list, sign: int) -> None:
        counts = self.totals.setdefault(stage, _empty_counts())
        counts["rows_in"] += sign * rows_in
        counts["rows_out"] += sign * rows_out
        for record in records:
            kind = "dead_letter" if "row" in record else "skipped"
            counts[kind] += sign

    def record(
        self, key: str, stage: str, rows_in: int, rows_out: int, records: list[dict[str, Any]]
    ) -> str | None:
        """Store one batch's report; return a message if the stage is now over its budget."""
        old = self.batches.get(key)
        if old is not None:
            self._apply(old[0], old[1], old[2], old[3], -1)
        self.batches[key] = (stage, rows_in, rows_out, records)
        self._apply(stage, rows_in, rows_out, records, +1)
        if records and stage not in self.first_error:
            self.first_error[stage] = records[0]["error"]
        if stage not in self.budgets:
            return None
        return self.over_budget(stage, min_rows=EARLY_STOP_MIN_ROWS)

    def over_budget(self, stage: str, min_rows: int = 0) -> str | None:
        """A message if ``stage`` (committed units plus this one) is over its error budget."""
        counts: dict[str, dict[str, int]] = {}
        add_counts(counts, {stage: self.base.get(stage, _empty_counts())})
        add_counts(counts, {stage: self.totals.get(stage, _empty_counts())})
        return over_budget(self.budgets, counts, self.first_error, stage, min_rows)

    def fail(self, error: BulkInferError) -> None:
        """Keep the first error that stopped a stage, for the driver to report."""
        if self.error is None:
            self.error = error

    def failure(self) -> BulkInferError | None:
        """The error a stage stopped the job with, if any."""
        return self.error

    def drain(self) -> dict[str, Any]:
        """This unit's per-stage counts and dead-letter records (skipped rows are counted only)."""
        records = [r for batch in self.batches.values() for r in batch[3] if "row" in r]
        return {"stages": self.totals, "records": records, "first_error": self.first_error}


def over_budget(
    budgets: dict[str, tuple[str, float]],
    counts: dict[str, dict[str, int]],
    first_errors: dict[str, str],
    stage: str,
    min_rows: int = 0,
) -> str | None:
    """A message if ``stage`` set aside more than its budget of the rows it received.

    ``budgets``: stage -> (plugin name, max_error_rate); no budget, no limit. Below ``min_rows``
    rows received, the stage is not judged yet.
    """
    if stage not in budgets:
        return None
    name, rate = budgets[stage]
    c = counts.get(stage, {})
    bad, rows = c.get("skipped", 0) + c.get("dead_letter", 0), c.get("rows_in", 0)
    if bad == 0 or rows < min_rows or bad <= rate * rows:
        return None
    return budget_message(stage, name, rate, bad, rows, first_errors.get(stage, ""))


def dead_letter_lines(records: list[dict[str, Any]]) -> bytes:
    """Dead-letter records as JSON lines (values JSON cannot hold are written as text)."""
    return b"".join(
        json.dumps(r, default=str, ensure_ascii=False).encode() + b"\n" for r in records
    )
