"""Test plugins: a map stage that can be slow, fail on chosen rows and record where it ran.

``kit_step`` exists as a preprocessor (tasks) and as a predictor (an actor pool). It copies the
``id`` column into ``output_column`` (times ten), so a test can check every row came out once.

Every place a plugin's code runs in a job can raise a chosen error (``raise_error``: the name of
a bulkinfer error kind, ``KitError`` or ``ValueError``; ``raise_key``: the key it names, relative
to the plugin): ``kit_rows`` in its read task (``read_unit``), ``kit_step`` in a map task or an
actor pool's batch, ``kit_files`` in its write task (its ``BlockWriter``).
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from pydantic import Field, field_validator

from pipeline.contract import errors as bulkinfer_errors
from pipeline.contract.sink import BlockWriter, FileOutput, FileSink
from pipeline.contract.source import WHOLE_SOURCE, WorkUnit
from pipeline.errors import ColumnNotFoundError, DataError
from pipeline.interfaces import PluginParams, Predictor, Preprocessor, Source
from pipeline.settings import StageSettings


class KitError(DataError):
    """The kit's own error kind, whose constructor takes other arguments than bulkinfer's:
    bulkinfer must carry it to the user without calling that constructor itself."""

    def __init__(self, *, rows: int, key: str | None = None) -> None:
        self.rows = rows
        super().__init__(f"the kit refused {rows} rows", key=key)


#: Every error ``raise_error`` may name besides bulkinfer's own kinds.
OTHER_ERRORS = ("KitError", "ValueError")


def error_kinds() -> list[str]:
    """The names of bulkinfer's error kinds: every BulkInferError class in
    ``pipeline.contract.errors`` but the base."""
    return sorted(
        name
        for name, value in vars(bulkinfer_errors).items()
        if isinstance(value, type)
        and issubclass(value, bulkinfer_errors.BulkInferError)
        and value is not bulkinfer_errors.BulkInferError
    )


def kit_error(kind: str, key: str | None, where: str) -> Exception:
    """The error ``raise_error`` names: a bulkinfer error kind (any BulkInferError subclass in
    ``pipeline.contract.errors``, by class name) keyed ``key``, the kit's own ``KitError`` or a
    plain ``ValueError``; its message says ``where`` it was raised."""
    if kind == "ValueError":
        return ValueError(f"kit raised ValueError in {where}")
    if kind == "KitError":
        return KitError(rows=3, key=key)
    cls = getattr(bulkinfer_errors, kind)
    return cls(f"kit raised {kind} in {where}", key=key)


class RaiseParams(PluginParams):
    raise_error: str | None = Field(
        default=None,
        description="Raise this error where the plugin's code runs: a bulkinfer error kind "
        "(DataError, ConfigError, ...), KitError or ValueError.",
    )
    raise_key: str | None = Field(
        default=None, description="The key the raised error names (relative: params.x)."
    )

    @field_validator("raise_error")
    @classmethod
    def _known(cls, kind: str | None) -> str | None:
        if kind is not None and kind not in error_kinds() + list(OTHER_ERRORS):
            raise ValueError(f"{kind!r} is none of {error_kinds() + list(OTHER_ERRORS)}")
        return kind

    def check_raise(self, where: str) -> None:
        if self.raise_error:
            raise kit_error(self.raise_error, self.raise_key, where)


class KitParams(RaiseParams):
    raise_at_start: bool = Field(
        default=False,
        description="Raise raise_error when a worker builds the stage, not on its first batch.",
    )
    id_column: str = Field(default="id", description="Integer column identifying each row.")
    output_column: str = Field(default="out", description="Column for id * 10.")
    sleep_s: float = Field(default=0.0, ge=0, description="Seconds to sleep per batch.")
    fail_ids: list[int] = Field(
        default_factory=list, description="A batch holding any of these ids raises ValueError."
    )
    refuse_ids: list[int] = Field(
        default_factory=list,
        description="A batch holding any of these ids raises a DataError keyed params.refuse_ids "
        "(relative to the stage, as plugins name their keys).",
    )
    log_dir: str | None = Field(
        default=None,
        description="Write init-<pid> when a worker starts and append each batch's ids to "
        "ids-<pid>.txt.",
    )
    record_node: bool = Field(default=False, description="Add a node_id column (Ray node id).")
    outage_file: str | None = Field(
        default=None,
        description="While this file exists, a batch holding an id >= outage_from_id raises "
        "(a transient outage: the config stays the same when it ends).",
    )
    outage_from_id: int = Field(default=0, description="First id the outage affects.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables the job runs with (env_vars)."
    )
    record_env: dict[str, str] = Field(
        default_factory=dict,
        description="{column: VARIABLE}: add a string column holding the variable's value in "
        "the worker.",
    )


class _KitStep:
    Params = KitParams

    def __init__(self, params: KitParams) -> None:
        super().__init__(params)
        if params.raise_at_start:
            params.check_raise(f"{type(self).__name__}'s start")
        if params.log_dir:
            os.makedirs(params.log_dir, exist_ok=True)
            with open(os.path.join(params.log_dir, f"init-{os.getpid()}"), "w") as f:
                f.write(str(os.getpid()))

    @classmethod
    def output_schema(cls, params: KitParams, schema: Any) -> Any:
        import pyarrow as pa

        if params.id_column not in schema.names:
            raise ColumnNotFoundError.for_column(params.id_column, list(schema.names))
        extra = [pa.field(params.output_column, pa.int64())]
        if params.record_node:
            extra.append(pa.field("node_id", pa.string()))
        extra += [pa.field(column, pa.string()) for column in params.record_env]
        names = {f.name for f in extra}
        return pa.schema([f for f in schema if f.name not in names] + extra)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        if not self.params.raise_at_start:
            self.params.check_raise(f"{type(self).__name__}'s batch")
        ids = batch.column(self.params.id_column).to_pylist()
        bad = [i for i in ids if i in set(self.params.fail_ids)]
        if bad:
            raise ValueError(f"bad row id={bad[0]}")
        refused = [i for i in ids if i in set(self.params.refuse_ids)]
        if refused:
            raise DataError(f"row id={refused[0]} is refused", key="params.refuse_ids")
        outage = self.params.outage_file
        if outage and os.path.exists(outage) and max(ids) >= self.params.outage_from_id:
            raise ConnectionError(f"service unavailable for id {max(ids)}")
        time.sleep(self.params.sleep_s)
        if self.params.log_dir:
            with open(os.path.join(self.params.log_dir, f"ids-{os.getpid()}.txt"), "a") as f:
                f.write("".join(f"{i}\n" for i in ids))
        batch = batch.append_column(self.params.output_column, pa.array([i * 10 for i in ids]))
        if self.params.record_node:
            import ray

            node = ray.get_runtime_context().get_node_id()
            batch = batch.append_column("node_id", pa.array([node] * len(ids)))
        for column, variable in self.params.record_env.items():
            value = os.environ.get(variable)
            batch = batch.append_column(column, pa.array([value] * len(ids), pa.string()))
        return batch

    @classmethod
    def env_vars(cls, params: KitParams) -> dict[str, str]:
        return dict(params.env)


class KitPreprocessor(_KitStep, Preprocessor):
    """Test step as a task stage: copies id * 10; optionally slow, failing or recording."""

    default_stage: ClassVar[StageSettings] = StageSettings(batch_size=4, batch_format="pyarrow")


class KitPredictor(_KitStep, Predictor):
    """Test step as an actor pool: copies id * 10; optionally slow, failing or recording."""

    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", concurrency=1, batch_size=4, batch_format="pyarrow"
    )


class LinesParams(PluginParams):
    path: str = Field(description="A text file of 'id:text' lines.")


class KitLineDecoder(Preprocessor):
    """Test decoder: parses each 'id:text' line; a line without ':' raises ValueError."""

    Params = LinesParams
    default_stage: ClassVar[StageSettings] = StageSettings(batch_size=4, batch_format="pyarrow")

    @classmethod
    def output_schema(cls, params: LinesParams, schema: Any) -> Any:
        import pyarrow as pa

        return pa.schema([("id", pa.int64()), ("text", pa.string())])

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        ids, texts = [], []
        for line in batch.column("line").to_pylist():
            head, sep, text = line.partition(":")
            if not sep:
                raise ValueError(f"not an 'id:text' line: {line!r}")
            ids.append(int(head))
            texts.append(text)
        return pa.table({"id": pa.array(ids, pa.int64()), "text": texts})


class KitLines(Source):
    """Test source with a decoder: reads lines, decodes them in the source's guarded stage."""

    Params = LinesParams
    decoder = KitLineDecoder

    def schema(self, params: LinesParams) -> Any:
        import pyarrow as pa

        return pa.schema([("line", pa.string())])

    def read(self, params: LinesParams, unit: Any = None) -> Any:
        import ray.data

        return ray.data.read_text(params.path).rename_columns({"text": "line"})


