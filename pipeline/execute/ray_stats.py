"""Per-operator figures from Ray Data's own execution stats, and the first-output probe.

Both read Ray Data internals (:mod:`pipeline.execute.ray_internals`), so every access is guarded and
a missing figure is reported as ``None``: figures never fail a job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _summary(ds: Any) -> Any | None:
    from pipeline.execute.ray_internals import stats_summary

    try:
        return stats_summary(ds)
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
        #: Rows the last stage had handed on at that moment.
        self.rows = 0

    def arm(self) -> None:
        """Count executions from now on."""
        self.armed = True

    def seconds_since(self, start: float) -> float | None:
        """Seconds from ``start`` (a ``time.perf_counter()`` value) to the first output."""
        return None if self.at is None else max(0.0, self.at - start)

    def _callback_class(self) -> type | None:
        from pipeline.execute.ray_internals import first_output_callback

        def seen(at: float, rows: int) -> None:
            if self.at is None:
                self.at, self.rows = at, rows

        def armed() -> bool:
            return self.armed and self.at is None

        try:
            callback = first_output_callback(seen, armed)
        except ImportError:  # moved in another Ray version: the figure is best effort
            return None

        class _Guarded(callback):  # internals changed under a running job: no figure, no error
            def on_execution_step(self, executor: Any) -> None:
                try:
                    super().on_execution_step(executor)
                except Exception:
                    probe.armed = False

        probe = self
        return _Guarded

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
