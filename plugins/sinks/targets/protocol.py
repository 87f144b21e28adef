"""The Ray Data write path every target here shares, and the column types they are given.

A work unit is written by :func:`write_unit`: one Ray Data execution whose write tasks each call
the target's :class:`UnitWriter` on their blocks and return *parts* (JSON-able dicts, each with
``rows``); the driver collects them into the unit's receipt. Only parts that reach the driver
count: a write task that Ray retried (a killed worker) leaves staged data that no receipt names,
and :meth:`~pipeline.interfaces.StagedTarget.publish` never makes it visible.

A column the plan declares ``null`` (its type is known only once the model runs, e.g. XGBoost's
predictions: a number, or a vector for several classes) cannot become a table column: the
targets refuse it before the model loads, unless ``column_types`` gives its type
(:func:`resolve_types`); the write tasks then cast the rows to it, and a row that does not fit
fails the job naming the column.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ray.data import Datasink
from ray.data.block import BlockAccessor

from pipeline.errors import BulkInferError, ConfigError, DataError, OutputError
from pipeline.interfaces import StagedTarget
from pipeline.schema import parse_schema

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data


def resolve_types(schema: pa.Schema, column_types: dict[str, str], sink: str) -> pa.Schema:
    """``schema`` with the types ``column_types`` gives (``{column: Arrow type name}``).

    Raises :class:`ConfigError` (``sink.params.column_types.<column>``) for a column the output
    lacks or a type name Arrow does not know, and :class:`DataError` for a column still
    declared ``null``.
    """
    key = "sink.params.column_types"
    given = parse_schema(column_types, key)
    for field in given:
        if field.name not in schema.names:
            raise ConfigError(
                f"column {field.name!r} is not in the output; its columns: "
                f"{', '.join(schema.names)}",
                key=f"{key}.{field.name}",
            )
        schema = schema.set(schema.get_field_index(field.name), field)
    import pyarrow as pa

    untyped = [f.name for f in schema if pa.types.is_null(f.type)]
    if untyped:
        name = untyped[0]
        raise DataError(
            f"column {name!r} has no type until the model runs (its stage declares it null), "
            f"and a {sink} table's columns are fixed before any row is written. Give its type: "
            f"sink.params.column_types={{{name}: float32}} (or the type the model yields, e.g. "
            "fixed_size_list<float32>[3]); rows that do not fit it fail the job naming the "
            "column",
            key=f"{key}.{name}",
        )
    return schema


def schema_to_text(schema: pa.Schema) -> str:
    """An Arrow schema as text for a JSON job state (base64 of its IPC serialization)."""
    import base64

    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_text(text: str) -> pa.Schema:
    """The inverse of :func:`schema_to_text`."""
    import base64

    import pyarrow as pa

    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in its order, cast to its types.

    Raises :class:`pipeline.errors.DataError` naming the column that is missing or whose values
    do not fit (e.g. a list of another length than a fixed-size list column holds).
    """
    import pyarrow as pa

    columns = []
    for field in schema:
        if field.name not in table.column_names:
            raise DataError(f"column {field.name!r} is missing from the rows to write")
        column = table.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"column {field.name!r} ({column.type}) does not fit the target's type "
                    f"{field.type}: {exc}"
                ) from None
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def receipt(unit_id: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A unit's receipt: ``{"unit": id, "rows": total rows, "parts": parts}`` (JSON-able)."""
    return {"unit": unit_id, "rows": sum(int(p["rows"]) for p in parts), "parts": parts}


class UnitWriter(ABC):
    """Stages one write task's rows of one unit; picklable, runs inside a Ray write task."""

    @abstractmethod
    def write(self, tables: Iterable[pa.Table]) -> list[dict[str, Any]]:
        """Stage ``tables`` (Arrow tables, any number, possibly empty) invisibly to readers.

        Returns the parts written: JSON-able dicts, each with ``rows`` (int).
        """


class WriterTarget(StagedTarget):
    """A :class:`StagedTarget` whose units are written by :func:`write_unit` through a
    :class:`UnitWriter` in each Ray write task."""

    @abstractmethod
    def writer(self, state: dict[str, Any], unit_id: str) -> UnitWriter:
        """The writer that stages ``unit_id``'s rows (sent to every write task of the unit)."""

    def write_unit(
        self,
        dataset: ray.data.Dataset,
        state: dict[str, Any],
        unit_id: str,
        ray_remote_args: dict[str, Any],
    ) -> dict[str, Any]:
        return write_unit(self, dataset, state, unit_id, ray_remote_args)


class StagedDatasink(Datasink[list[dict[str, Any]]]):
    """A Ray Data datasink that hands each write task's blocks to a :class:`UnitWriter`.

    After the write, :attr:`parts` holds every part the write tasks returned, in task order.
    """

    def __init__(self, writer: UnitWriter, location: str, key: str) -> None:
        self.writer, self.location, self.key = writer, location, key
        self.parts: list[dict[str, Any]] = []

    def get_name(self) -> str:
        return "Staged"

    def write(self, blocks: Iterable[Any], ctx: Any) -> list[dict[str, Any]]:
        tables = (BlockAccessor.for_block(block).to_arrow() for block in blocks)
        try:
            return self.writer.write(tables)
        except BulkInferError:
            raise
        except Exception as exc:  # an engine's error, as one line without row values
            raise OutputError(
                f"writing into {self.location} failed: {type(exc).__name__}: {_first_line(exc)}",
                key=self.key,
            ) from None

    def on_write_complete(self, write_result: Any) -> None:
        self.parts = [part for parts in write_result.write_returns for part in parts]


def _first_line(exc: BaseException) -> str:
    """An error's own first line (a database driver's, not SQLAlchemy's statement dump)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_unit(
    target: WriterTarget,
    dataset: ray.data.Dataset,
    state: dict[str, Any],
    unit_id: str,
    ray_remote_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``dataset`` into ``target``'s staging for ``unit_id``; return the unit's receipt."""
    sink = StagedDatasink(target.writer(state, unit_id), target.location, target.key)
    dataset.write_datasink(sink, ray_remote_args=dict(ray_remote_args or {}))
    return receipt(unit_id, sink.parts)
