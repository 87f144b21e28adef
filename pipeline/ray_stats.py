"""Per-operator figures from Ray Data's own execution stats, and the first-output probe.

Ray Data keeps them on the executed dataset (``_write_ds`` after a write); those attributes are
not public API, so every access is guarded and a missing figure is reported as ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    stages = []
    for op in _operators(summary) if summary is not None else []:
        rows = getattr(op, "output_num_rows", None)
        stages.append(
            {
                "name": op.operator_name,
                "rows": int(rows.sum) if rows is not None else None,
                "time_s": round(float(op.time_total_s), 3),
            }
        )
    return stages


class FirstOutputProbe:
    """Measures when the job's last data stage first hands rows on, on the driver's clock.

    Ray Data runs its streaming executor on the driver and calls the execution callbacks in
    ``DataContext.custom_execution_callback_classes`` after every scheduling step. The probe's
    callback looks at the executor's output operator (or, when that is a separate write operator,
    the stage feeding it) and records ``time.perf_counter()`` the first time that operator has
    handed rows downstream. No extra operator, no remote call, nothing in the data path; the
    resolution is one scheduling step (milliseconds). The callback interface is Ray Data
    internals, so any failure leaves the figure at ``None`` instead of failing the job.

    Use :meth:`installed` around the creation of the datasets (Ray Data copies its context when a
    dataset is created) and :meth:`arm` just before the execution that produces the output, so
    that earlier executions (a schema lookup) do not count.
    """

    def __init__(self) -> None:
        self.armed = False
        self.at: float | None = None

    def arm(self) -> None:
        """Count executions from now on."""
        self.armed = True

    def seconds_since(self, start: float) -> float | None:
        """Seconds from ``start`` (a ``time.perf_counter()`` value) to the first output."""
        return None if self.at is None else max(0.0, self.at - start)

    def _callback_class(self) -> type | None:
        try:
            from ray.data._internal.execution.execution_callback import ExecutionCallback
        except ImportError:  # moved in another Ray version: the figure is best effort
            return None
        probe = self

        class _FirstOutputCallback(ExecutionCallback):
            def on_execution_step(self, executor: Any) -> None:
                if not probe.armed or probe.at is not None:
                    return
                try:
                    op = list(executor._topology)[-1]
                    if op.name.startswith("Write") and op.input_dependencies:
                        op = op.input_dependencies[0]  # rows out of the last stage, not files
                    if op.metrics.row_outputs_taken > 0:
                        probe.at = time.perf_counter()
                except Exception:  # internals changed: report no figure, never fail the job
                    probe.armed = False

        return _FirstOutputCallback

    @contextmanager
    def installed(self) -> Iterator[FirstOutputProbe]:
        """Register the probe with the current Ray Data context for the ``with`` block."""
        import ray.data

        callback = self._callback_class()
        classes = ray.data.DataContext.get_current().custom_execution_callback_classes
        if callback is not None:
            classes.append(callback)
        try:
            yield self
        finally:
            if callback is not None and callback in classes:
                classes.remove(callback)
