"""Which input rows a job has written: row ids, and the ranges of them a journal records.

Every row a source yields gets an id from its position in the input, the same in every run of
the job: ``unit << UNIT_SHIFT | offset``, with ``unit`` the index of its work unit in the
source's list (:meth:`~pipeline.contract.source.Source.units`) and ``offset`` its place among
the unit's rows. The id travels with the row through every map stage as the column
:data:`ROW_ID` (plugins never see it) to the sink's write task, which records the ranges of ids
it wrote (:class:`~pipeline.output.records.Written`). A resumed run reads only the rows whose
ids no record holds (:class:`Progress`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: The column that carries each row's id from the read to the write (dropped before the sink).
ROW_ID = "__bulkinfer_row"
#: Bits of a row id that hold the offset within its work unit: up to 2**40 rows per unit.
UNIT_SHIFT = 40

Ranges = list[list[int]]


def row_id(unit: int, offset: int) -> int:
    """The id of row ``offset`` of work unit ``unit``."""
    return (unit << UNIT_SHIFT) | offset


def ranges_of(ids: Any) -> Ranges:
    """Sorted, merged ``[start, stop)`` ranges covering the integer ``ids`` (any order)."""
    import numpy as np

    values = np.unique(np.asarray(ids, dtype=np.int64))
    if not len(values):
        return []
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(values)]))
    return [[int(values[a]), int(values[b - 1]) + 1] for a, b in zip(starts, stops, strict=True)]


def merged(ranges: Iterable[list[int]]) -> Ranges:
    """``ranges`` sorted, with overlapping and touching ranges joined."""
    out: Ranges = []
    for start, stop in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return out


class Progress:
    """The rows written so far, as merged ranges of row ids (picklable: sent to read tasks)."""

    def __init__(self, ranges: Iterable[list[int]] = ()) -> None:
        self.ranges = merged(ranges)
        self.rows = sum(stop - start for start, stop in self.ranges)

    def add(self, ranges: Iterable[list[int]]) -> None:
        """Add ``ranges``, which hold no row this progress holds (see :meth:`overlaps`)."""
        import bisect

        for start, stop in ranges:
            bisect.insort(self.ranges, [start, stop])
            self.rows += stop - start

    def overlaps(self, ranges: Iterable[list[int]]) -> bool:
        """Whether any of ``ranges`` holds a row already in this progress."""
        import bisect

        starts = [start for start, _ in self.ranges]
        for start, stop in ranges:
            i = bisect.bisect_right(starts, start) - 1
            if i >= 0 and self.ranges[i][1] > start:
                return True
            if i + 1 < len(self.ranges) and self.ranges[i + 1][0] < stop:
                return True
        return False

    def pending(self, ids: Any) -> Any:
        """A boolean numpy mask: True for each of ``ids`` not written yet (None: all pending)."""
        import numpy as np

        if not self.ranges:
            return None
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids) or ids[-1] < self.ranges[0][0] or ids[0] >= self.ranges[-1][1]:
            return None
        bounds = np.asarray(self.ranges, dtype=np.int64)
        i = np.searchsorted(bounds[:, 0], ids, side="right") - 1
        inside = (i >= 0) & (ids < bounds[np.clip(i, 0, None), 1])
        return ~inside
