"""Column plumbing between stages: select, rename and drop columns."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from pipeline.interfaces import PluginParams, Preprocessor
from pipeline.settings import StageSettings
from plugins.batches import require_columns, to_arrow

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
    def output_columns(cls, params: ColumnsParams, input_columns: list[str]) -> list[str]:
        require_columns(params.columns, input_columns, "params.columns")
        return list(params.columns)

    def __call__(self, batch: Any) -> Any:
        table = to_arrow(batch)
        require_columns(self.params.columns, table.column_names, "params.columns")
        return table.select(self.params.columns)


class DropColumns(Preprocessor):
    """Remove ``columns`` (each must exist, so a typo is an error, not a no-op)."""

    Params = ColumnsParams
    default_stage: ClassVar[StageSettings] = _ARROW

    @classmethod
    def output_columns(cls, params: ColumnsParams, input_columns: list[str]) -> list[str]:
        require_columns(params.columns, input_columns, "params.columns")
        return [c for c in input_columns if c not in params.columns]

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
        from pipeline.errors import ConfigError

        raise ConfigError(f"renaming gives two columns named {clash[0]!r}", key="params.mapping")
    return renamed


class RenameColumns(Preprocessor):
    """Rename columns; the others keep their names and order."""

    Params = RenameParams
    default_stage: ClassVar[StageSettings] = _ARROW

    @classmethod
    def output_columns(cls, params: RenameParams, input_columns: list[str]) -> list[str]:
        return _renamed(params, input_columns)

    def __call__(self, batch: Any) -> Any:
        table = to_arrow(batch)
        return table.rename_columns(_renamed(self.params, table.column_names))