class ShoutParams(PluginParams):
    input_column: str = Field(default="text", description="Text column to read.")
    output_column: str = Field(default="shout", description="Column for the upper-cased text.")
    as_list: bool = Field(
        default=False, description="Write each text's words as a list<string> instead."
    )
    lengths_from_id: int | None = Field(
        default=None,
        description="A batch whose ids are all >= this writes int64 lengths instead of text "
        "(a stage whose type changes after its first batch).",
    )


class _Shout:
    """Written as a bulkinfer 0.1 plugin: ``pipeline.interfaces`` imports and no output_schema,
    so the columns it adds are decided at run time, from its first batch."""

    Params = ShoutParams

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        p = self.params
        texts = batch.column(p.input_column).to_pylist()
        ids = batch.column("id").to_pylist() if "id" in batch.column_names else []
        if p.lengths_from_id is not None and ids and min(ids) >= p.lengths_from_id:
            values = pa.array([len(t) for t in texts], pa.int64())
        elif p.as_list:
            values = pa.array([t.upper().split() for t in texts], pa.list_(pa.string()))
        else:
            values = pa.array([t.upper() for t in texts], pa.string())
        if p.output_column in batch.column_names:
            batch = batch.drop_columns([p.output_column])
        return batch.append_column(p.output_column, values)


