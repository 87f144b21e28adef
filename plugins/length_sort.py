"""Length-sorted batching for predictors whose cost grows with the longest row of a batch.

A transformer pads every sequence of a forward pass to the longest one, so a batch that mixes an
8-word and a 60-word sentence spends most of its time on padding. Sorting the rows of a block by
token length before cutting it into forward passes puts similar lengths together; the outputs are
then put back in input order, so the caller sees exactly what unsorted batching would return
(up to floating-point rounding of the padded positions' absence).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def length_order(lengths: Sequence[int]) -> Any:
    """Row indices, longest first (ties keep input order), as a numpy array.

    Longest first: if a forward pass is going to run out of memory, the first one does.
    """
    import numpy as np

    keys = -np.asarray(lengths, dtype=np.int64)
    return np.argsort(keys, kind="stable")


def map_length_sorted(
    items: Sequence[Any],
    lengths: Sequence[int],
    fn: Callable[[list[Any]], Any],
    batch_size: int | None,
) -> Any:
    """``fn`` over ``items`` in length-sorted chunks of ``batch_size``; results in input order.

    ``fn`` takes a list of items and returns an array (or list) with one entry per item; the
    result is a numpy array whose row ``i`` belongs to ``items[i]``. ``batch_size=None``: one
    chunk, sorted (for callers that batch further themselves).
    """
    import numpy as np

    if len(items) != len(lengths):
        raise ValueError(f"{len(items)} items but {len(lengths)} lengths")
    if not len(items):
        return np.asarray(fn([]))
    order = length_order(lengths)
    step = batch_size or len(items)
    outputs = [
        np.asarray(fn([items[i] for i in order[start : start + step]]))
        for start in range(0, len(items), step)
    ]
    stacked = np.concatenate(outputs)
    restored = np.empty_like(stacked)
    restored[order] = stacked
    return restored
