"""A resolved config -> one frozen :class:`Plan`: the only planning pass a job goes through.

:func:`plan_job` validates the config, loads the plugins it names, budgets the cluster's
resources (:mod:`pipeline.budget`), types every column from the source's schema to the sink
(:func:`typed`), and runs every check that needs no data: error policies against the sink, the
output against its mode and an unfinished run, resources against the cluster's nodes. The dry
run prints :func:`describe` of that plan, and the runner executes it without changing it.
Nothing here imports Ray or Hydra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline import registry
from pipeline.budget import Budget, Cluster, budget
from pipeline.errors import BulkInferError, ConfigError, DataError, EmptyInputError, PlanError
from pipeline.fingerprints import dataflow, fingerprint
from pipeline.interfaces import FileSink, IOContext, MapStage, Plugin, Sink, Source, TableSink
from pipeline.schema import describe_schema, is_python_object
from pipeline.secrets import mask_secrets
from pipeline.settings import JobConfig, RaySettings, RunSettings, StageSettings
from pipeline.validation import reject_code_references, validate_model


@dataclass(frozen=True)
class Step:
    """One plugin in the job: where it came from in the config, its class and validated params."""

    key: str  # config path: "source", "preprocessors[0]", "predictor", "sink"
    kind: str
    name: str
    plugin: type[Plugin]
    params: Any
    stage: StageSettings | None = None  # map stages only: budgeted in a Plan


@dataclass(frozen=True)
class Plan:
    """Everything the runner needs, decided and checked once (see the module docstring)."""

    source: Step
    maps: tuple[Step, ...]
    sink: Step
    ray: RaySettings
    run: RunSettings
    fingerprint: str
    #: The part of the config the fingerprint covers (see :func:`pipeline.fingerprints.dataflow`).
    dataflow: dict[str, Any]
    cluster: Cluster
    #: CPUs of each read and write task.
    io_cpus: float
    #: Read tasks the source is asked for (None: Ray's choice).
    read_tasks: int | None = None
    #: Rows per block after the read (None: as the source produces them).
    rows_per_block: int | None = None
    notes: tuple[str, ...] = field(default=())
    #: Rows per Ray map batch, by stage key (see :func:`pipeline.budget.map_batch_rows`).
    map_batches: dict[str, int | None] = field(default_factory=dict)
    #: The Arrow schema after each step, by step key ("source", "preprocessors[0]", ...); empty
    #: when the source can tell it only by reading (the runner then types the plan first).
    schemas: dict[str, Any] = field(default_factory=dict)
    #: The source has no rows and ``run.allow_empty`` is set: an empty output is published.
    empty: bool = False
    #: A table sink's job record of this very job is there to resume (``run.resume=true``).
    resumes: bool = False

    @property
    def steps(self) -> tuple[Step, ...]:
        return (self.source, *self.maps, self.sink)

    @property
    def output_schema(self) -> Any:
        """The Arrow schema the sink gets (None until the plan is typed)."""
        return list(self.schemas.values())[-1] if self.schemas else None

    def io(self) -> IOContext:
        """What read and write tasks get (see :class:`~pipeline.interfaces.IOContext`)."""
        return IOContext(
            ray_remote_args={"num_cpus": self.io_cpus},
            num_blocks=self.read_tasks,
            fingerprint=self.fingerprint,
            unit_rows=self.run.unit_rows,
            unit_bytes=self.run.unit_bytes,
        )


def _step(kind: str, key: str, raw: Any) -> Step:
    plugin = registry.load(kind, raw.type, key=f"{key}.type")
    params = validate_model(plugin.Params, raw.params, f"{key}.params")
    stage = None
    runs = plugin.decoder if issubclass(plugin, Source) else plugin
    if isinstance(runs, type) and issubclass(runs, MapStage):
        merged = {**runs.default_stage.model_dump(exclude_unset=True), **(raw.stage or {})}
        stage = validate_model(StageSettings, merged, f"{key}.stage")
    elif raw.stage:
        what = f"{kind} '{raw.type}' runs no map stage" if kind == "source" else f"{kind} plugins"
        raise PlanError(f"{what} and takes no 'stage' block", key=f"{key}.stage")
    return Step(key=key, kind=kind, name=raw.type, plugin=plugin, params=params, stage=stage)


def _decoding(source: Step) -> tuple[Step, ...]:
    """The source's decoder as the job's first map stage (key ``source``), if it has one."""
    if source.stage is None:
        return ()
    return (replace(source, plugin=source.plugin.decoder),)


def _validated(config: dict[str, Any]) -> tuple[JobConfig, Step, tuple[Step, ...], Step]:
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
    return job, source, (*_decoding(source), *maps), sink


def _check_error_policies(maps: tuple[Step, ...], sink: Step) -> None:
    if issubclass(sink.plugin, FileSink):
        return
    for step in maps:
        if step.stage.on_error == "dead_letter":
            raise ConfigError(
                f"dead_letter writes failing rows to <output>/_errors/, but sink "
                f"'{sink.name}' writes no files. Use on_error=skip or a file sink.",
                key=f"{step.key}.stage.on_error",
            )


def in_cluster(ray: RaySettings) -> bool:
    """Whether the job runs inside a remote cluster (Ray Client): its paths are the cluster's."""
    return (ray.address or "").startswith("ray://")


