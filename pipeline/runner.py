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
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import ray
import ray.data

from pipeline import errors
from pipeline.batching import AUTO_MAX_ROWS
from pipeline.errors import BulkInferError, ConfigError, DataError, EmptyInputError, PlanError
from pipeline.guard import GuardedActor, GuardedTask, Ledger, StageGuard, named_like
from pipeline.interfaces import WHOLE_SOURCE, FileOutput, IOContext, Source, WorkUnit
from pipeline.plan import (
    Plan,
    Step,
    budget_resources,
    check_placement,
    describe,
    typed,
)
from pipeline.ray_stats import FirstOutputProbe, operator_stages
from pipeline.settings import RaySettings, StageSettings
from pipeline.stage_call import StageCall
from pipeline.units import budgets, check_budgets, run_units

log = logging.getLogger("bulkinfer")

#: Ray settings that decide how :func:`ensure_ray` starts or connects to Ray.
_START_KEYS = ("address", "num_cpus", "num_gpus", "object_store_memory", "runtime_env")
#: What this process started Ray with (None: Ray was not started here, or was shut down).
_started_with: dict[str, Any] | None = None
#: How long a finished job lets Ray Data release its actors before killing them.
RELEASE_GRACE_S = 3.0
#: How long a finished job waits for Ray to confirm its actors are gone.
RELEASE_TIMEOUT_S = 30.0


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
    #: Seconds from the start of the job until its last stage first handed rows on.
    first_output_s: float | None = None
    #: The Ray cluster's total resources during the job ("CPU", "GPU").
    cluster: dict[str, float] = field(default_factory=dict)
    #: Run-time decisions the stages reported (``batch_size: auto`` choices, OOM halving).
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float | None:
        done = self.rows_done if self.rows_done is not None else self.rows_out
        return done / self.job_s if done and self.job_s > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain data (the core of ``metrics.json``)."""
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "wall_s": round(self.wall_s, 3),
            "job_s": round(self.job_s, 3),
            "first_output_s": (
                round(self.first_output_s, 3) if self.first_output_s is not None else None
            ),
            "rows_per_s": round(self.rows_per_s, 3) if self.rows_per_s else None,
            "output": self.output,
            "stages": self.stages,
            "cluster": self.cluster,
            "notes": self.notes,
        }

    def remarks(self) -> list[str]:
        """What the run decided, set aside or skipped: lines printed before its summary."""
        lines = list(self.notes)
        if self.rows_set_aside:
            lines.append(f"{self.rows_set_aside} rows set aside")
        if self.units_skipped:
            lines.append(
                f"resumed: {self.units_skipped} of {self.units} work units were already done"
            )
        return lines


def _start_settings(settings: RaySettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in _START_KEYS}


def ensure_ray(plan: Plan) -> bool:
    """Start (or connect to) Ray unless this process already has it; True if it started now.

    Jobs run one after another in one process (a Hydra multirun with the basic launcher) share
    the Ray instance the first one started. A job whose ``ray`` settings differ from those Ray was
    started with restarts it; a Ray that someone else initialised (a notebook, a test) is reused
    as it is.
    """
    global _started_with
    settings = plan.ray
    if ray.is_initialized():
        if _started_with is None or _started_with == _start_settings(settings):
            log.info("reusing the Ray instance this process already has")
            return False
        log.info("ray settings changed since Ray was started; restarting it")
        shutdown_ray()
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
        # "local": always a new embedded Ray. Without it, ray.init() joins any cluster that
        # `ray start` left running on this machine, which is not what ray.address=null means.
        kwargs["address"] = "local"
        for name in ("num_cpus", "num_gpus", "object_store_memory"):
            if getattr(settings, name) is not None:
                kwargs[name] = getattr(settings, name)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise PlanError(
            f"cannot connect to Ray at {settings.address!r}: {exc}", key="ray.address"
        ) from None
    _started_with = _start_settings(settings)
    return True


def shutdown_ray() -> None:
    """Stop the Ray this process started (disconnect from a cluster); call once, at the end."""
    global _started_with
    _started_with = None
    if ray.is_initialized():
        _stop_autoscaler_monitor()
        ray.shutdown()


def _stop_autoscaler_monitor() -> None:
    """Kill the autoscaler monitor of a node this process started, before ``ray.shutdown`` does.

    ``ray.shutdown`` stops the GCS before the monitor, and the monitor answers SIGTERM by
    reporting its exit to that GCS: it never gets through, and is killed only after a second's
    grace (Ray 2.60: 1.4 s to shut down, 0.4 s with the monitor gone first). The monitor of a
    single embedded node has nothing to save. A driver connected to a cluster started no
    processes, so nothing is killed; without these internals Ray shuts down as usual.
    """
    with contextlib.suppress(Exception):
        from ray._private import ray_constants
        from ray._private.worker import _global_node

        for info in _global_node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
            info.process.kill()
            info.process.wait(timeout=5)


def _live_map_workers() -> dict[str, str] | None:
    """This driver's Ray Data map-stage actors that are not dead, by id (None: cannot tell)."""
    try:
        from ray._private import state  # the GCS view; the public state API needs a dashboard

        job_id = ray.get_runtime_context().get_job_id()
        return {
            actor_id: str(actor["ActorClassName"])
            for actor_id, actor in state.actors().items()
            if actor["JobID"] == job_id
            and actor["State"] != "DEAD"
            and str(actor["ActorClassName"]).startswith("MapWorker(")
        }
    except Exception:
        return None


