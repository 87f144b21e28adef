"""What every target here shares: the writer of a write task, receipts, the column types.

A work unit is written by :meth:`WriterTarget.write_unit` (:mod:`.ray_write`, imported only
when a job runs, so that planning imports no Ray): one Ray Data execution whose write tasks each
call the target's :class:`UnitWriter` on their blocks and return *parts* (JSON-able dicts, each
with ``rows``); the driver collects them into the unit's receipt. Only parts that reach the
driver count: a write task that Ray retried (a killed worker) leaves staged data that no receipt
names, and :meth:`~pipeline.contract.sink.StagedTarget.publish` never makes it visible.

A column the plan declares ``null`` (its type is known only once the model runs) cannot become
a table column: the targets refuse it before the model loads, unless ``column_types`` gives its
type (:func:`resolve_types`); the write tasks then cast the rows to it, and a row that does not
fit fails the job naming the column.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pipeline.contract.errors import ConfigError, DataError
from pipeline.contract.schema import parse_schema
from pipeline.contract.sink import BlockWriter, StagedTarget
from plugins.arrow_types import fits

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


def misfits(schema: pa.Schema, existing: pa.Schema, target: str = "the table") -> list[str]:
    """What keeps rows of ``schema`` from going into ``target`` (a dataset or table of
    ``existing`` columns) unchanged, one phrase each (empty: they fit; see :func:`fits`):
    columns it lacks, and columns whose values it would change or refuse, vector lengths
    named."""
    from pipeline.contract.schema import type_name

    problems = []
    lacking = [n for n in schema.names if n not in existing.names]
    if lacking:
        problems.append(f"{target} lacks {', '.join(lacking)}")
    for field in schema:
        if field.name not in existing.names:
            continue
        there = existing.field(field.name).type
        if fits(field.type, there):
            continue
        size = getattr(field.type, "list_size", None), getattr(there, "list_size", None)
        if None not in size and size[0] != size[1]:
            problems.append(
                f"{field.name!r} holds vectors of {size[0]} values here, {size[1]} there"
            )
        else:
            problems.append(
                f"{field.name!r} is {type_name(field.type)} here, {type_name(there)} there"
            )
    return problems


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

    Raises :class:`pipeline.contract.errors.DataError` naming the column that is missing or whose
    values do not fit (e.g. a list of another length than a fixed-size list column holds).
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


class UnitWriter(BlockWriter):
    """Stages one write task's rows; picklable, runs inside a Ray write task."""

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
        """The writer that stages rows as ``unit_id`` (a work unit's, or one write task's
        part, when the core records each task's writes)."""

    def write_unit(
        self,
        dataset: ray.data.Dataset,
        state: dict[str, Any],
        unit_id: str,
        ray_remote_args: dict[str, Any],
    ) -> dict[str, Any]:
        from plugins.sinks.targets.ray_write import write_unit

        return write_unit(self, dataset, state, unit_id, ray_remote_args)
