"""Keep the rows that satisfy a condition (a safe expression over columns, never ``eval``)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from pipeline.errors import DataError
from pipeline.interfaces import PluginParams, Preprocessor
from pipeline.settings import StageSettings
from plugins.batches import require_columns, to_arrow
from plugins.preprocessors.expressions import Condition, ExpressionError


class FilterParams(PluginParams):
    condition: str = Field(
        description='Rows to keep, e.g. \'len(text) > 20 and lang in ["en", "de"]\': columns, '
        "literals, comparisons (== != < <= > >= in, not in, is None, is not None), and/or/not, "
        "+ - * / // % **, and len, lower, upper, abs, startswith, endswith, contains, col. "
        "Rows where the condition is null (a null value) are dropped."
    )

    @field_validator("condition")
    @classmethod
    def _parses(cls, condition: str) -> str:
        Condition(condition)  # raises ExpressionError (a ValueError) with what is not allowed
        return condition


class Filter(Preprocessor):
    """Drop the rows for which ``condition`` is not true."""

    Params = FilterParams
    default_stage: ClassVar[StageSettings] = StageSettings(batch_format="pyarrow")

    def __init__(self, params: FilterParams) -> None:
        super().__init__(params)
        self.condition = Condition(params.condition)

    @classmethod
    def output_columns(cls, params: FilterParams, input_columns: list[str]) -> list[str]:
        require_columns(Condition(params.condition).columns, input_columns, "params.condition")
        return list(input_columns)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        table = to_arrow(batch)
        require_columns(self.condition.columns, table.column_names, "params.condition")
        try:
            mask = self.condition.mask(table)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise DataError(
                f"condition {self.params.condition!r} does not fit the data: {exc}",
                key="params.condition",
            ) from None
        except ExpressionError as exc:
            raise DataError(str(exc), key="params.condition") from None
        return table.filter(mask, null_selection_behavior="drop")
