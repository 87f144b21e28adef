"""Row counts and per-stage figures from Ray Data's own execution stats.

Ray Data keeps them on the executed dataset (``_write_ds`` after a write); those attributes are
not public API, so every access is guarded and a missing figure is reported as ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RowCounts:
    rows_in: int | None = None
    rows_out: int | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)


def _summary(ds: Any) -> Any | None:
    executed = getattr(ds, "_write_ds", None) or ds
    try:
        return executed._get_stats_summary()
    except Exception:  # stats are best effort; the job itself succeeded
        return None


def _operators(summary: Any) -> list[Any]:
    ops: list[Any] = []
    for parent in getattr(summary, "parents", []) or []:
        ops += _operators(parent)
    return ops + list(getattr(summary, "operators_stats", []) or [])


def operator_rows(ds: Any) -> RowCounts:
    """Rows read by the first operator, rows produced by the last non-write operator."""
    summary = _summary(ds)
    if summary is None:
        return RowCounts()
    stages = []
    for op in _operators(summary):
        rows = getattr(op, "output_num_rows", None)
        stages.append(
            {
                "name": op.operator_name,
                "rows": int(rows.sum) if rows is not None else None,
                "time_s": round(float(op.time_total_s), 3),
            }
        )
    data_stages = [s for s in stages if not s["name"].startswith("Write")]
    counted = [s["rows"] for s in data_stages if s["rows"] is not None]
    return RowCounts(
        rows_in=counted[0] if counted else None,
        rows_out=counted[-1] if counted else None,
        stages=stages,
    )