def plan_job(
    config: dict[str, Any], cluster: Cluster | None = None, *, inspect: bool | None = None
) -> Plan:
    """Validate a resolved config (plain dicts and lists) and plan it for ``cluster``.

    ``cluster``: the resources the job runs on (default: this machine, as the embedded Ray and
    every dry run see it). ``inspect``: read the source's schema and the output's state here
    (default: unless the job runs through Ray Client, where paths are the cluster's and the
    same checks run inside it). Raises a :class:`~pipeline.errors.BulkInferError` naming the
    key for anything a run would refuse without reading the data.
    """
    job, source, maps, sink = _validated(config)
    _check_error_policies(maps, sink)
    cluster = cluster or Cluster.local(job.ray)
    shared: Budget = budget(maps, job.ray, cluster)
    flow = dataflow([source, *maps, sink])
    plan = Plan(
        source=source,
        maps=shared.maps,
        sink=sink,
        ray=job.ray,
        run=job.run,
        fingerprint=fingerprint(flow),
        dataflow=flow,
        cluster=cluster,
        io_cpus=shared.io_cpus,
        read_tasks=shared.read_tasks,
        rows_per_block=shared.rows_per_block,
        notes=shared.notes,
        map_batches=shared.map_batches,
    )
    if inspect is None:
        inspect = not in_cluster(job.ray)
    return inspected(plan) if inspect else plan


def validate_ray(config: dict[str, Any]) -> RaySettings:
    """The ``ray`` block alone, validated: where the job runs decides what it is planned for."""
    return validate_model(RaySettings, config.get("ray") or {}, "ray")


def inspected(plan: Plan) -> Plan:
    """The plan checked against what is on disk (:func:`check_output`), typed from the
    source's schema (:func:`typed`) and, for a real run, with each map stage's outside
    services checked (:func:`preflight`). Where the paths are (a Ray Client job does this
    inside the cluster)."""
    plan = replace(plan, resumes=check_output(plan))
    try:
        schema = plan.source.plugin(plan.io()).schema(plan.source.params)
    except EmptyInputError:
        if not plan.run.allow_empty:
            raise
        return replace(plan, empty=True)
    plan = typed(plan, schema) if schema is not None else plan
    if not plan.run.dry_run:
        preflight(plan)
    return plan


def preflight(plan: Plan) -> None:
    """Each map stage's :meth:`~pipeline.interfaces.MapStage.preflight`, in order, on the
    driver: a server that is down fails the run here, before Ray runs any of the job."""
    for step in plan.maps:
        try:
            step.plugin.preflight(step.params)
        except BulkInferError as exc:
            raise exc.within(step.key) from None


#: Rows of the source a dry run reads for the stages' estimates.
PREVIEW_ROWS = 1000


def estimates(plan: Plan, limit: int = PREVIEW_ROWS) -> list[str]:
    """A dry run's forecasts: the input's rows and each map stage's
    :meth:`~pipeline.interfaces.MapStage.estimate` from the source's first ``limit`` rows
    (:meth:`~pipeline.interfaces.Source.preview`). Empty when no stage estimates anything, and
    then the source is not read."""
    default = MapStage.estimate.__func__
    steps = [s for s in plan.maps if getattr(s.plugin.estimate, "__func__", None) is not default]
    if not steps or plan.empty:
        return []
    preview = plan.source.plugin(plan.io()).preview(plan.source.params, limit)
    if preview is None:
        return [f"estimates: source '{plan.source.name}' cannot preview its rows"]
    total = f"{preview.total_rows:,}" if preview.total_rows is not None else "unknown"
    lines = [f"  input: {total} rows ({preview.how or 'as the source reports'})"]
    for step in steps:
        try:
            line = step.plugin.estimate(step.params, preview.rows, preview.total_rows)
        except BulkInferError as exc:
            raise exc.within(step.key) from None
        if line:
            lines.append(f"  {step.key}: {line}")
    return ["estimates (dry run, nothing sent):", *lines]


