"""Ray Data's three batch formats (pyarrow Table, pandas DataFrame, dict of numpy arrays or
lists), handled alike: rows, slices, conversion to Arrow, row selection and concatenation.
"""

from __future__ import annotations

from typing import Any


def batch_rows(batch: Any) -> int:
    """Rows in a batch of any Ray batch format (pyarrow Table, pandas DataFrame, dict of arrays)."""
    if isinstance(batch, dict):
        return len(next(iter(batch.values()))) if batch else 0
    if hasattr(batch, "num_rows"):
        return int(batch.num_rows)
    return len(batch)


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a batch, in the batch's own format (zero-copy where possible)."""
    if isinstance(batch, dict):
        return {k: v[start:stop] for k, v in batch.items()}
    if hasattr(batch, "iloc"):  # pandas
        return batch.iloc[start:stop]
    return batch.slice(start, stop - start)  # pyarrow Table


def to_arrow(batch: Any) -> Any:
    """Any batch format (dict of numpy arrays, pandas, pyarrow) as a pyarrow Table, with pyarrow
    alone (a multi-dimensional array becomes a fixed-size list of its flattened rows)."""
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):
        return pa.table({k: _as_arrow(v) for k, v in batch.items()})
    return pa.Table.from_pandas(batch, preserve_index=False)


def _as_arrow(values: Any) -> Any:
    import numpy as np
    import pyarrow as pa

    if isinstance(values, np.ndarray) and values.ndim > 1:
        flat = pa.array(values.reshape(len(values), -1).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[1:])))
    if isinstance(values, np.ndarray) and values.dtype == object:
        values = values.tolist()  # strings and mixed objects: let Arrow infer the type
    return pa.array(values)


def to_table(batch: Any) -> Any:
    """A stage's output batch as the Arrow table Ray Data would build from it (a tensor column
    becomes Ray's tensor extension type); :func:`to_arrow` where Ray is not installed."""
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    try:
        from ray.data.block import BlockAccessor
    except ImportError:  # the stage wrapper used without Ray (the GPU check)
        return to_arrow(batch)
    return BlockAccessor.for_block(BlockAccessor.batch_to_block(batch)).to_arrow()


def take_rows(batch: Any, indices: Any) -> Any:
    """The rows ``indices`` (a numpy integer array) of a batch, in that order, in its format."""
    if isinstance(batch, dict):
        return {
            k: v[indices] if hasattr(v, "__array__") else [v[i] for i in indices]
            for k, v in batch.items()
        }
    if hasattr(batch, "iloc"):
        return batch.iloc[indices].reset_index(drop=True)
    return batch.take(indices)


def length_order(lengths: Any) -> Any:
    """Row indices, longest first (ties keep input order), as a numpy array.

    Longest first: if a model call is going to run out of memory, the first one does.
    """
    import numpy as np

    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def concat_batches(parts: list[Any]) -> Any:
    """Join the outputs of consecutive calls, in order, in their own format."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, dict):
        import numpy as np

        return {
            k: (
                np.concatenate([p[k] for p in parts])
                if isinstance(first[k], np.ndarray)
                else [x for p in parts for x in p[k]]
            )
            for k in first
        }
    if hasattr(first, "iloc"):
        import pandas as pd

        return pd.concat(parts, ignore_index=True)
    import pyarrow as pa

    return pa.concat_tables(parts)
