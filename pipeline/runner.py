"""Plan -> streaming Ray Data executions -> a :class:`RunResult`.

``source -> map_batches per preprocessor -> map_batches for the predictor -> sink``. Ray Data
streams blocks through every stage, so the first predictions are written while the source is
still being read. Every map stage runs inside an error guard (:mod:`pipeline.guard`). A file
sink's output is written work unit by work unit into a staging folder and published when the
job succeeded (:mod:`pipeline.units`, :mod:`pipeline.commit`), so a crashed job can resume.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
import ray.data

from pipeline.errors import BulkInferError, ColumnNotFoundError, ConfigError, DataError, PlanError
from pipeline.guard import GuardedActor, GuardedTask, Ledger, StageGuard, named_like
from pipeline.interfaces import WHOLE_SOURCE, FileOutput, IOContext, Source, WorkUnit
from pipeline.plan import Plan, Step, budget_resources, check_placement, describe
from pipeline.ray_stats import operator_rows
from pipeline.settings import StageSettings
from pipeline.units import budgets, check_budgets, run_units

log = logging.getLogger("bulkinfer")


@dataclass
class RunResult:
    """What a finished job reports."""

    output: str | None
    rows_in: int | None
    rows_out: int | None
    wall_s: float
    job_s: float
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: Rows that map stages set aside (``on_error: skip | dead_letter``).
    rows_set_aside: int = 0
    #: Work units of the job, and how many a resumed run found already done.
    units: int = 1
    units_skipped: int = 0
    #: Rows written by this run (less than ``rows_out`` when it resumed another).
    rows_done: int | None = None
    #: The ``_SUCCESS`` manifest of a file output.
    manifest: dict[str, Any] | None = None

    @property
    def rows_per_s(self) -> float | None:
        done = self.rows_done if self.rows_done is not None else self.rows_out
        return done / self.job_s if done and self.job_s > 0 else None

    def summary(self) -> str:
        rate = f"{self.rows_per_s:,.1f} rows/s" if self.rows_per_s else "n/a rows/s"
        where = f" -> {self.output}" if self.output else ""
        aside = f", {self.rows_set_aside} set aside" if self.rows_set_aside else ""
        resumed = (
            f" (resumed: {self.units_skipped} of {self.units} work units were already done)"
            if self.units_skipped
            else ""
        )
        return (
            f"bulkinfer: {self.rows_in} rows in, {self.rows_out} rows out{aside} in "
            f"{self.job_s:.1f} s ({rate}; {self.wall_s:.1f} s with Ray start-up){where}{resumed}"
        )


def ensure_ray(plan: Plan) -> bool:
    """Start (or connect to) Ray unless this process already has it; True if we started it."""
    if ray.is_initialized():
        return False
    settings = plan.ray
    kwargs: dict[str, Any] = {
        "include_dashboard": settings.include_dashboard,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    if settings.runtime_env:
        kwargs["runtime_env"] = settings.runtime_env
    if settings.address:
        kwargs["address"] = settings.address
    else:
        for name in ("num_cpus", "num_gpus", "object_store_memory"):
            if getattr(settings, name) is not None:
                kwargs[name] = getattr(settings, name)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise PlanError(
            f"cannot connect to Ray at {settings.address!r}: {exc}", key="ray.address"
        ) from None
    return True


def cluster_budget(plan: Plan) -> Plan:
    """Fit the plan to the resources of the Ray cluster this process is connected to."""
    resources = ray.cluster_resources()
    plan = budget_resources(plan, resources.get("CPU", 0.0), resources.get("GPU", 0.0))
    check_placement(plan, [n["Resources"] for n in ray.nodes() if n.get("Alive")])
    return plan


def _compute(s: StageSettings) -> Any:
    if s.compute == "tasks":
        return ray.data.TaskPoolStrategy(size=s.concurrency) if s.concurrency else None
    # One UDF call at a time per actor either way (max_concurrent_calls_per_actor=1); "true
    # multi-threading" only makes Ray Data call the UDF on the task's own thread, where the
    # guard can see which task a batch belongs to (see pipeline.guard.batch_key).
    if isinstance(s.concurrency, int) or s.concurrency is None:
        return ray.data.ActorPoolStrategy(size=s.concurrency or 1, enable_true_multi_threading=True)
    return ray.data.ActorPoolStrategy(
        min_size=s.concurrency.min, max_size=s.concurrency.max, enable_true_multi_threading=True
    )


def _map(ds: ray.data.Dataset, step: Step, ledger: Any = None) -> ray.data.Dataset:
    """Add one map stage, wrapped in its error guard (``stage.on_error``)."""
    s = step.stage
    assert s is not None
    guard = StageGuard(step.key, step.name, s.on_error, s.max_error_rate, ledger)
    kwargs: dict[str, Any] = dict(
        batch_size=s.batch_size,
        batch_format=s.batch_format,
        num_cpus=s.num_cpus,
        num_gpus=s.num_gpus or None,
        **s.ray_remote_args,
    )
    if s.memory:
        kwargs["memory"] = s.memory
    if s.compute == "actors":
        # A killed actor is restarted and its in-flight batches are retried: Ray Data 2.60 sets
        # max_restarts=-1 and max_task_retries=-1 on pool actors (and max_retries=-1 on tasks)
        # unless a stage's ray_remote_args say otherwise (tests/test_failures.py kills one).
        return ds.map_batches(
            named_like(GuardedActor, step.plugin),
            compute=_compute(s),
            fn_constructor_kwargs={"plugin": step.plugin, "params": step.params, "guard": guard},
            **kwargs,
        )
    task = named_like(GuardedTask, step.plugin)(step.plugin, step.params, guard)
    return ds.map_batches(task, compute=_compute(s), **kwargs)


def _check_columns(plan: Plan, ds: ray.data.Dataset) -> None:
    """Walk the stages' column contracts against the source schema before any model loads."""
    schema = ds.schema()
    if schema is None:
        where = getattr(plan.source.params, "path", None)
        raise DataError(
            "the source produced no rows" + (f" from {where}" if where else ""),
            key="source.params.path" if where else "source.params",
        )
    columns = list(schema.names)
    for step in plan.maps:
        try:
            columns = step.plugin.output_columns(step.params, columns)
        except ColumnNotFoundError as exc:
            raise ColumnNotFoundError(exc.message, key=exc.key or f"{step.key}.params") from None


