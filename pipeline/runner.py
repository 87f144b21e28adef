"""Plan -> one streaming Ray Data job -> a :class:`RunResult`.

``source -> map_batches per preprocessor -> map_batches for the predictor -> sink``. Ray Data
streams blocks through every stage, so the first predictions are written while the source is
still being read.
"""

from __future__ import annotations

import gc
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import ray
import ray.data

from pipeline import errors
from pipeline.batching import AUTO_MAX_ROWS
from pipeline.errors import BulkInferError, DataError, PlanError
from pipeline.interfaces import IOContext
from pipeline.plan import Plan, Step, budget_resources, describe
from pipeline.ray_stats import FirstOutputProbe, operator_stages
from pipeline.settings import RaySettings
from pipeline.stage_call import JobCounters, StageCall, actor_class

log = logging.getLogger("bulkinfer")

#: Ray settings that decide how :func:`ensure_ray` starts or connects to Ray.
_START_KEYS = ("address", "num_cpus", "num_gpus", "object_store_memory", "runtime_env")
#: What this process started Ray with (None: Ray was not started here, or was shut down).
_started_with: dict[str, Any] | None = None
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
    #: Rows (in, out) of each map stage by config key ("source" for a job without map stages).
    stage_rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Seconds from the start of the job until its last stage first handed rows on.
    first_output_s: float | None = None
    #: The Ray cluster's total resources during the job ("CPU", "GPU").
    cluster: dict[str, float] = field(default_factory=dict)
    #: Run-time decisions the stages reported (``batch_size: auto`` choices, OOM halving).
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float | None:
        return self.rows_out / self.job_s if self.rows_out and self.job_s > 0 else None

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

    def summary(self) -> str:
        """One sentence: rows, time, rate, first output, where the output is."""
        from pipeline.metrics import sentence

        notes = "".join(f"bulkinfer: {note}\n" for note in self.notes)
        return notes + sentence(self.as_dict())


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
        ray.shutdown()


def _live_map_workers() -> list[str] | None:
    """Ray Data map-stage actors of this driver that are not dead (None: cannot tell)."""
    try:
        from ray._private import state  # the GCS view; the public state API needs a dashboard

        job_id = ray.get_runtime_context().get_job_id()
        return [
            actor["ActorClassName"]
            for actor in state.actors().values()
            if actor["JobID"] == job_id
            and actor["State"] != "DEAD"
            and str(actor["ActorClassName"]).startswith("MapWorker(")
        ]
    except Exception:
        return None


def wait_for_actors_released(timeout_s: float = RELEASE_TIMEOUT_S) -> bool:
    """Wait until Ray reports this driver's map-stage actors dead; False if some outlive it.

    Ray Data kills a dataset's actor pools when its executor shuts down: at the end of a full
    execution, but after a partial one (``take``, as the show sink does) only when the executor
    is garbage-collected, and the kill itself is asynchronous. Collecting garbage and waiting
    here means the next job of a sweep starts with the model actors of this one gone.
    """
    deadline = time.monotonic() + timeout_s
    collected = False
    while True:
        alive = _live_map_workers()
        if not alive:
            return True
        if not collected:
            gc.collect()  # an executor left behind by a partial read holds its actor pool
            collected = True
            continue
        if time.monotonic() > deadline:
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
    return budget_resources(
        plan,
        resources.get("CPU", 0.0),
        resources.get("GPU", 0.0),
        resources.get("memory", float("inf")),
    )


def _map(ds: ray.data.Dataset, step: Step, counters: Any) -> ray.data.Dataset:
    s = step.stage
    assert s is not None
    auto = s.batch_size == "auto"
    kwargs: dict[str, Any] = dict(
        # auto: Ray hands the stage its largest probed size; StageCall cuts it to the choice.
        batch_size=AUTO_MAX_ROWS if auto else s.batch_size,
        batch_format=s.batch_format,
        num_cpus=s.num_cpus,
        num_gpus=s.num_gpus or None,
        **s.ray_remote_args,
    )
    if s.memory:
        kwargs["memory"] = s.memory
    call = dict(
        plugin=step.plugin,
        params=step.params,
        key=step.key,
        counters=counters,
        auto_batch=auto,
        memory_limit=s.memory,
        num_threads=s.num_threads,
    )
    if s.compute == "actors":
        if isinstance(s.concurrency, int) or s.concurrency is None:
            compute = ray.data.ActorPoolStrategy(size=s.concurrency or 1)
        else:
            compute = ray.data.ActorPoolStrategy(
                min_size=s.concurrency.min, max_size=s.concurrency.max
            )
        return ds.map_batches(
            actor_class(step.plugin),
            compute=compute,
            fn_constructor_kwargs={**call, "eager": True},
            **kwargs,
        )
    compute = ray.data.TaskPoolStrategy(size=s.concurrency) if s.concurrency else None
    return ds.map_batches(StageCall(**call), compute=compute, **kwargs)


