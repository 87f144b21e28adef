"""Batch-format helpers shared by the built-in map stages."""

from __future__ import annotations

from typing import Any


def to_arrow(batch: Any):
    """Any Ray batch format (dict of numpy arrays, pandas, pyarrow) as a pyarrow Table."""
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):
        return pa.table({k: _as_arrow(v) for k, v in batch.items()})
    return pa.Table.from_pandas(batch, preserve_index=False)


def _as_arrow(values: Any):
    import numpy as np
    import pyarrow as pa

    if isinstance(values, np.ndarray) and values.ndim > 1:
        flat = pa.array(values.reshape(len(values), -1).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[1:])))
    if isinstance(values, np.ndarray) and values.dtype == object:
        values = values.tolist()  # strings and mixed objects: let Arrow infer the type
    return pa.array(values)
