"""Keep the rows that satisfy a condition (a safe expression over columns, never ``eval``)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from pipeline.contract.errors import DataError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Preprocessor
from plugins.batches import require_columns, require_fields, to_arrow
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
    #: Returns each kept row with every column of its batch (bulkinfer's row ids among them).
    passes_columns: ClassVar[bool] = True

    def __init__(self, params: FilterParams) -> None:
        super().__init__(params)
        self.condition = Condition(params.condition)

    @classmethod
    def output_schema(cls, params: FilterParams, schema: Any) -> Any:
        """Rows are dropped, columns kept. The condition is evaluated on an empty table of the
        input's types, so one that does not fit them (``len(score)`` on a float column) is
        refused before any data flows."""
        condition = Condition(params.condition)
        require_fields(schema, condition.columns, "params.condition")
        _mask(condition, params.condition, schema.empty_table())
        return schema

    def __call__(self, batch: Any) -> Any:
        table = to_arrow(batch)
        require_columns(self.condition.columns, table.column_names, "params.condition")
        mask = _mask(self.condition, self.params.condition, table)
        return table.filter(mask, null_selection_behavior="drop")


def _mask(condition: Condition, text: str, table: Any) -> Any:
    """The condition's boolean mask over ``table``; a DataError if it does not fit its types."""
    import pyarrow as pa

    try:
        return condition.mask(table)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        first = " ".join(str(exc).split())
        raise DataError(
            f"condition {text!r} does not fit the data: {first}", key="params.condition"
        ) from None
    except ExpressionError as exc:
        raise DataError(str(exc), key="params.condition") from None
