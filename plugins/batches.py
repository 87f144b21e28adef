"""Batch-format helpers shared by the built-in map stages."""

from __future__ import annotations

from typing import Any

from pipeline.contract.batches import to_arrow

__all__ = ["to_arrow"]  # the core's conversion, for plugins


def require_columns(columns: list[str], available: list[str], key: str) -> None:
    """Raise :class:`ColumnNotFoundError` (naming ``key``) for the first missing column."""
    from pipeline.contract.errors import ColumnNotFoundError

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

    from pipeline.contract.errors import DataError
    from pipeline.contract.schema import type_name

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
    from pipeline.contract.schema import with_field

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

    from pipeline.contract.errors import DataError

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


#: Extension types that hold one n-dimensional array per row: Ray Data's and Arrow's own.
_TENSOR_TYPES = (
    "ray.data.arrow_tensor",
    "ray.data.arrow_tensor_v2",
    "ray.data.arrow_variable_shaped_tensor",
    "arrow.fixed_shape_tensor",
)


def is_tensor_column(table: Any, column: str) -> bool:
    """True when ``column`` holds an array per row (an image, a ``[c, h, w]`` tensor...)."""
    import pyarrow as pa

    kind = table.schema.field(column).type
    return isinstance(kind, pa.BaseExtensionType) and kind.extension_name in _TENSOR_TYPES


def tensor_column(table: Any, column: str, key: str):
    """A tensor column as one numpy array ``[rows, *shape]`` (e.g. ``[rows, 3, 224, 224]``).

    Rows of a variable-shaped column are stacked when they share a shape; raises
    :class:`DataError` (naming ``key``) when they do not, or when a row is null.
    """
    import numpy as np

    from pipeline.contract.errors import DataError

    chunked = table.column(column)
    if chunked.null_count:
        raise DataError(f"column {column!r} has null values", key=key)
    kind = chunked.type
    if kind.extension_name == "arrow.fixed_shape_tensor":
        parts = [chunk.to_numpy_ndarray() for chunk in chunked.chunks]
        return np.concatenate(parts) if parts else np.zeros((0, *kind.shape))
    if kind.extension_name != "ray.data.arrow_variable_shaped_tensor":
        parts = [chunk.to_numpy() for chunk in chunked.chunks]
        return np.concatenate(parts) if parts else np.zeros((0, *kind.shape))
    rows = [row for chunk in chunked.chunks for row in chunk.to_numpy(zero_copy_only=False)]
    shapes = sorted({row.shape for row in rows})
    if len(shapes) > 1:
        listed = ", ".join("x".join(map(str, s)) for s in shapes[:4])
        more = ", ..." if len(shapes) > 4 else ""
        raise DataError(
            f"column {column!r} holds arrays of different shapes ({listed}{more}); "
            "give them one shape first (e.g. an image_transform stage with center_crop)",
            key=key,
        )
    return np.stack(rows) if rows else np.zeros((0, 0))


def is_image_type(kind: Any) -> bool:
    """Whether a column of this Arrow type can hold images: a tensor extension type of 2 or 3
    dimensions (``[h, w]`` or ``[h, w, c]``; variable-shaped counts), or lists of lists (of
    lists) of integers, as JSON or inline rows hold pixel arrays."""
    import pyarrow as pa

    if isinstance(kind, pa.BaseExtensionType):
        if kind.extension_name not in _TENSOR_TYPES:
            return False
        ndim = getattr(kind, "ndim", None) or len(getattr(kind, "shape", ()) or ())
        return ndim in (2, 3)
    depth = 0
    while (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    ):
        kind, depth = kind.value_type, depth + 1
    return depth in (2, 3) and pa.types.is_integer(kind)


def require_images(schema: Any, column: str, key: str, what: str) -> None:
    """Plan time: ``column`` must exist and hold images (:func:`is_image_type`); else raise
    :class:`ColumnNotFoundError` or :class:`DataError` naming ``key``. ``what`` completes the
    message ("... {what} need images")."""
    import pyarrow as pa

    from pipeline.contract.errors import DataError
    from pipeline.contract.schema import type_name

    require_fields(schema, [column], key)
    kind = schema.field(column).type
    if pa.types.is_null(kind) or is_image_type(kind):
        return
    hint = (
        " (file contents: read image files with source=images, which decodes them)"
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
        else ""
    )
    raise DataError(
        f"column {column!r} holds {type_name(kind)} values{hint}; {what} need images: "
        "[height, width, channels] uint8 arrays as source=images yields them",
        key=key,
    )


def image_rows(table: Any, column: str, key: str) -> list[Any]:
    """The images of ``column`` as a list of ``[h, w, c]`` (or ``[h, w]``) numpy arrays: uint8,
    or uint16 for 16-bit images (a uint16 tensor column, as ``source=images`` with ``mode:
    I;16`` yields), kept as they are.

    Reads tensor columns without copying where Arrow allows; nested lists of integers are
    converted. Raises :class:`DataError` naming ``key`` for a null row or a value of another
    type outside 0-255.
    """
    import numpy as np

    from pipeline.contract.errors import DataError

    chunked = table.column(column)
    if chunked.null_count:
        raise DataError(f"column {column!r} has null values", key=key)
    kind = chunked.type
    if getattr(kind, "extension_name", "") == "arrow.fixed_shape_tensor":
        rows = [row for chunk in chunked.chunks for row in chunk.to_numpy_ndarray()]
    elif getattr(kind, "extension_name", "") in _TENSOR_TYPES:
        rows = [row for chunk in chunked.chunks for row in chunk.to_numpy(zero_copy_only=False)]
    else:
        rows = [np.asarray(row) for row in chunked.to_pylist()]
    images = []
    for row in rows:
        if row.dtype != np.uint8 and row.dtype != np.uint16:
            if row.dtype.kind not in "iu" or (row.size and (row.min() < 0 or row.max() > 255)):
                raise DataError(
                    f"column {column!r} holds {row.dtype} values that are not pixels; images "
                    "are uint8 arrays (integers 0-255), or uint16 for 16-bit images",
                    key=key,
                )
            row = row.astype(np.uint8)
        images.append(row)
    return images