def _kill_actors(actor_ids: list[str]) -> None:
    """Kill actors by id (no restart). Ray has no public call for an actor without its handle."""
    from ray._raylet import ActorID

    core_worker = ray._private.worker.global_worker.core_worker
    for actor_id in actor_ids:
        with contextlib.suppress(Exception):  # already gone
            core_worker.kill_actor(ActorID.from_hex(actor_id), True)  # no_restart


def wait_for_actors_released(
    grace_s: float = RELEASE_GRACE_S, timeout_s: float = RELEASE_TIMEOUT_S
) -> bool:
    """Make sure this driver's map-stage actors are gone; False if Ray still reports some.

    Ray Data releases a dataset's actor pools by dropping its handles: at the end of a full
    execution, but after a partial one (``take``, as the show sink does) only when the executor
    is garbage-collected, and after a failed one only when nothing holds the failure's traceback
    any more (a logging handler that keeps records, as pytest's does, holds it for good). So:
    collect garbage, wait ``grace_s``, then kill what is left, since the job is over either way.
    The next job of a sweep must start with the model actors (and their CPUs) of this one gone.
    """
    start = time.monotonic()
    collected = killed = False
    while True:
        alive = _live_map_workers()
        if not alive:
            return True
        elapsed = time.monotonic() - start
        if not collected:
            gc.collect()  # an executor left behind by a partial read holds its actor pool
            collected = True
            continue
        if not killed and elapsed > grace_s:
            log.info("killing %d actor(s) the finished job left: %s", len(alive), alive)
            _kill_actors(list(alive))
            killed = True
        if elapsed > timeout_s:
            log.warning("actors still alive %.0f s after the job: %s", timeout_s, alive)
            return False
        time.sleep(0.05)


def configure_progress(enabled: bool) -> None:
    """Ray Data progress on (bars on a terminal, a log line every 10 s otherwise) or off."""
    ray.data.DataContext.get_current().enable_progress_bars = enabled
    # Off also silences Ray Data's warning that progress bars are disabled.
    logging.getLogger("ray.data._internal.progress").setLevel(
        logging.NOTSET if enabled else logging.ERROR
    )


def cluster_budget(plan: Plan) -> Plan:
    """Fit the plan to the resources of the Ray cluster this process is connected to."""
    resources = ray.cluster_resources()
    plan = budget_resources(
        plan,
        resources.get("CPU", 0.0),
        resources.get("GPU", 0.0),
        resources.get("memory", float("inf")),
    )
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


