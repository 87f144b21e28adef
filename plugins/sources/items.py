"""Rows written inline in the config, like the seed's ``ray.data.from_numpy`` quickstart."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from pipeline.interfaces import PluginParams, Source


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

    def read(self, params: ItemsParams):
        import ray.data

        rows = [item if isinstance(item, dict) else {params.column: item} for item in params.items]
        return ray.data.from_items(rows, override_num_blocks=self.io.num_blocks)
