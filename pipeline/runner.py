"""Plan -> one streaming Ray Data job -> a :class:`RunResult`.

``source -> map_batches per preprocessor -> map_batches for the predictor -> sink``. Ray Data
streams blocks through every stage, so the first predictions are written while the source is
still being read.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import ray
import ray.data

from pipeline import errors
from pipeline.errors import BulkInferError, DataError, PlanError
from pipeline.interfaces import IOContext, MapStage
from pipeline.plan import Plan, Step, budget_resources, describe
from pipeline.ray_stats import operator_rows

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

    @property
    def rows_per_s(self) -> float | None:
        return self.rows_out / self.job_s if self.rows_out and self.job_s > 0 else None

    def summary(self) -> str:
        rate = f"{self.rows_per_s:,.1f} rows/s" if self.rows_per_s else "n/a rows/s"
        where = f" -> {self.output}" if self.output else ""
        return (
            f"bulkinfer: {self.rows_in} rows in, {self.rows_out} rows out in {self.job_s:.1f} s "
            f"({rate}; {self.wall_s:.1f} s with Ray start-up){where}"
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
    return True


def cluster_budget(plan: Plan) -> Plan:
    """Fit the plan to the resources of the Ray cluster this process is connected to."""
    resources = ray.cluster_resources()
    return budget_resources(plan, resources.get("CPU", 0.0), resources.get("GPU", 0.0))


class _TaskAdapter:
    """Runs a map-stage class as a stateless task: one instance per worker process, reused."""

    _instances: dict[tuple[int, str], MapStage] = {}

    def __init__(self, plugin: type[MapStage], params: Any) -> None:
        self.plugin = plugin
        self.params = params

    def __call__(self, batch: Any) -> Any:
        cache_key = (id(self.plugin), self.params.model_dump_json())
        stage = self._instances.get(cache_key)
        if stage is None:
            stage = self._instances[cache_key] = self.plugin(self.params)
        return stage(batch)


def _map(ds: ray.data.Dataset, step: Step) -> ray.data.Dataset:
    s = step.stage
    assert s is not None
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
        if isinstance(s.concurrency, int) or s.concurrency is None:
            compute = ray.data.ActorPoolStrategy(size=s.concurrency or 1)
        else:
            compute = ray.data.ActorPoolStrategy(
                min_size=s.concurrency.min, max_size=s.concurrency.max
            )
        return ds.map_batches(
            step.plugin, compute=compute, fn_constructor_kwargs={"params": step.params}, **kwargs
        )
    compute = ray.data.TaskPoolStrategy(size=s.concurrency) if s.concurrency else None
    return ds.map_batches(_TaskAdapter(step.plugin, step.params), compute=compute, **kwargs)


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


def execute(plan: Plan) -> RunResult:
    """Run the plan on the Ray cluster this process is connected to (see :func:`ensure_ray`)."""
    started = time.perf_counter()
    plan = cluster_budget(plan)
    log.info("\n%s", describe(plan))
    ray.data.DataContext.get_current().enable_progress_bars = plan.run.progress
    io = IOContext(ray_remote_args={"num_cpus": plan.io_cpus})
    sink = plan.sink.plugin(io)
    sink.check(plan.sink.params)
    job_start = time.perf_counter()
    try:
        ds = plan.source.plugin(io).read(plan.source.params)
        _check_columns(plan, ds)
        for step in plan.maps:
            ds = _map(ds, step)
        written = sink.write(ds, plan.sink.params)
    except BulkInferError:
        raise
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is not None:
            raise user_error from None
        raise
    job_s = time.perf_counter() - job_start
    rows = operator_rows(ds)
    return RunResult(
        output=written.location,
        rows_in=rows.rows_in,
        rows_out=written.rows if written.rows is not None else rows.rows_out,
        wall_s=time.perf_counter() - started,
        job_s=job_s,
        stages=rows.stages,
    )