class KitShoutPreprocessor(_Shout, Preprocessor):
    """Test 0.1-contract stage as tasks: adds an upper-cased copy of a text column."""

    default_stage: ClassVar[StageSettings] = StageSettings(batch_size=4, batch_format="pyarrow")


class KitShout(_Shout, Predictor):
    """Test 0.1-contract stage as an actor pool: adds an upper-cased copy of a text column."""

    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", concurrency=1, batch_size=4, batch_format="pyarrow"
    )


class RowsParams(RaiseParams):
    rows: int = Field(default=8, ge=0, description="Rows: ids 0 .. rows - 1, text 'row <id>'.")
    units: int = Field(default=2, ge=1, description="Work units the rows are cut into.")


def _rows_table(start: int, stop: int) -> Any:
    import pyarrow as pa

    ids = list(range(start, stop))
    return pa.table({"id": pa.array(ids, pa.int64()), "text": pa.array([f"row {i}" for i in ids])})


class KitRows(Source):
    """Test source read unit by unit (``read_unit``, in Ray read tasks): ``rows`` rows of
    ``id`` and ``text``; optionally raising in its read task."""

    Params = RowsParams

    def schema(self, params: RowsParams) -> Any:
        return _rows_table(0, 0).schema

    def units(self, params: RowsParams) -> list[WorkUnit]:
        bounds = [params.rows * u // params.units for u in range(params.units + 1)]
        return [
            WorkUnit(id=f"rows-{a}-{b}", spec={"start": a, "stop": b})
            for a, b in zip(bounds, bounds[1:], strict=False)
        ]

    def count_rows(self, params: RowsParams, unit: WorkUnit) -> int | None:
        if unit.spec is None:
            return params.rows
        return unit.spec["stop"] - unit.spec["start"]

    def read_unit(self, params: RowsParams, unit: WorkUnit) -> Any:
        params.check_raise(f"KitRows's read of {unit.id}")
        spec = unit.spec or {"start": 0, "stop": params.rows}
        yield _rows_table(spec["start"], spec["stop"])

    def read(self, params: RowsParams, unit: WorkUnit = WHOLE_SOURCE) -> Any:
        import ray.data

        units = self.units(params) if unit.spec is None else [unit]
        return ray.data.from_items([u.spec for u in units]).flat_map(
            lambda spec: _rows_table(spec["start"], spec["stop"]).to_pylist()
        )


class FilesParams(RaiseParams):
    path: str = Field(description="Output folder (local).")
    mode: str = Field(default="error", description="error, overwrite or append.")


class KitFiles(FileSink):
    """Test file sink: each write task writes one Parquet file through its BlockWriter, which
    can raise (after taking its rows) instead."""

    Params = FilesParams

    def output(self, params: FilesParams) -> FileOutput:
        import pyarrow.fs

        path = os.path.abspath(params.path)
        return FileOutput(pyarrow.fs.LocalFileSystem(), path, params.path, params.mode)

    def write_files(self, dataset: Any, folder: str, params: FilesParams) -> dict[str, int]:
        tables = dataset.iter_batches(batch_format="pyarrow", batch_size=None)
        return {w["name"]: w["rows"] for w in KitWriter(folder, params, "all").write(tables)}

    def writer(self, folder: str, params: FilesParams, part: str) -> BlockWriter:
        return KitWriter(folder, params, part)


class KitWriter(BlockWriter):
    def __init__(self, folder: str, params: FilesParams, part: str) -> None:
        self.folder, self.params, self.part = folder, params, part

    def write(self, tables: Any) -> list[dict[str, Any]]:
        import uuid

        import pyarrow as pa
        import pyarrow.parquet as pq

        taken = [t for t in tables if t.num_rows]
        self.params.check_raise("KitFiles's write task")
        if not taken:
            return []
        os.makedirs(self.folder, exist_ok=True)
        name = f"{self.part}-{uuid.uuid4().hex[:8]}.parquet"
        table = pa.concat_tables(taken)
        pq.write_table(table, os.path.join(self.folder, name))
        return [{"name": name, "rows": table.num_rows}]
