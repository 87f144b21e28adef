"""Rows written inline in the config, like the seed's ``ray.data.from_numpy`` quickstart."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from pipeline.interfaces import PluginParams, Source, WorkUnit


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
    """Rows given inline in the config."""

    Params = ItemsParams

    def _rows(self, params: ItemsParams) -> list[dict[str, Any]]:
        return [item if isinstance(item, dict) else {params.column: item} for item in params.items]

    def read(self, params: ItemsParams):
        import ray.data

        return ray.data.from_items(self._rows(params), override_num_blocks=self.io.num_blocks)

    def units(self, params: ItemsParams) -> list[WorkUnit]:
        """Consecutive row ranges of ``run.unit_rows`` rows."""
        n = len(params.items)
        step = self.io.unit_rows or n
        return [
            WorkUnit(id=f"{i // step:05d}", spec={"rows": [i, min(i + step, n)]})
            for i in range(0, n, step)
        ]

    def read_unit(self, params: ItemsParams, unit: WorkUnit):
        import ray.data

        if unit.spec is None:
            return self.read(params)
        start, stop = unit.spec["rows"]
        rows = self._rows(params)[start:stop]
        return ray.data.from_items(rows, override_num_blocks=self.io.num_blocks)