def check_output(plan: Plan) -> bool:
    """Refuse an existing output (``mode: error``), an unfinished run without
    ``run.resume=true``, or a resume whose config changed: what is on disk, before any work.

    Returns whether a table sink's job record of this job is there to resume (the target's
    own check, which needs the output's columns, runs in :func:`typed`).
    """
    if issubclass(plan.sink.plugin, TableSink):
        from pipeline.tables import check_table

        return check_table(plan)
    if not issubclass(plan.sink.plugin, FileSink):
        plan.sink.plugin(plan.io()).check(plan.sink.params)
        return False
    from pipeline.commit import check

    out = plan.sink.plugin(plan.io()).output(plan.sink.params)
    check(out, plan.fingerprint, plan.dataflow, plan.run.resume)
    return False


def typed(plan: Plan, source_schema: Any) -> Plan:
    """The plan with the Arrow schema after every step, checked from the source to the sink.

    Each map stage's :meth:`~pipeline.interfaces.MapStage.output_schema` gets the schema
    before it (a missing column or one of the wrong type is refused with the stage's key),
    and the sink's :meth:`~pipeline.interfaces.Sink.check_schema` gets the last one; a column
    of pickled Python objects is refused for every sink. Runs before any model loads.
    """
    schemas = {plan.source.key: source_schema}
    schema = source_schema
    for step in plan.maps:
        try:
            schema = step.plugin.output_schema(step.params, schema)
        except BulkInferError as exc:
            raise exc.within(step.key) from None
        schemas[step.key] = schema
    for column in schema:
        if is_python_object(column.type):
            raise DataError(
                f"column {column.name!r} holds pickled Python objects, which no reader of the "
                "output could use; leave it out (sink.params.columns) or make the stage that "
                "writes it return Arrow-typed values",
                key="sink",
            )
    try:
        if issubclass(plan.sink.plugin, TableSink):
            from pipeline.reach import reach
            from pipeline.tables import target_of

            target = target_of(plan)
            reach(
                lambda: target.check(schema, plan.resumes), key=target.key, location=target.location
            )
        else:
            plan.sink.plugin(plan.io()).check_schema(plan.sink.params, schema)
    except BulkInferError as exc:
        raise exc.within("sink") from None
    return replace(plan, schemas=schemas)


def _stage_line(stage: StageSettings) -> str:
    data = stage.model_dump(exclude_defaults=False)
    if data["ray_remote_args"]:  # e.g. a runtime_env with env_vars: {HF_TOKEN: ...}
        data["ray_remote_args"] = json.dumps(mask_secrets(data["ray_remote_args"]))
    else:
        data.pop("ray_remote_args")
    return ", ".join(f"{k}={v}" for k, v in data.items())


def _step_lines(plan: Plan, n: int, step: Step) -> list[str]:
    decoding = step.key == "source" and step is not plan.source  # the source's decoder
    lines = [f"  {n}. {step.key}: {'decoding rows of' if decoding else step.kind} '{step.name}'"]
    if not decoding:
        params = mask_secrets(step.params.model_dump(mode="json"))
        lines.append(f"       params: {json.dumps(params, sort_keys=False)}")
    if step.stage is not None and (decoding or step.kind != "source"):
        lines.append(f"       stage:  {_stage_line(step.stage)}")
    schema = plan.schemas.get(step.key)
    if schema is not None and (decoding or step.key != "source" or plan.source.stage is None):
        lines.append(f"       columns: {describe_schema(schema)}")
    return lines


def describe(plan: Plan) -> str:
    """The plan as a person reads it, secrets masked: what ``run.dry_run=true`` prints and
    what the runner logs before it runs exactly this."""
    lines = [f"bulkinfer plan '{plan.run.name}' (config fingerprint {plan.fingerprint})"]
    for n, step in enumerate(plan.steps, 1):
        lines += _step_lines(plan, n, step)
    if plan.empty:
        lines.append("  input: no rows (run.allow_empty: an empty output is published)")
    elif not plan.schemas:
        lines.append("  columns: known once the source is read")
    where = plan.ray.address or "local (embedded)"
    c = plan.cluster
    gpus = f", {c.gpus:g} GPU" if c.gpus else ""
    lines.append(f"  ray: {where}; planned for {c.name} with {c.cpus:g} CPU{gpus}")
    for note in plan.notes:
        lines.append(f"  resources: {note}")
    return "\n".join(lines)