def find_user_error(exc: BaseException) -> BulkInferError | None:
    """The first :class:`BulkInferError` in an exception's cause chain (Ray wraps task errors)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BulkInferError):
            return current
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return None


class _HideTracebacks(logging.Filter):
    """Drop the traceback Ray Data logs with a failed task: bulkinfer reports the error itself
    (the full trace stays in Ray Data's log file, which is written before the console)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _configure_ray_data(plan: Plan) -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = plan.run.progress
    context.execution_no_progress_timeout_s = plan.run.stall_timeout_s
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler" and not any(
            isinstance(f, _HideTracebacks) for f in handler.filters
        ):
            handler.addFilter(_HideTracebacks())


def _stall(exc: BaseException) -> BaseException | None:
    from ray.data.exceptions import ExecutionTimeoutError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ExecutionTimeoutError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def user_errors(
    plan: Plan, source: Source, unit: WorkUnit | None, ledger: Any = None
) -> Iterator[None]:
    """Turn what goes wrong while reading or running into a :class:`BulkInferError` where the
    cause is the user's: an error a stage raised, a stalled job, an input file that is broken."""
    try:
        yield
    except BulkInferError:
        raise
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None and ledger is not None:
            with contextlib.suppress(Exception):
                user_error = ray.get(ledger.failure.remote(), timeout=30)
        if user_error is not None:
            raise user_error from None
        if _stall(exc) is not None:
            raise PlanError(
                f"no stage made progress for {plan.run.stall_timeout_s:g} s, so the job was "
                "stopped (a stage waits for resources the cluster never frees, or a stage "
                "hangs). Raise it if a stage is legitimately that slow.",
                key="run.stall_timeout_s",
            ) from None
        try:
            explained = source.explain_read_error(plan.source.params, unit or WHOLE_SOURCE)
        except Exception:  # the diagnosis must not hide the original error
            explained = None
        if explained is not None:
            raise explained from None
        raise


def _check_error_policies(plan: Plan, out: FileOutput | None) -> None:
    if out is not None:
        return
    for step in plan.maps:
        if step.stage is not None and step.stage.on_error == "dead_letter":
            raise ConfigError(
                f"dead_letter writes failing rows to <output>/_errors/, but sink "
                f"'{plan.sink.name}' writes no files. Use on_error=skip or a file sink.",
                key=f"{step.key}.stage.on_error",
            )


def _stages(plan: Plan, ds: ray.data.Dataset, ledger: Any) -> ray.data.Dataset:
    for step in plan.maps:
        ds = _map(ds, step, ledger)
    return ds


