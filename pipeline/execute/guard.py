"""Bad rows: the wrapper the runner puts around every map stage (``stage.on_error``).

A stage's plugin is called on a whole batch. If that raises, ``on_error: fail`` stops the job with
a message naming the stage; ``skip`` and ``dead_letter`` call the plugin again row by row, so only
the rows that still fail are set aside (``dead_letter`` keeps them, with the stage and the error,
for ``<output>/_errors/``).

Every batch is reported to the job's :class:`~pipeline.execute.ledger.Ledger` actor (rows in, rows
out, the rows set aside, the stage's counters), keyed so that a retried task replaces its report.
Each output batch is checked against the columns the stage declared (:func:`check_batch_types`), and
errors the stage raises get its config key in full (``preprocessors[0].params.condition``).
"""

from __future__ import annotations

import hashlib
import pickle
import traceback
from dataclasses import dataclass
from typing import Any

from pipeline.contract.batches import batch_rows as num_rows
from pipeline.contract.batches import slice_batch, to_table
from pipeline.contract.errors import (
    BulkInferError,
    ColumnNotFoundError,
    ConfigError,
    DataError,
    PlanError,
)
from pipeline.contract.stage import MapStage
from pipeline.output.progress import ROW_ID

#: Longest error text kept per set-aside row.
MAX_ERROR_CHARS = 2000


class StageFailedError(DataError):
    """A map stage raised on a batch and its ``on_error`` is ``fail``."""


class ErrorLimitError(DataError):
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
    #: The stage's :attr:`~pipeline.contract.stage.MapStage.passes_columns`: it gets the row
    #: ids with its batch and returns them with each row it keeps.
    passes_columns: bool = False
    #: ``schema`` was typed from the stage's first output batch (it declares no
    #: ``output_schema``): messages say so.
    typed_at_run_time: bool = False


def describe_error(exc: BaseException) -> str:
    """``Type: message (at file:line)``, one line, with the innermost frame of the traceback."""
    text = f"{type(exc).__name__}: {exc}".strip()
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno})"
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def take_row(batch: Any, i: int) -> Any:
    """Row ``i`` as a one-row batch of the same format."""
    return slice_batch(batch, i, i + 1)


#: Longest binary value a dead letter keeps as text; longer ones (a whole file) are summarised.
MAX_BYTES_KEPT = 1000


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    if isinstance(value, bytes):
        if len(value) > MAX_BYTES_KEPT:
            return f"<{len(value):,} bytes, not kept>"
        return value.decode("utf-8", errors="replace")
    return value


def row_values(batch: Any, i: int) -> dict[str, Any]:
    """Row ``i`` as a JSON-friendly mapping of column -> value."""
    if isinstance(batch, dict):
        return {k: _plain(v[i]) for k, v in batch.items()}
    if hasattr(batch, "slice") and hasattr(batch, "num_rows"):
        return {k: _plain(v) for k, v in batch.slice(i, 1).to_pylist()[0].items()}
    return {str(k): _plain(v) for k, v in batch.iloc[i].items()}


def check_batch_types(table: Any, guard: StageGuard) -> None:
    """Raise :class:`StageOutputError` unless ``table`` holds exactly the declared columns,
    each of a type that keeps the declared promise (:func:`pipeline.contract.schema.conforms`).

    For a stage typed at run time (``guard.typed_at_run_time``) the promise is its first output
    batch's columns and types."""
    from pipeline.contract.schema import conforms, describe_schema, is_python_object, type_name

    declared = guard.schema
    where = f"stage '{guard.name}' ({guard.key})"
    if guard.typed_at_run_time:  # the stage declares no output_schema
        promise, promised, listed = "its first batch had", "its first batch did not have", "had"
        note = " (the stage declares no output_schema: its columns are its first batch's)"
    else:
        promise, promised = "its output_schema declares", "its output_schema does not declare"
        listed, note = "declared", ""
    for column in table.schema:
        if column.name == ROW_ID:
            continue
        if is_python_object(column.type):
            raise StageOutputError(
                f"{where} returned column {column.name!r} holding Python objects that Arrow "
                "cannot store (Ray Data would pickle them); return numbers, strings, lists or "
                "arrays",
                key=guard.key,
            )
        if column.name not in declared.names:
            raise StageOutputError(
                f"{where} returned column {column.name!r} ({type_name(column.type)}), which "
                f"{promised} ({listed}: {describe_schema(declared)}){note}",
                key=guard.key,
            )
        kind = declared.field(column.name).type
        if not conforms(column.type, kind):
            raise StageOutputError(
                f"{where} returned column {column.name!r} as {type_name(column.type)}, but "
                f"{promise} {type_name(kind)}{note}",
                key=guard.key,
            )
    missing = [name for name in declared.names if name not in table.schema.names]
    if missing:
        raise StageOutputError(
            f"{where} did not return column {missing[0]!r}, which {promise}{note}",
            key=guard.key,
        )


def _outputs(result: Any) -> list[Any]:
    """A stage's return value as a list of batches (a generator stage is run to the end)."""
    if result is None:
        return []
    if isinstance(result, dict) or hasattr(result, "num_rows") or hasattr(result, "iloc"):
        return [result]
    return list(result)


# --- row ids ----------------------------------------------------------------------------------


