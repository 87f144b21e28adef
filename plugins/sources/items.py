"""Rows written inline in the config, like the seed's ``ray.data.from_numpy`` quickstart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field, field_validator

from pipeline.contract.errors import DataError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.source import WHOLE_SOURCE, Preview, Source, WorkUnit


class ItemsParams(PluginParams):
    items: list[Any] = Field(
        min_length=1,
        description="The rows: mappings of column -> value, or bare values (put in 'column').",
    )
    column: str = Field(default="data", description="Column name for bare (non-mapping) items.")

    @field_validator("items")
    @classmethod
    def _same_shape(cls, items: list[Any]) -> list[Any]:
        kinds = {isinstance(item, dict) for item in items}
        if len(kinds) > 1:
            raise ValueError("mix of mappings and bare values; use one or the other")
        return items


class ItemsSource(Source):
    """Rows given inline in the config (types as pyarrow infers them from the values)."""

    Params = ItemsParams

    def _table(self, params: ItemsParams, start: int = 0, stop: int | None = None):
        import pyarrow as pa

        items = params.items[start:stop]
        rows = [item if isinstance(item, dict) else {params.column: item} for item in items]
        try:
            return pa.Table.from_pylist(rows, schema=self._schema(params))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(
                f"the items do not fit one table: {' '.join(str(exc).split())}",
                key="source.params.items",
            ) from None

    def _schema(self, params: ItemsParams):
        import pyarrow as pa

        rows = [item if isinstance(item, dict) else {params.column: item} for item in params.items]
        try:
            return pa.Table.from_pylist(rows).schema
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(
                f"the items do not fit one table (a column holds values of different types?): "
                f"{' '.join(str(exc).split())}",
                key="source.params.items",
            ) from None

    def schema(self, params: ItemsParams):
        return self._schema(params)

    def preview(self, params: ItemsParams, limit: int) -> Preview:
        return Preview(self._table(params, 0, limit), len(params.items), "exact: inline items")

    def read(self, params: ItemsParams, unit: WorkUnit = WHOLE_SOURCE):
        return self._dataset(self._table(params, *self._span(params, unit)))

    def read_unit(self, params: ItemsParams, unit: WorkUnit) -> Iterator[Any]:
        """The unit's items, in order, as one table."""
        yield self._table(params, *self._span(params, unit))

    @staticmethod
    def _span(params: ItemsParams, unit: WorkUnit) -> tuple[int, int]:
        """The unit's row range [start, stop) of the items (all of them for the whole source)."""
        if unit.spec is None:
            return 0, len(params.items)
        start, stop = unit.spec["rows"]
        return start, stop

    def _dataset(self, table: Any):
        import ray.data

        blocks = self.io.num_blocks or 1
        step = max(1, -(-table.num_rows // blocks))
        parts = [table.slice(i, step) for i in range(0, table.num_rows, step)] or [table]
        return ray.data.from_arrow(parts)

    def count_rows(self, params: ItemsParams, unit: WorkUnit) -> int:
        start, stop = self._span(params, unit)
        return stop - start

    def units(self, params: ItemsParams) -> list[WorkUnit]:
        """Consecutive row ranges of ``run.unit_rows`` rows."""
        n = len(params.items)
        step = self.io.unit_rows or n
        return [
            WorkUnit(id=f"{i // step:05d}", spec={"rows": [i, min(i + step, n)]})
            for i in range(0, n, step)
        ]
