"""What each file format can hold, checked against the plan's column types before any model loads.

A refusal names the column, its type, the sink, and what to do instead: another sink, or drop
the column. Columns whose type a stage decides only at run time (declared ``null``) pass the
plan-time check and are checked again on each block the writer receives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.contract.errors import DataError
from pipeline.contract.schema import type_name

Refusal = Callable[[Any], "str | None"]


def csv_refusal(kind: Any) -> str | None:
    """Why a CSV field cannot hold values of ``kind`` (None: it can)."""
    import pyarrow as pa

    from pipeline.contract.schema import is_nested

    if is_nested(kind):
        return "a CSV field holds one scalar, not a list, a struct or a tensor"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "a CSV file holds text, not raw bytes"
    if pa.types.is_duration(kind) or pa.types.is_interval(kind) or pa.types.is_dictionary(kind):
        return "pyarrow cannot write this type as CSV"
    return None


def json_refusal(kind: Any) -> str | None:
    """Why a JSON lines value cannot hold values of ``kind`` (None: it can)."""
    import pyarrow as pa

    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "JSON has no bytes type"
    if pa.types.is_decimal(kind):
        return "JSON numbers are binary floats and would round a decimal"
    if pa.types.is_duration(kind) or pa.types.is_interval(kind) or pa.types.is_map(kind):
        return "JSON has no such type"
    for child in _children(kind):
        reason = json_refusal(child)
        if reason:
            return reason
    return None


def _children(kind: Any) -> list[Any]:
    import pyarrow as pa

    if isinstance(kind, pa.ExtensionType):
        return []
    return [kind.field(i).type for i in range(kind.num_fields)]


def refuse(schema: Any, sink: str, why_not: Refusal) -> None:
    """Raise a DataError for the first column of ``schema`` that ``why_not`` refuses."""
    for field in schema:
        reason = why_not(field.type)
        if reason:
            others = "sink=parquet or sink=json" if sink == "csv" else "sink=parquet"
            kept = ", ".join(n for n in schema.names if n != field.name)
            raise DataError(
                f"column {field.name!r} is {type_name(field.type)}, which sink '{sink}' cannot "
                f"write: {reason}. Write it with {others}, or leave the column out: "
                f"sink.params.columns=[{kept}]",
                key="sink",
            )
