"""Validated config -> :class:`Plan`, plain data the runner compiles into a Ray Data job.

Nothing here imports Ray or Hydra, so validation, planning and dry runs are fast and testable
without a cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline import registry
from pipeline.batching import AUTO_MAX_ROWS
from pipeline.errors import BulkInferError, DataError, PlanError
from pipeline.interfaces import IOContext, MapStage, Plugin, Sink, Source
from pipeline.secrets import mask_secrets
from pipeline.settings import JobConfig, RaySettings, RunSettings, StageSettings
from pipeline.validation import reject_code_references, validate_model

#: Smallest CPU share the planner gives a worker before it refuses the plan instead.
MIN_CPU_SHARE = 0.1


@dataclass(frozen=True)
class Step:
    """One plugin in the job: where it came from in the config, its class and validated params."""

    key: str  # config path: "source", "preprocessors[0]", "predictor", "sink"
    kind: str
    name: str
    plugin: type[Plugin]
    params: Any
    stage: StageSettings | None = None  # map stages only


@dataclass(frozen=True)
class Plan:
    """Everything the runner needs, validated; ``io_cpus`` is set by :func:`budget_resources`."""

    source: Step
    maps: tuple[Step, ...]
    sink: Step
    ray: RaySettings
    run: RunSettings
    fingerprint: str
    io_cpus: float | None = None
    #: Rows per block after the read (None: as the source produces them); see ``size_blocks``.
    rows_per_block: int | None = None
    #: Read tasks the source is asked for (None: Ray's choice); see ``size_blocks``.
    read_tasks: int | None = None
    notes: tuple[str, ...] = field(default=())
    #: The part of the config the fingerprint covers (see :func:`dataflow`).
    dataflow: dict[str, Any] = field(default_factory=dict)
    #: The Arrow schema after each step, by step key ("source", "preprocessors[0]", ...), once
    #: the source's schema is known (see :func:`typed`).
    schemas: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> tuple[Step, ...]:
        return (self.source, *self.maps, self.sink)


def _step(kind: str, key: str, raw: Any) -> Step:
    plugin = registry.load(kind, raw.type, key=f"{key}.type")
    params = validate_model(plugin.Params, raw.params, f"{key}.params")
    stage = None
    if issubclass(plugin, MapStage):
        merged = {**plugin.default_stage.model_dump(exclude_unset=True), **(raw.stage or {})}
        stage = validate_model(StageSettings, merged, f"{key}.stage")
    elif raw.stage:
        raise PlanError(f"{kind} plugins are not map stages and take no 'stage' block", key=key)
    return Step(key=key, kind=kind, name=raw.type, plugin=plugin, params=params, stage=stage)


#: Stage keys about how or where a stage runs, or when the job gives up, not what it outputs: a
#: resumed job may change them (e.g. fewer actors after running out of memory).
EXECUTION_KEYS = frozenset(
    {
        "compute",
        "concurrency",
        "num_cpus",
        "num_gpus",
        "memory",
        "ray_remote_args",
        "max_error_rate",
        "batch_size",
        "num_threads",
    }
)


def dataflow(steps: list[Step] | tuple[Step, ...]) -> dict[str, Any]:
    """What determines the output, by stage key: each stage's plugin, its validated params
    (defaults filled in, so spelling a default out changes nothing) and the stage settings that
    are not :data:`EXECUTION_KEYS`. ``ray`` and ``run`` are left out: the same job run locally or
    on a cluster, with or without progress bars, has the same data flow."""
    flow: dict[str, Any] = {}
    for step in steps:
        stage = step.stage.model_dump(mode="json") if step.stage else None
        flow[step.key] = {
            "type": step.name,
            "params": step.params.model_dump(mode="json"),
            "stage": {k: v for k, v in stage.items() if k not in EXECUTION_KEYS} if stage else None,
        }
    return flow


def fingerprint(flow: dict[str, Any]) -> str:
    """Hash of a :func:`dataflow`: equal fingerprints, equal outputs."""
    blob = json.dumps(flow, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_plan(config: dict[str, Any]) -> Plan:
    """Validate a resolved config (plain dicts and lists) and load the plugins it names."""
    reject_code_references(config)
    job = validate_model(JobConfig, config, "")
    maps = [
        _step("preprocessor", f"preprocessors[{i}]", raw) for i, raw in enumerate(job.preprocessors)
    ]
    if job.predictor is not None:
        maps.append(_step("predictor", "predictor", job.predictor))
    source = _step("source", "source", job.source)
    sink = _step("sink", "sink", job.sink)
    assert issubclass(source.plugin, Source) and issubclass(sink.plugin, Sink)
    flow = dataflow([source, *maps, sink])
    return Plan(
        source=source,
        maps=tuple(maps),
        sink=sink,
        ray=job.ray,
        run=job.run,
        fingerprint=fingerprint(flow),
        dataflow=flow,
    )


def stage_key(step: Step, key: str | None) -> str:
    """A plugin's error key in full: ``params.x`` -> ``preprocessors[0].params.x``.

    Plugins do not know where they sit in the job, so a stage names its own keys relative to
    itself (``params.columns``); absolute keys (``predictor.params.model``) pass unchanged.
    """
    if not key:
        return f"{step.key}.params"
    if key == "params" or key.startswith(("params.", "stage.")):
        return f"{step.key}.{key}"
    return key


def typed(plan: Plan, source_schema: Any) -> Plan:
    """The plan with the Arrow schema after every step, checked from the source to the sink.

    Each map stage's :meth:`~pipeline.interfaces.MapStage.output_schema` gets the schema
    before it (a missing column or one of the wrong type is refused with the stage's key),
    and the sink's :meth:`~pipeline.interfaces.Sink.check_schema` gets the last one; a column
    of pickled Python objects is refused for every sink. Runs before any model loads.
    """
    from pipeline.schema import is_python_object

    schemas = {plan.source.key: source_schema}
    schema = source_schema
    for step in plan.maps:
        try:
            schema = step.plugin.output_schema(step.params, schema)
        except BulkInferError as exc:
            raise type(exc)(exc.message, key=stage_key(step, exc.key)) from None
        schemas[step.key] = schema
    for column in schema:
        if is_python_object(column.type):
            raise DataError(
                f"column {column.name!r} holds pickled Python objects, which no reader of the "
                f"output could use; drop the column (preprocessors: drop_columns) or make the "
                "stage that writes it return Arrow-typed values",
                key="sink",
            )
    sink = plan.sink.plugin(IOContext(fingerprint=plan.fingerprint))
    try:
        sink.check_schema(plan.sink.params, schema)
    except BulkInferError as exc:
        raise type(exc)(exc.message, key=exc.key or "sink") from None
    return replace(plan, schemas=schemas)


def _fmt(n: float) -> str:
    return f"{n:g}"


def budget_resources(plan: Plan, cpus: float, gpus: float, memory: float = math.inf) -> Plan:
    """Share the cluster between actor pools, task stages and I/O so the job can always progress.

    Actor pools hold their CPUs for the whole job. If they took every CPU, Ray Data could never
    schedule a read or write task and would wait forever, so the planner keeps ``ray.io_cpus``
    free (at most half the cluster; a whole CPU by default, because some of Ray Data's own
    tasks, such as the file listing of its Parquet reader in Ray 2.60, ask for one), gives actor
    stages without an explicit ``num_cpus`` an equal share of the rest (at most one CPU each),
    sets each actor's native threads so that together they cover the cluster's cores (logical
    CPU shares and threads are separate decisions), caps task stages at what stays free, and
    refuses plans that cannot fit.
    """
    for step in plan.maps:
        s = step.stage
        assert s is not None
        if s.num_gpus > 0 and s.num_gpus * max(1, s.min_workers) > gpus:
            have = f"{_fmt(gpus)} GPU" + ("s" if gpus != 1 else "")
            raise PlanError(
                f"asks for {_fmt(s.num_gpus)} GPU per worker x {max(1, s.min_workers)} worker(s), "
                f"but the Ray cluster has {have}. Set {step.key}.stage.num_gpus=0 to run on CPUs, "
                "or connect to a cluster with GPUs (ray.address).",
                key=f"{step.key}.stage.num_gpus",
            )
        if s.memory is not None and s.memory * max(1, s.min_workers) > memory:
            raise PlanError(
                f"asks for {s.memory:,} bytes per worker x {max(1, s.min_workers)} worker(s), but "
                f"the Ray cluster has {memory:,.0f} bytes of memory for tasks and actors. Lower "
                f"{step.key}.stage.memory or the stage's concurrency.",
                key=f"{step.key}.stage.memory",
            )
        if s.num_cpus is not None and s.num_cpus > cpus:
            raise PlanError(
                f"asks for {_fmt(s.num_cpus)} CPUs per worker but the Ray cluster has "
                f"{_fmt(cpus)}. Lower it to at most {_fmt(cpus)}.",
                key=f"{step.key}.stage.num_cpus",
            )

    actors = [st for st in plan.maps if st.stage and st.stage.compute == "actors"]
    fixed = sum(st.stage.num_cpus * st.stage.min_workers for st in actors if st.stage.num_cpus)
    shared = [st for st in actors if st.stage.num_cpus is None]
    io = min(plan.ray.io_cpus, cpus / 2)
    left = cpus - io - fixed
    if left < 0 or (shared and left / sum(st.stage.min_workers for st in shared) < MIN_CPU_SHARE):
        held = ", ".join(
            f"{st.key}: {st.stage.min_workers} actor(s) x "
            f"{'shared' if st.stage.num_cpus is None else _fmt(st.stage.num_cpus)} CPU"
            for st in actors
        )
        raise PlanError(
            f"the actor pools ({held}) leave no CPU for reading and writing on a cluster of "
            f"{_fmt(cpus)} CPUs (the job would wait forever). Lower a stage's concurrency, give "
            f"it a smaller num_cpus (fractions are fine, e.g. 0.5), or lower ray.io_cpus "
            f"(now {_fmt(plan.ray.io_cpus)}).",
            key=f"{actors[-1].key}.stage" if actors else "ray.io_cpus",
        )
    share = 0.0
    if shared:
        workers = sum(st.stage.min_workers for st in shared)
        share = min(1.0, math.floor(left / workers * 100) / 100)
    free = cpus - fixed - share * sum(st.stage.min_workers for st in shared)

    notes: list[str] = []
    maps: list[Step] = []
    actor_workers = sum(st.stage.min_workers for st in actors)
    for step in plan.maps:
        s = step.stage
        if s.compute == "actors" and s.num_threads is None and math.isfinite(cpus):
            # Measured on 2 cores (benchmarks/RESULTS.md): the actors' threads together should
            # cover every core; read/write tasks are short and need no core of their own.
            s = s.model_copy(update={"num_threads": max(1, int(cpus // actor_workers))})
        if s.compute == "actors" and s.num_cpus is None:
            s = s.model_copy(update={"num_cpus": share})
            notes.append(
                f"{step.key}: {s.min_workers} actor(s) x {_fmt(share)} CPU (shared), "
                f"{s.num_threads} thread(s) each"
            )
        elif s.compute == "tasks":
            task_cpus = s.num_cpus if s.num_cpus is not None else min(1.0, free)
            if task_cpus > free + 1e-9:
                raise PlanError(
                    f"tasks need {_fmt(task_cpus)} CPU each but actor pools leave {_fmt(free)} of "
                    f"{_fmt(cpus)} CPUs free; lower it or the actor pools' size.",
                    key=f"{step.key}.stage.num_cpus",
                )
            s = s.model_copy(update={"num_cpus": task_cpus})
        maps.append(replace(step, stage=s))
    io_cpus = round(min(1.0, free), 2)
    notes.append(f"read/write tasks: {_fmt(io_cpus)} CPU each")
    planned = replace(plan, maps=tuple(maps), io_cpus=io_cpus, notes=tuple(notes))
    return size_blocks(planned, read_tasks=max(1, math.floor(free / io_cpus + 1e-9)))


def size_blocks(plan: Plan, read_tasks: int) -> Plan:
    """Read with as many tasks as can run at once; cut blocks for a first stage of actors.

    Ray Data reads a small file as one block and an actor pool hands a block to one actor, so
    an 8,000-row Parquet file kept one actor of two busy while the other idled. Blocks of one
    batch each spread over every actor of every stage; a batch is also the unit the stage
    works on, so nothing is cut twice. A first stage of tasks is left uncut: its tasks fuse
    with the read (and the write) and cut their blocks into batches themselves, so blocks never
    travel through the object store (see ``runner._map``). The read gets ``read_tasks`` tasks
    (those that fit in the CPUs the actor pools leave; file sources use no more than they have
    files) instead of Ray's default of about 200: Ray cut a 1,000,000-row, one-row-group
    Parquet file into 134 blocks that way, each later a write task and a file, and took 3-4 s
    where one streaming read task took 0.6 s. ``batch_size: auto`` uses its largest probed
    size; ``null`` (whole blocks) leaves the source's blocks alone.
    """
    first = next((st for st in plan.maps if st.stage is not None), None)
    if first is None or first.stage is None or first.stage.batch_size is None:
        return plan
    if first.stage.compute == "tasks":
        note = f"blocks: read in up to {read_tasks} task(s), each fused with {first.key}'s tasks"
        return replace(plan, read_tasks=read_tasks, notes=(*plan.notes, note))
    size = first.stage.batch_size
    rows = AUTO_MAX_ROWS if size == "auto" else size
    note = (
        f"blocks: read in up to {read_tasks} task(s), cut into blocks of {rows} rows "
        f"(one batch of {first.key})"
    )
    return replace(plan, rows_per_block=rows, read_tasks=read_tasks, notes=(*plan.notes, note))


def worker_resources(stage: StageSettings) -> dict[str, float]:
    """Ray resources one worker of a (budgeted) stage asks for, by resource name."""
    need: dict[str, float] = {"CPU": stage.num_cpus or 0.0, "GPU": stage.num_gpus}
    if stage.memory:
        need["memory"] = float(stage.memory)
    for name, amount in (stage.ray_remote_args.get("resources") or {}).items():
        need[name] = float(amount)
    accelerator = stage.ray_remote_args.get("accelerator_type")
    if accelerator:
        need[f"accelerator_type:{accelerator}"] = 0.001
    return {k: v for k, v in need.items() if v > 0}


def _resource_key(step: Step, resource: str) -> str:
    fixed = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}
    if resource in fixed:
        return f"{step.key}.stage.{fixed[resource]}"
    if resource.startswith("accelerator_type:"):
        return f"{step.key}.stage.ray_remote_args.accelerator_type"
    return f"{step.key}.stage.ray_remote_args.resources.{resource}"


def _fits(node: dict[str, float], need: dict[str, float]) -> int:
    """How many workers asking for ``need`` one node can hold."""
    counts = [math.floor(node.get(name, 0.0) / amount + 1e-9) for name, amount in need.items()]
    return min(counts, default=1_000_000)


def check_placement(plan: Plan, nodes: list[dict[str, float]]) -> None:
    """Refuse a stage whose worker no node can hold, or whose actor pool the nodes cannot.

    ``nodes`` are the alive nodes' total resources (``ray.nodes()``). Ray Data would otherwise
    wait forever for a worker that can never be placed.
    """
    for step in plan.maps:
        s = step.stage
        assert s is not None
        need = worker_resources(s)
        for name, amount in need.items():
            best = max((node.get(name, 0.0) for node in nodes), default=0.0)
            if best + 1e-9 < amount:
                have = (
                    f"the largest node has {_fmt(best)}"
                    if best
                    else "no node of the Ray cluster has it"
                )
                raise PlanError(
                    f"each worker asks for {_fmt(amount)} of resource {name!r} but {have}; "
                    "the job would wait forever. Lower the request or run on a cluster that "
                    "has it (ray.address).",
                    key=_resource_key(step, name),
                )
        room = sum(_fits(node, need) for node in nodes)
        if room == 0 or (s.compute == "actors" and room < s.min_workers):
            raise PlanError(
                f"asks for {s.min_workers} actor(s) of {need} each, but the nodes of the Ray "
                f"cluster hold only {room} such worker(s) at once; the job would wait forever. "
                "Lower the concurrency or the per-worker resources.",
                key=f"{step.key}.stage",
            )


def local_budget(plan: Plan) -> Plan:
    """Budget for the embedded local Ray before it starts (its size is known in advance).

    A connected cluster is budgeted after connecting. GPUs of a local machine are only known to
    Ray once it starts, so unless ``ray.num_gpus`` is set they are not checked here.
    """
    if plan.ray.address:
        return plan
    cpus = plan.ray.num_cpus or os.cpu_count() or 1
    gpus = plan.ray.num_gpus if plan.ray.num_gpus is not None else math.inf
    return budget_resources(plan, cpus, gpus)


def _stage_line(stage: StageSettings) -> str:
    data = stage.model_dump(exclude_defaults=False)
    if data["ray_remote_args"]:  # e.g. a runtime_env with env_vars: {HF_TOKEN: ...}
        data["ray_remote_args"] = json.dumps(mask_secrets(data["ray_remote_args"]))
    else:
        data.pop("ray_remote_args")
    return ", ".join(f"{k}={v}" for k, v in data.items())


def describe(plan: Plan) -> str:
    """Human-readable plan, secrets masked: what ``run.dry_run=true`` prints."""
    lines = [f"bulkinfer plan '{plan.run.name}' (config fingerprint {plan.fingerprint})"]
    for n, step in enumerate(plan.steps, 1):
        params = mask_secrets(step.params.model_dump(mode="json"))
        lines.append(f"  {n}. {step.key}: {step.kind} '{step.name}'")
        lines.append(f"       params: {json.dumps(params, sort_keys=False)}")
        if step.stage is not None:
            lines.append(f"       stage:  {_stage_line(step.stage)}")
    ray = plan.ray.address or "local (embedded)"
    lines.append(f"  ray: {ray}")
    for note in plan.notes:
        lines.append(f"  resources: {note}")
    return "\n".join(lines)
