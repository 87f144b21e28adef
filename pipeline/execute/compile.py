"""A plan's map stages as Ray Data operators: one ``map_batches`` per stage, guarded.

Each stage's plugin runs inside :class:`~pipeline.execute.stage_call.StageCall` (batch sizes,
threads, out-of-memory halving) inside its :class:`~pipeline.execute.guard.StageGuard`
(``on_error``, the ledger, the declared output columns), as an actor pool or as tasks, with the
resources the plan gave it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import ray
import ray.data

from pipeline.contract.settings import StageSettings
from pipeline.contract.source import WHOLE_SOURCE
from pipeline.execute import ray_internals, ray_session
from pipeline.execute.failures import user_errors
from pipeline.execute.guard import GuardedActor, GuardedTask, StageGuard, named_like
from pipeline.execute.stage_call import StageCall
from pipeline.plan.model import StageLayout, with_env
from pipeline.plan.planner import typed_at_run_time
from pipeline.plan.shares import fit_windows

if TYPE_CHECKING:
    from pipeline.plan.model import Layout, Plan, Step

log = logging.getLogger("bulkinfer")


def compile_stages(
    plan: Plan,
    ds: ray.data.Dataset,
    ledger: Any,
    services: dict[str, dict[str, Any]] | None = None,
    rows: int | None = None,
    maps: tuple[Step, ...] | None = None,
    layout: Layout | None = None,
) -> ray.data.Dataset:
    """``ds`` (the job's rows) through every map stage of ``plan``, laid out as
    ``plan.layout`` says (each stage's CPUs, threads and actors, the blocks, the windows);
    ``services``: stage key -> the job services its workers get (see
    ``MapStage.job_services``); ``rows``: the row count where the source knows it, to cut equal
    windows for every actor of a stage that sorts by length (the layout
    :func:`pipeline.plan.shares.fit_windows` derives; the plan is not changed); ``maps``: the
    stages to run instead of all of ``plan.maps`` and ``layout``: the layout to run them with
    instead of ``plan.layout`` (the first-batch probe's: the stages up to one, one actor each)."""
    few: set[str] = set()
    calls_cap: dict[str, int] = {}
    planned = layout if layout is not None else plan.layout
    layout = planned
    if rows:
        layout = fit_windows(plan, rows, planned)
        for step in plan.maps:
            size = layout.map_batches.get(step.key)
            count = -(-rows // size) if size else 0
            if size != planned.map_batches.get(step.key):
                log.info(
                    "bulkinfer: %s: %d rows, %d window(s) of up to %d", step.key, rows, count, size
                )
            workers = layout.settings(step).min_workers
            if size and count <= 2 * workers:
                few.add(step.key)
            if size:  # no actor takes more than its share of half the batches at once
                calls_cap[step.key] = max(1, -(-count // (2 * workers)))
    if layout.rows_per_block:
        read_args = plan.io().ray_remote_args
        ds = _split_blocks(ds, layout.rows_per_block, layout.io_cpus or 1.0, read_args)
    for step in maps if maps is not None else plan.maps:
        calls = min(calls_per_actor(step), calls_cap.get(step.key, 1 << 30))
        window = layout.map_batches.get(step.key)
        service = (services or {}).get(step.key)
        stage = layout.settings(step)
        ds = _map(plan, ds, step, stage, window, ledger, service, step.key in few, calls)
    return ds


def _split_blocks(
    ds: ray.data.Dataset, rows: int, num_cpus: float, read_args: dict[str, Any]
) -> ray.data.Dataset:
    """Blocks of at most ``rows`` rows cut inside the read tasks (see the planner's
    :func:`pipeline.plan.shares._blocks`), with the read's remote args (``read_args``) so they
    fuse with it; left as read if the Ray internals moved."""
    try:
        return ray_internals.streaming_repartition(ds, rows, num_cpus, read_args)
    except (ImportError, AttributeError, TypeError) as exc:  # pragma: no cover - Ray API drift
        log.warning("blocks left as read (cannot split them on this Ray version: %s)", exc)
        return ds


def _compute(s: StageSettings, one_at_a_time: bool = False, calls: int = 1) -> Any:
    if s.compute == "tasks":
        return ray.data.TaskPoolStrategy(size=s.concurrency) if s.concurrency else None
    # One UDF call at a time per actor unless the stage waits rather than computes
    # (MapStage.calls_per_actor: an LLM endpoint's requests); "true multi-threading" makes Ray
    # Data call the UDF on the task's own thread, where the guard can see which task a batch
    # belongs to (see pipeline.execute.guard.batch_key), and lets several calls run at once.
    # Ray Data queues two batches per actor by default: the first actor ready would take both
    # of two windows meant for two actors (one_at_a_time: the unit has few windows per actor).
    if calls > 1:  # one batch more than run at once, so the next is there when one ends
        queue = {
            "max_concurrent_calls_per_actor": calls,
            "max_tasks_in_flight_per_actor": calls + 1,
        }
    else:
        queue = {"max_tasks_in_flight_per_actor": 1} if one_at_a_time else {}
    if isinstance(s.concurrency, int) or s.concurrency is None:
        return ray.data.ActorPoolStrategy(
            size=s.concurrency or 1, enable_true_multi_threading=True, **queue
        )
    return ray.data.ActorPoolStrategy(
        min_size=s.concurrency.min,
        max_size=s.concurrency.max,
        enable_true_multi_threading=True,
        **queue,
    )


def calls_per_actor(step: Step) -> int:
    """How many map batches one actor of ``step`` works on at once
    (:meth:`~pipeline.contract.stage.MapStage.calls_per_actor`; 1 for tasks and ``auto``)."""
    s = step.stage
    if s.compute != "actors" or not isinstance(s.batch_size, int):
        return 1
    return max(1, int(step.plugin.calls_per_actor(step.params, s.batch_size)))


def _map(
    plan: Plan,
    ds: ray.data.Dataset,
    step: Step,
    s: StageSettings,
    ray_batch_size: int | None,
    ledger: Any,
    services: dict[str, Any] | None,
    one_at_a_time: bool = False,
    calls: int = 1,
) -> ray.data.Dataset:
    """Add one map stage, run with the settings ``s`` (its config's, with the layout's CPUs,
    threads and actors): the plugin inside :class:`StageCall` (``batch_size: auto``, threads),
    inside its error guard (``stage.on_error``, rows reported to the ledger), handed map batches
    of ``ray_batch_size`` rows (None: whole blocks); an actor pool
    with ``one_at_a_time`` holds one map batch per actor, and each actor works on ``calls``
    map batches at once (see :func:`_compute`)."""
    auto = s.batch_size == "auto"
    actors = s.compute == "actors"
    schema = plan.schemas.get(step.key)
    guard = StageGuard(
        step.key,
        step.name,
        s.on_error,
        s.max_error_rate,
        ledger,
        schema,
        step.plugin.passes_columns,
        typed_at_run_time=step.key in plan.run_time_typed,
    )
    # Actors get map batches of the planner's size (a model batch, or a window of them that
    # StageCall sorts by length; auto: the largest probed size). Tasks get whole blocks and
    # StageCall cuts them into batches: Ray Data does not fuse a map that has a batch size into
    # the read before it, and one fused read -> predict -> write task skips the object store
    # (benchmarks/RESULTS.md, the XGBoost workload).
    kwargs: dict[str, Any] = dict(
        batch_size=ray_batch_size,
        batch_format=s.batch_format,
        num_cpus=s.num_cpus,
        num_gpus=s.num_gpus or None,
        **s.ray_remote_args,
    )
    if s.memory:
        kwargs["memory"] = s.memory
    kwargs = with_env(kwargs, plan.env_vars)  # the job's environment (MapStage.env_vars)
    build = partial(
        StageCall,
        step.plugin,
        key=step.key,
        ledger=ledger,
        auto_batch=auto,
        memory_limit=s.memory,
        num_threads=s.num_threads,
        eager=actors,
        batch_limit=None if auto else s.batch_size,
        sort_by_length=step.plugin.sorts_by_length(),
        services=services,
    )
    if actors:
        # A killed actor is restarted and its in-flight batches are retried: Ray Data 2.60 sets
        # max_restarts=-1 and max_task_retries=-1 on pool actors (and max_retries=-1 on tasks)
        # unless a stage's ray_remote_args say otherwise (tests/test_failures.py kills one).
        return ds.map_batches(
            named_like(GuardedActor, step.plugin),
            compute=_compute(s, one_at_a_time and calls == 1, calls),
            fn_constructor_kwargs={"plugin": build, "params": step.params, "guard": guard},
            **kwargs,
        )
    task = named_like(GuardedTask, step.plugin)(build, step.params, guard)
    return ds.map_batches(task, compute=_compute(s), **kwargs)


def typed_by_first_batch(plan: Plan, services: dict[str, dict[str, Any]] | None = None) -> Plan:
    """``plan`` with the columns of every stage that declares no ``output_schema`` typed from
    that stage's first output batch, and the sink checked against the result; ``plan`` itself
    when nothing is pending (``plan.pending`` is None).

    For each such stage in order: the source's rows run through the stages up to it (each
    actor pool with one actor; no ledger, so nothing is counted) until it hands on one row;
    :func:`pipeline.plan.planner.typed_at_run_time` takes that block's Arrow schema, types the
    stages after it and checks the sink (its ``check_schema``, a table sink's target
    ``check``). Call it once Ray is up and the job's services are started
    (``services``: stage key -> what :meth:`~pipeline.contract.stage.MapStage.job_services`
    made), before any output is opened. Costs one more start of each stage up to it (a model
    loads once more); declaring ``output_schema`` avoids it.

    Raises the stage's or the sink's :class:`~pipeline.contract.errors.BulkInferError` (one
    line, its key); nothing is written.
    """
    while plan.pending is not None:
        plan = typed_at_run_time(plan, first_batch_schema(plan, services))
    return plan


def first_batch_schema(plan: Plan, services: dict[str, dict[str, Any]] | None = None) -> Any:
    """The Arrow schema of the first block ``plan.maps[plan.pending]`` hands on (None: it hands
    on no row for the whole input). See :func:`typed_by_first_batch`."""
    index = plan.pending
    assert index is not None
    upto = plan.maps[: index + 1]
    stages = dict(plan.layout.stages)
    for step in upto:
        if step.stage.compute == "actors":
            s = plan.layout.settings(step)
            stages[step.key] = StageLayout(s.num_cpus, s.num_threads, concurrency=1)
    one_each = replace(plan.layout, stages=stages)
    source = plan.source.plugin(plan.io())
    with user_errors(plan, source, WHOLE_SOURCE):
        with ray_internals.first_parquet_reader():
            ds = source.read(plan.source.params, WHOLE_SOURCE)
        ds = compile_stages(plan, ds, None, services, maps=upto, layout=one_each).limit(1)
        found = list(ds.iter_batches(batch_size=1, batch_format="pyarrow", prefetch_batches=0))
    del ds
    ray_session.wait_for_actors_released()  # the job's own actor pools need their CPUs
    if not found:  # the stage handed on no row for the whole input
        return None
    first = found[0]
    log.info("bulkinfer: %s: columns typed from its first batch", plan.maps[index].key)
    return first.schema
