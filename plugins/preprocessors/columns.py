"""Column plumbing between stages: select, rename and drop columns."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Preprocessor
from plugins.batches import require_columns, require_fields, to_arrow

_ARROW = StageSettings(batch_format="pyarrow")


class ColumnsParams(PluginParams):
    columns: list[str] = Field(min_length=1, description="Column names.")

    @field_validator("columns")
    @classmethod
    def _unique(cls, columns: list[str]) -> list[str]:
        seen = [c for i, c in enumerate(columns) if c in columns[:i]]
        if seen:
            raise ValueError(f"column {seen[0]!r} is listed twice")
        return columns


class SelectColumns(Preprocessor):
    """Keep only ``columns``, in that order."""

    Params = ColumnsParams
    default_stage: ClassVar[StageSettings] = _ARROW

    @classmethod
    def output_schema(cls, params: ColumnsParams, schema: Any) -> Any:
        require_fields(schema, params.columns, "params.columns")
        import pyarrow as pa

        return pa.schema([schema.field(c) for c in params.columns], metadata=schema.metadata)

    def __call__(self, batch: Any) -> Any:
        table = to_arrow(batch)
        require_columns(self.params.columns, table.column_names, "params.columns")
        return table.select(self.params.columns)


class DropColumns(Preprocessor):
    """Remove ``columns`` (each must exist, so a typo is an error, not a no-op)."""

    Params = ColumnsParams
    default_stage: ClassVar[StageSettings] = _ARROW

    @classmethod
    def output_schema(cls, params: ColumnsParams, schema: Any) -> Any:
        require_fields(schema, params.columns, "params.columns")
        import pyarrow as pa

        kept = [f for f in schema if f.name not in params.columns]
        return pa.schema(kept, metadata=schema.metadata)

    def __call__(self, batch: Any) -> Any:
        table = to_arrow(batch)
        require_columns(self.params.columns, table.column_names, "params.columns")
        return table.drop_columns(self.params.columns)


class RenameParams(PluginParams):
    mapping: dict[str, str] = Field(
        min_length=1, description="Old name -> new name, e.g. {data: text}."
    )


def _renamed(params: RenameParams, columns: list[str]) -> list[str]:
    require_columns(list(params.mapping), columns, "params.mapping")
    renamed = [params.mapping.get(c, c) for c in columns]
    clash = sorted({c for c in renamed if renamed.count(c) > 1})
    if clash:
        from pipeline.contract.errors import ConfigError

        raise ConfigError(f"renaming gives two columns named {clash[0]!r}", key="params.mapping")
    return renamed


class RenameColumns(Preprocessor):
    """Rename columns; the others keep their names and order."""

    Params = RenameParams
    default_stage: ClassVar[StageSettings] = _ARROW

    @classmethod
    def output_schema(cls, params: RenameParams, schema: Any) -> Any:
        import pyarrow as pa

        names = _renamed(params, list(schema.names))
        fields = [f.with_name(n) for f, n in zip(schema, names, strict=True)]
        return pa.schema(fields, metadata=schema.metadata)

    def __call__(self, batch: Any) -> Any:
        table = to_arrow(batch)
        return table.rename_columns(_renamed(self.params, table.column_names))