def _start_ledger(plan: Plan) -> Any:
    if not plan.maps:
        return None
    actor = ray.remote(num_cpus=0, max_restarts=0)(Ledger)
    return actor.remote(budgets(plan))


def _client_mode() -> bool:
    from ray.util.client import ray as client

    return client.is_connected()


def execute(plan: Plan) -> RunResult:
    """Run the plan on the Ray cluster this process is connected to (see :func:`ensure_ray`).

    Through Ray Client (``ray://``) the job runs as a task inside the cluster: Ray Data's
    streaming executor needs a driver that is part of the cluster, and the staging folder is
    then handled where the workers write.
    """
    if _client_mode():
        in_cluster = ray.remote(num_cpus=0, max_retries=0)(execute)
        try:
            return ray.get(in_cluster.remote(plan))
        except Exception as exc:
            error = find_user_error(exc)
            if error is None:
                raise
            fresh = type(error)(error.message, key=error.key)
        raise fresh
    # Release the actor pools of earlier failed jobs in this process: Ray Data drops them when
    # their Dataset is garbage, which a cycle through a kept exception can delay.
    gc.collect()
    try:
        return _execute(plan)
    except BulkInferError as error:
        # A fresh error, raised outside this handler: the original's traceback holds the failed
        # Dataset, whose actor pool (and its CPUs) lives as long as anything references it.
        fresh = type(error)(error.message, key=error.key)
    gc.collect()
    raise fresh


def _execute(plan: Plan) -> RunResult:
    started = time.perf_counter()
    plan = cluster_budget(plan)
    log.info("\n%s", describe(plan))
    _configure_ray_data(plan)
    io = IOContext(
        ray_remote_args={"num_cpus": plan.io_cpus},
        fingerprint=plan.fingerprint,
        unit_rows=plan.run.unit_rows,
        unit_bytes=plan.run.unit_bytes,
    )
    source = plan.source.plugin(io)
    sink = plan.sink.plugin(io)
    out = sink.file_output(plan.sink.params)
    _check_error_policies(plan, out)
    if out is None:
        sink.check(plan.sink.params)
    job_start = time.perf_counter()
    with user_errors(plan, source, None):
        _check_columns(plan, source.read(plan.source.params))
        units = source.units(plan.source.params) if out is not None else [WHOLE_SOURCE]
    ledger = _start_ledger(plan)
    try:
        if out is None:
            return _run_whole(plan, source, sink, ledger, started, job_start)

        def write_unit(unit: WorkUnit, folder: str) -> list[dict[str, Any]]:
            with user_errors(plan, source, unit, ledger):
                ds = _stages(plan, source.read_unit(plan.source.params, unit), ledger)
                sink.write_files(ds, folder, plan.sink.params)
            return operator_rows(ds).stages

        outcome = run_units(plan, sink, out, units, ledger, write_unit)
    finally:
        if ledger is not None:
            ray.kill(ledger)
    manifest = outcome.manifest
    return RunResult(
        output=out.location,
        rows_in=manifest["rows_in"],
        rows_out=manifest["rows_out"],
        wall_s=time.perf_counter() - started,
        job_s=time.perf_counter() - job_start,
        stages=outcome.stages,
        rows_set_aside=manifest["rows_set_aside"],
        units=outcome.units,
        units_skipped=outcome.units_skipped,
        rows_done=outcome.rows_done,
        manifest=manifest,
    )


def _run_whole(
    plan: Plan, source: Source, sink: Any, ledger: Any, started: float, job_start: float
) -> RunResult:
    """A sink without a file output (e.g. ``show``): one execution, nothing to stage."""
    with user_errors(plan, source, None, ledger):
        ds = _stages(plan, source.read(plan.source.params), ledger)
        written = sink.write(ds, plan.sink.params)
    rows = operator_rows(ds)
    rows_in, set_aside = rows.rows_in, 0
    if ledger is not None:
        drained = ray.get(ledger.drain.remote())
        check_budgets(plan, drained["stages"], drained["first_error"], min_rows=0)
        first = drained["stages"].get(plan.maps[0].key)
        rows_in = first["rows_in"] if first else rows_in
        set_aside = sum(c["skipped"] + c["dead_letter"] for c in drained["stages"].values())
    return RunResult(
        output=written.location,
        rows_in=rows_in,
        rows_out=written.rows if written.rows is not None else rows.rows_out,
        wall_s=time.perf_counter() - started,
        job_s=time.perf_counter() - job_start,
        stages=rows.stages,
        rows_set_aside=set_aside,
    )
