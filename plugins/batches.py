"""Batch-format helpers shared by the built-in map stages."""

from __future__ import annotations

from typing import Any

from pipeline.batching import to_arrow

__all__ = ["to_arrow"]  # the core's conversion, for plugins


def require_columns(columns: list[str], available: list[str], key: str) -> None:
    """Raise :class:`ColumnNotFoundError` (naming ``key``) for the first missing column."""
    from pipeline.errors import ColumnNotFoundError

    for column in columns:
        if column not in available:
            raise ColumnNotFoundError.for_column(column, list(available), key=key)


def require_fields(schema: Any, columns: list[str], key: str) -> None:
    """Plan time: raise :class:`ColumnNotFoundError` for the first column not in ``schema``."""
    require_columns(list(columns), list(schema.names), key)


def require_text(schema: Any, column: str, key: str, what: str, tokens_ok: bool = False) -> None:
    """Plan time: ``column`` must exist and hold strings (or token-id lists if ``tokens_ok``).

    ``what`` completes the message: "column 'text' holds int64 values; {what} need strings".
    """
    import pyarrow as pa

    from pipeline.errors import DataError
    from pipeline.schema import type_name

    require_fields(schema, [column], key)
    kind = schema.field(column).type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return
    if tokens_ok and is_token_type(kind):
        return
    also = " (or token ids from a tokenize stage)" if tokens_ok else ""
    raise DataError(
        f"column {column!r} holds {type_name(kind)} values; {what} need strings{also}", key=key
    )


def is_token_type(kind: Any) -> bool:
    """A list of integers: token ids as the tokenize preprocessor writes them."""
    import pyarrow as pa

    listed = pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)
    return (listed or pa.types.is_large_list(kind)) and pa.types.is_integer(kind.value_type)


def added(schema: Any, **columns: Any):
    """Plan time: ``schema`` with ``columns`` (name -> Arrow type) added or replaced at the end."""
    from pipeline.schema import with_field

    for name, kind in columns.items():
        schema = with_field(schema, name, kind)
    return schema


def with_column(table: Any, name: str, values: Any):
    """``table`` with column ``name`` set to ``values`` (replaced in place if it exists)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def token_ids(table: Any, column: str, mask_column: str | None, key: str):
    """Pre-tokenized input as two int64 arrays ``(ids, mask)`` of shape [rows, length].

    ``column`` holds lists of token ids (as the ``tokenize`` preprocessor writes them); the mask
    comes from ``mask_column`` when the data has it, else every position counts. Padding is
    dropped and the rows are re-padded on the right to the longest real row, so rows that were
    tokenized in different batches (or padded to a fixed length) fit together cheaply.
    """
    import numpy as np

    from pipeline.errors import DataError

    rows = table.column(column).to_pylist()
    if any(r is None for r in rows):
        raise DataError(f"column {column!r} has null values", key=key)
    if mask_column and mask_column in table.column_names:
        masks = table.column(mask_column).to_pylist()
        rows = [
            [t for t, keep in zip(r, m, strict=True) if keep]
            for r, m in zip(rows, masks, strict=True)
        ]
    width = max((len(r) for r in rows), default=0)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def is_token_column(table: Any, column: str) -> bool:
    """True when ``column`` holds lists of integers (token ids), not text."""
    return is_token_type(table.schema.field(column).type)
