"""Per-operator figures from Ray Data's own execution stats.

Ray Data keeps them on the executed dataset (``_write_ds`` after a write); those attributes are
not public API, so every access is guarded and a missing figure is reported as ``None``.
"""

from __future__ import annotations

from typing import Any


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


def operator_stages(ds: Any) -> list[dict[str, Any]]:
    """Each executed operator's name, output rows and total time, in execution order."""
    summary = _summary(ds)
    if summary is None:
        return []
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
    return stages
