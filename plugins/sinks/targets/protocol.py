"""The staged-commit steps every non-file target implements, and their Ray Data write path.

A work unit is written by :func:`write_unit`: one Ray Data execution whose write tasks each call
the target's :class:`UnitWriter` on their blocks and return *parts* (JSON-able dicts, each with
``rows``); the driver collects them into the unit's receipt. Only parts that reach the driver
count: a write task that Ray retried (a killed worker) leaves staged data that no receipt names,
and :meth:`StagedTarget.publish` never makes it visible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ray.data import Datasink
from ray.data.block import BlockAccessor

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data


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

    from pipeline.errors import DataError

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


class StagedTarget(ABC):
    """One non-file output (see the package docstring for the order of the steps)."""

    #: The output as the user should read it in messages (credentials masked).
    location: str

    @abstractmethod
    def check(self, schema: pa.Schema) -> None:
        """Refuse, before the job starts, what ``mode`` forbids or a column the engine cannot
        hold (:class:`pipeline.errors.DataError` naming the key). Creates nothing."""

    @abstractmethod
    def begin(self, run_id: str, schema: pa.Schema) -> dict[str, Any]:
        """The JSON-able state the run's other steps need (the job record keeps it)."""

    @abstractmethod
    def writer(self, state: dict[str, Any], unit_id: str) -> UnitWriter:
        """The writer that stages ``unit_id``'s rows (sent to every write task of the unit)."""

    @abstractmethod
    def publish(self, state: dict[str, Any], receipts: list[dict[str, Any]]) -> dict[str, Any]:
        """Make every receipted row visible in one commit; a no-op when already done.

        Returns ``{"rows": rows published, "already": bool, ...engine facts}``.
        """

    @abstractmethod
    def discard(
        self, state: dict[str, Any], unit_ids: list[str], receipts: list[dict[str, Any]]
    ) -> None:
        """Drop what the given uncommitted units staged (receipts: those known for them)."""

    @abstractmethod
    def abandon(self, state: dict[str, Any]) -> None:
        """Drop everything this run staged (the job is started over)."""


class StagedDatasink(Datasink[list[dict[str, Any]]]):
    """A Ray Data datasink that hands each write task's blocks to a :class:`UnitWriter`.

    After the write, :attr:`parts` holds every part the write tasks returned, in task order.
    """

    def __init__(self, writer: UnitWriter) -> None:
        self.writer = writer
        self.parts: list[dict[str, Any]] = []

    def get_name(self) -> str:
        return "Staged"

    def write(self, blocks: Iterable[Any], ctx: Any) -> list[dict[str, Any]]:
        tables = (BlockAccessor.for_block(block).to_arrow() for block in blocks)
        return self.writer.write(tables)

    def on_write_complete(self, write_result: Any) -> None:
        self.parts = [part for parts in write_result.write_returns for part in parts]


def write_unit(
    target: StagedTarget,
    dataset: ray.data.Dataset,
    state: dict[str, Any],
    unit_id: str,
    ray_remote_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``dataset`` into ``target``'s staging for ``unit_id``; return the unit's receipt."""
    sink = StagedDatasink(target.writer(state, unit_id))
    dataset.write_datasink(sink, ray_remote_args=dict(ray_remote_args or {}))
    return receipt(unit_id, sink.parts)