def _count_only(ds: ray.data.Dataset, counters: Any, num_cpus: float) -> ray.data.Dataset:
    """A job without map stages still counts its rows (a pass-through fused into the read)."""
    call = StageCall(None, None, "source", counters)
    return ds.map_batches(call, batch_format="pyarrow", num_cpus=num_cpus)


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


def _check_columns(plan: Plan, ds: ray.data.Dataset) -> None:
    """Walk the stages' column contracts against the source schema before any model loads."""
    schema = ds.schema()
    if schema is None:
        raise DataError("the source produced no rows", key="source.params")
    columns = list(schema.names)
    for step in plan.maps:
        try:
            columns = step.plugin.output_columns(step.params, columns)
        except BulkInferError as exc:
            raise type(exc)(exc.message, key=stage_key(step, exc.key)) from None


def stage_key(step: Step, key: str | None) -> str:
    """A plugin's error key in full: ``params.x`` -> ``preprocessors[0].params.x``.

    Plugins do not know where they sit in the job, so a stage may name its own keys relative
    to itself (``params.columns``); absolute keys (``predictor.params.model``) pass unchanged.
    """
    if not key:
        return f"{step.key}.params"
    if key == "params" or key.startswith(("params.", "stage.")):
        return f"{step.key}.{key}"
    return key


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


def execute(plan: Plan, *, started: float | None = None) -> RunResult:
    """Run the plan on the Ray cluster this process is connected to (see :func:`ensure_ray`).

    ``started`` is the ``time.perf_counter()`` value the wall time counts from (default: now);
    pass the moment the run began to include validation and Ray start-up. The job's time
    (``job_s``) counts from reading the source to the end of writing. Returns once the job's
    actors are released.
    """
    started = time.perf_counter() if started is None else started
    resources = ray.cluster_resources()
    plan = cluster_budget(plan)
    log.info("\n%s", describe(plan))
    configure_progress(plan.run.progress)
    # Surface a plugin's own exception (e.g. DataError naming a column), not Ray's wrapper.
    ray.data.DataContext.get_current().raise_original_map_exception = True
    io = IOContext(ray_remote_args={"num_cpus": plan.io_cpus}, num_blocks=plan.read_tasks)
    sink = plan.sink.plugin(io)
    sink.check(plan.sink.params)
    probe = FirstOutputProbe()
    counters = JobCounters.remote()
    job_start = time.perf_counter()
    try:
        with probe.installed():
            ds = plan.source.plugin(io).read(plan.source.params)
            _check_columns(plan, ds)
            if plan.rows_per_block:
                ds = _split_blocks(ds, plan.rows_per_block, plan.io_cpus or 1.0)
            for step in plan.maps:
                ds = _map(ds, step, counters)
            if not plan.maps:
                ds = _count_only(ds, counters, plan.io_cpus or 1.0)
            probe.arm()
            written = sink.write(ds, plan.sink.params)
        job_s = time.perf_counter() - job_start
    except BulkInferError:
        raise
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is not None:
            raise user_error from None
        raise
    finally:
        wait_for_actors_released()
    rows = ray.get(counters.snapshot.remote())
    notes = ray.get(counters.get_notes.remote())
    ray.kill(counters)
    rows_in = rows[plan.maps[0].key if plan.maps else "source"][0] if rows else 0
    last = rows[plan.maps[-1].key if plan.maps else "source"][1] if rows else 0
    return RunResult(
        output=written.location,
        rows_in=rows_in,
        rows_out=written.rows if written.rows is not None else last,
        wall_s=time.perf_counter() - started,
        job_s=job_s,
        stage_rows={key: tuple(counts) for key, counts in rows.items()},
        stages=operator_stages(ds),
        first_output_s=probe.seconds_since(job_start),
        cluster={k: resources[k] for k in ("CPU", "GPU") if k in resources},
        notes=notes,
    )