def _map(plan: Plan, ds: ray.data.Dataset, step: Step, ledger: Any) -> ray.data.Dataset:
    """Add one map stage: the plugin inside :class:`StageCall` (``batch_size: auto``, threads),
    inside its error guard (``stage.on_error``, rows reported to the ledger)."""
    s = step.stage
    assert s is not None
    auto = s.batch_size == "auto"
    actors = s.compute == "actors"
    schema = plan.schemas.get(step.key)
    guard = StageGuard(step.key, step.name, s.on_error, s.max_error_rate, ledger, schema)
    if actors:
        # auto: Ray hands the stage its largest probed size; StageCall cuts it to the choice.
        ray_batch_size = AUTO_MAX_ROWS if auto else s.batch_size
    else:
        # Tasks get whole blocks and StageCall cuts them into batches: Ray Data does not fuse a
        # map that has a batch size into the read before it, and one fused read -> predict ->
        # write task skips the object store (benchmarks/RESULTS.md, the XGBoost workload).
        ray_batch_size = None
    kwargs: dict[str, Any] = dict(
        batch_size=ray_batch_size,
        batch_format=s.batch_format,
        num_cpus=s.num_cpus,
        num_gpus=s.num_gpus or None,
        **s.ray_remote_args,
    )
    if s.memory:
        kwargs["memory"] = s.memory
    build = partial(
        StageCall,
        step.plugin,
        key=step.key,
        ledger=ledger,
        auto_batch=auto,
        memory_limit=s.memory,
        num_threads=s.num_threads,
        eager=actors,
        batch_limit=None if actors or auto else s.batch_size,
    )
    if actors:
        # A killed actor is restarted and its in-flight batches are retried: Ray Data 2.60 sets
        # max_restarts=-1 and max_task_retries=-1 on pool actors (and max_retries=-1 on tasks)
        # unless a stage's ray_remote_args say otherwise (tests/test_failures.py kills one).
        return ds.map_batches(
            named_like(GuardedActor, step.plugin),
            compute=_compute(s),
            fn_constructor_kwargs={"plugin": build, "params": step.params, "guard": guard},
            **kwargs,
        )
    task = named_like(GuardedTask, step.plugin)(build, step.params, guard)
    return ds.map_batches(task, compute=_compute(s), **kwargs)


def _split_blocks(ds: ray.data.Dataset, rows: int, num_cpus: float) -> ray.data.Dataset:
    """Blocks of at most ``rows`` rows, cut inside the read tasks (no extra stage, no barrier).

    Ray Data fuses read -> pass-through ``map_batches`` -> streaming repartition into one task
    operator that runs with the read's CPU share. The public ``Dataset.repartition`` gives its
    operator no remote arguments, so it would ask for a whole CPU per task, not fuse with the
    read, and wait forever on a machine whose actor pools hold all but the I/O share (seen with
    Ray Data 2.60 on 2 CPUs); hence the logical operator is built here with the read's share.
    Without that operator (another Ray version) the blocks are left as the source made them.
    """
    try:
        from ray.data._internal.logical.interfaces import LogicalPlan
        from ray.data._internal.logical.operators import StreamingRepartition

        ds = ds.map_batches(_identity, batch_format="pyarrow", num_cpus=num_cpus)
        op = StreamingRepartition(
            target_num_rows_per_block=rows,
            input_dependencies=[ds._logical_plan.dag],
            ray_remote_args={"num_cpus": num_cpus},
        )
        return ray.data.Dataset._from_parent(ds, LogicalPlan(op, ds.context))
    except (ImportError, AttributeError, TypeError) as exc:  # pragma: no cover - Ray API drift
        log.warning("blocks left as read (cannot split them on this Ray version: %s)", exc)
        return ds


def _identity(batch: Any) -> Any:
    return batch


def _dataset_schema(plan: Plan, ds: ray.data.Dataset) -> Any:
    """The Arrow schema of a source's dataset, for a source that cannot tell it beforehand."""
    schema = ds.schema()
    if schema is None:
        where = getattr(plan.source.params, "path", None)
        raise DataError(
            "the source produced no rows" + (f" from {where}" if where else ""),
            key="source.params.path" if where else "source.params",
        )
    return getattr(schema, "base_schema", schema)


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
    return _error_in_message(exc)