def split_row_ids(batch: Any) -> tuple[Any, Any]:
    """``(ids, batch without them)``: the row ids of a batch of any format (a numpy int64
    array), or ``(None, batch)`` when it carries none."""
    import numpy as np

    if isinstance(batch, dict):
        if ROW_ID not in batch:
            return None, batch
        rest = {k: v for k, v in batch.items() if k != ROW_ID}
        return np.asarray(batch[ROW_ID], dtype=np.int64), rest
    names = batch.column_names if hasattr(batch, "column_names") else list(batch.columns)
    if ROW_ID not in names:
        return None, batch
    if hasattr(batch, "column_names"):  # pyarrow
        return batch.column(ROW_ID).to_numpy(), batch.drop_columns([ROW_ID])
    return batch[ROW_ID].to_numpy(dtype=np.int64), batch.drop(columns=[ROW_ID])


def with_row_ids(outputs: list[Any], ids: Any, guard: StageGuard) -> list[Any]:
    """The stage's output batches with the row ids of their rows, in order.

    Raises:
        StageOutputError: the stage returned another number of rows than it kept, which only
            a stage that passes its columns on may do.
    """
    import pyarrow as pa

    total = sum(num_rows(o) for o in outputs)
    if total != len(ids):
        raise StageOutputError(
            f"stage '{guard.name}' ({guard.key}) returned {total} rows for {len(ids)}; a stage "
            "that drops or adds rows sets passes_columns = True and returns each row it keeps "
            "with every column of its input",
            key=guard.key,
        )
    out, start = [], 0
    for batch in outputs:
        n = num_rows(batch)
        mine = ids[start : start + n]
        start += n
        if isinstance(batch, dict):
            batch = {**batch, ROW_ID: mine}
        elif hasattr(batch, "column_names"):
            batch = batch.append_column(ROW_ID, pa.array(mine, pa.int64()))
        else:
            batch = batch.assign(**{ROW_ID: mine})
        out.append(batch)
    return out


# --- the wrapper -------------------------------------------------------------------------------


def batch_key(stage_key: str, batch: Any) -> str:
    """A key for one batch of one stage that a retry of the same task reproduces: the Ray Data
    task and the batch's position in it, else (outside a Ray Data task) the batch's content."""
    try:
        from pipeline.execute.ray_internals import task_position

        position = task_position(stage_key)
    except ImportError:  # no Ray (the stage wrapper used on its own)
        position = None
    if position is None:
        position = hashlib.sha1(pickle.dumps(batch, protocol=5)).hexdigest()
    return f"{stage_key}|{position}"


def reported(error: BulkInferError, guard: StageGuard) -> BulkInferError:
    """``error`` with its key made absolute under the stage's block, handed to the ledger.

    Ray Data wraps what a UDF raises in its own exception types, and the original does not
    always survive the trip to the driver (an actor's start-up error arrives only as text); the
    ledger hands it over intact."""
    error = error.within(guard.key)
    if guard.ledger is not None:
        import ray

        ray.get(guard.ledger.fail.remote(error))
    return error


def start_failed(exc: Exception, guard: StageGuard) -> StageFailedError:
    """What a stage's plugin raised while a worker built it (not a BulkInferError), as one
    line naming the stage."""
    return StageFailedError(
        f"stage '{guard.name}' failed to start: {describe_error(exc)}", key=guard.key
    )


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
            raise reported(error, self.guard) from None

    def _call(self, batch: Any) -> Any:
        g = self.guard
        key = batch_key(g.key, batch) if g.ledger is not None else ""
        ids = None
        if not g.passes_columns:
            ids, batch = split_row_ids(batch)
        rows = num_rows(batch)
        records: list[dict[str, Any]] = []
        kept = ids  # the row id of each output row, in order
        try:
            outputs = _outputs(self.stage(batch))
        except NOT_ROW_ERRORS:
            raise
        except Exception as exc:
            if g.on_error == "fail":
                raise self._fail(exc, rows) from None
            outputs, kept_rows = [], []
            for i in range(rows):
                try:
                    out = _outputs(self.stage(take_row(batch, i)))
                    outputs += out
                    kept_rows += [i] * sum(num_rows(o) for o in out)
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
            kept = ids[kept_rows] if ids is not None else None
        if kept is not None:
            outputs = with_row_ids(outputs, kept, g)
        if g.schema is not None:
            outputs = [to_table(o) for o in outputs]
            for table in outputs:
                check_batch_types(table, g)
        if g.ledger is not None:
            import ray

            rows_out = sum(num_rows(o) for o in outputs)
            counters = self.stage.counters() if hasattr(self.stage, "counters") else {}
            report = g.ledger.record.remote(key, g.key, rows, rows_out, records, counters)
            over = ray.get(report)
            if over:
                raise ErrorLimitError(over, key=f"{g.key}.stage.max_error_rate")
        if len(outputs) == 1:
            return outputs[0]
        return (o for o in outputs if num_rows(o))


class GuardedActor:
    """Actor-pool wrapper: builds the stage once per actor, then guards every batch."""

    def __init__(self, plugin: type[MapStage], params: Any, guard: StageGuard) -> None:
        try:
            stage = plugin(params)
        except BulkInferError as error:  # e.g. a model that cannot load: named in full
            raise reported(error, guard) from None
        except Exception as exc:
            raise reported(start_failed(exc, guard), guard) from None
        self._guarded = Guarded(stage, guard)

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
            try:
                self._stage = self.plugin(self.params)
            except BulkInferError as error:
                raise reported(error, self.guard) from None
            except Exception as exc:
                raise reported(start_failed(exc, self.guard), self.guard) from None
        return Guarded(self._stage, self.guard)(batch)


def named_like(wrapper: type, plugin: type) -> type:
    """A subclass of ``wrapper`` named after ``plugin``, so Ray Data's operator names stay
    ``MapBatches(<Plugin>)`` in progress bars and stats."""
    return type(plugin.__name__, (wrapper,), {"__qualname__": plugin.__qualname__})