_REMOTE_ERROR = re.compile(r"pipeline\.errors\.(\w+): (.+)")
_KEY = re.compile(r"[\w.\[\]-]+")


def _error_in_message(exc: BaseException) -> BulkInferError | None:
    """Rebuild a BulkInferError that Ray only kept as text.

    An error raised in an actor's ``__init__`` (a model that cannot load) reaches the driver as
    ``ActorDiedError``, which keeps the original exception only in its message.
    """
    found = _REMOTE_ERROR.findall(str(exc))
    if not found:
        return None
    name, text = found[-1]
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BulkInferError)):
        return None
    key, sep, message = text.partition(": ")
    if sep and _KEY.fullmatch(key):
        return cls(message, key=key)
    return cls(text)


class _HideTracebacks(logging.Filter):
    """Drop the traceback Ray Data logs with a failed task: bulkinfer reports the error itself
    (the full trace stays in Ray Data's log file, which is written before the console)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _configure_ray_data(plan: Plan) -> None:
    configure_progress(plan.run.progress)
    context = ray.data.DataContext.get_current()
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
    if plan.rows_per_block:
        ds = _split_blocks(ds, plan.rows_per_block, plan.io_cpus or 1.0)
    for step in plan.maps:
        ds = _map(plan, ds, step, ledger)
    return ds


def _start_ledger(plan: Plan) -> Any:
    if not plan.maps:
        return None
    actor = ray.remote(num_cpus=0, max_restarts=0)(Ledger)
    return actor.remote(budgets(plan))


def _client_mode() -> bool:
    from ray.util.client import ray as client

    return client.is_connected()


def execute(plan: Plan, *, started: float | None = None) -> RunResult:
    """Run the plan on the Ray cluster this process is connected to (see :func:`ensure_ray`).

    ``started`` is the ``time.perf_counter()`` value the wall time counts from (default: now);
    pass the moment the run began to include validation and Ray start-up. Returns once the
    job's actors are released. Through Ray Client (``ray://``) the job runs as a task inside the
    cluster: Ray Data's streaming executor needs a driver that is part of the cluster, and the
    staging folder is then handled where the workers write.
    """
    started = time.perf_counter() if started is None else started
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
        return _execute(plan, started)
    except BulkInferError as error:
        # A fresh error, raised outside this handler: the original's traceback holds the failed
        # Dataset, whose actor pool (and its CPUs) lives as long as anything references it.
        fresh = type(error)(error.message, key=error.key)
    finally:
        wait_for_actors_released()
    gc.collect()
    raise fresh


def _execute(plan: Plan, started: float) -> RunResult:
    resources = ray.cluster_resources()
    plan = cluster_budget(plan)
    log.info("\n%s", describe(plan))
    _configure_ray_data(plan)
    io = IOContext(
        ray_remote_args={"num_cpus": plan.io_cpus},
        num_blocks=plan.read_tasks,
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
    probe = FirstOutputProbe()  # installed before the first dataset exists (see its docstring)
    with probe.installed():
        plan, units, read = _checked_reads(plan, source, out)
        ledger = _start_ledger(plan)
        try:
            if out is None:
                result = _run_whole(plan, read, sink, ledger, probe, empty=not units)
            else:
                result = _run_units(plan, read, sink, out, units, ledger, probe)
            if ledger is not None:
                result.notes = ray.get(ledger.notes.remote())
        finally:
            if ledger is not None:
                ray.kill(ledger)
    result.wall_s = time.perf_counter() - started
    result.job_s = time.perf_counter() - job_start
    result.first_output_s = probe.seconds_since(job_start)
    result.cluster = {k: resources[k] for k in ("CPU", "GPU") if k in resources}
    return result


def _checked_reads(
    plan: Plan, source: Source, out: FileOutput | None
) -> tuple[Plan, list[WorkUnit], _Reads]:
    """The plan typed from the source's schema, the work units, and the first unit's dataset.

    The column types are checked from the source through every stage to the sink
    (:func:`pipeline.plan.typed`) before any model loads. A source that cannot tell its schema
    on the driver is asked through the first unit's dataset, which then runs as it is.
    """
    params = plan.source.params
    with user_errors(plan, source, None):
        try:
            schema = source.schema(params)
            if out is None:  # nothing to stage: the whole source in one execution
                units, first = [WHOLE_SOURCE], source.read(params)
            else:
                units = source.units(params)
                first = source.read_unit(params, units[0]) if units else None
        except EmptyInputError:
            if not plan.run.allow_empty:
                raise
            return plan, [], _Reads(plan, source, {})
        if schema is None:
            schema = _dataset_schema(plan, first if first is not None else source.read(params))
        plan = typed(plan, schema)
    ahead = {units[0].id: first} if units and first is not None else {}
    return plan, units, _Reads(plan, source, ahead)


class _Reads:
    """The source's dataset for each work unit, handing out the ones read ahead first."""

    def __init__(self, plan: Plan, source: Source, ahead: dict[str, ray.data.Dataset]) -> None:
        self.plan, self.source, self.ahead = plan, source, ahead

    def __call__(self, unit: WorkUnit) -> ray.data.Dataset:
        ds = self.ahead.pop(unit.id, None)
        return ds if ds is not None else self.source.read_unit(self.plan.source.params, unit)


def _run_units(
    plan: Plan,
    read: _Reads,
    sink: Any,
    out: FileOutput,
    units: list[WorkUnit],
    ledger: Any,
    probe: FirstOutputProbe,
) -> RunResult:
    """A file output: work unit by work unit into the staging folder, then published."""

    def write_unit(unit: WorkUnit, folder: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
        with user_errors(plan, read.source, unit, ledger):
            ds = _stages(plan, read(unit), ledger)
            probe.arm()
            written = sink.write_files(ds, folder, plan.sink.params)
        return operator_stages(ds), written

    outcome = run_units(plan, sink, out, units, ledger, write_unit)
    manifest = outcome.manifest
    return RunResult(
        output=out.location,
        rows_in=manifest["rows_in"],
        rows_out=manifest["rows_out"],
        wall_s=0.0,
        job_s=0.0,
        stages=outcome.stages,
        rows_set_aside=manifest["rows_set_aside"],
        units=outcome.units,
        units_skipped=outcome.units_skipped,
        rows_done=outcome.rows_done,
        manifest=manifest,
    )


def _run_whole(
    plan: Plan, read: _Reads, sink: Any, ledger: Any, probe: FirstOutputProbe, empty: bool
) -> RunResult:
    """A sink without a file output (e.g. ``show``): one execution, nothing to stage."""
    if empty:  # run.allow_empty and a source without rows
        return RunResult(output=None, rows_in=0, rows_out=0, wall_s=0.0, job_s=0.0)
    with user_errors(plan, read.source, None, ledger):
        ds = _stages(plan, read(WHOLE_SOURCE), ledger)
        probe.arm()
        written = sink.write(ds, plan.sink.params)
    rows_in = rows_out = None
    set_aside = 0
    if ledger is not None:  # the job has map stages
        drained = ray.get(ledger.drain.remote())
        stages = drained["stages"]
        check_budgets(plan, stages, drained["first_error"], min_rows=0)
        first, last = stages.get(plan.maps[0].key), stages.get(plan.maps[-1].key)
        rows_in = first["rows_in"] if first else None
        rows_out = last["rows_out"] if last else None
        set_aside = sum(c["skipped"] + c["dead_letter"] for c in stages.values())
    if not (rows_in or written.rows) and not plan.run.allow_empty:
        path = getattr(plan.source.params, "path", None)
        raise EmptyInputError.for_source(path if path is not None else plan.source.name)
    return RunResult(
        output=written.location,
        rows_in=rows_in if rows_in is not None else written.rows,
        rows_out=written.rows if written.rows is not None else rows_out,
        wall_s=0.0,
        job_s=0.0,
        stages=operator_stages(ds),
        rows_set_aside=set_aside,
    )
