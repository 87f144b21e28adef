"""A resolved config -> one frozen :class:`Plan`: the only planning pass a job goes through.

:func:`plan_job` validates the config, loads the plugins it names, shares the cluster's
resources (:mod:`pipeline.plan.shares`), types every column from the source's schema to the sink
(:func:`typed`), and runs every check that needs no data: error policies against the sink, the
output against its mode and an unfinished run, resources against the cluster's nodes. The dry
run prints :func:`describe` of that plan, and the runner executes it without changing it.
Nothing here imports Ray or Hydra.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.contract.errors import (
    BulkInferError,
    ConfigError,
    DataError,
    EmptyInputError,
    PlanError,
)
from pipeline.contract.reach import reach
from pipeline.contract.schema import is_python_object
from pipeline.contract.settings import JobConfig, RaySettings, StageSettings
from pipeline.contract.sink import DatasetSink, FileSink, Sink, StagedTarget, TableSink
from pipeline.contract.source import Source
from pipeline.contract.stage import MapStage
from pipeline.plan import registry
from pipeline.plan.fingerprints import dataflow, fingerprint
from pipeline.plan.model import Cluster, Plan, Step
from pipeline.plan.shares import share_cluster
from pipeline.plan.validation import reject_code_references, validate_model


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


def job_env(maps: tuple[Step, ...]) -> dict[str, str]:
    """The environment variables the map stages ask for (``MapStage.env_vars``), for every
    task and actor of the job; two stages that want one variable set two ways are refused."""
    env: dict[str, str] = {}
    wanted_by: dict[str, str] = {}
    for step in maps:
        try:
            asked = step.plugin.env_vars(step.params)
        except BulkInferError as exc:
            raise exc.within(step.key) from None
        for name, value in asked.items():
            if name in env and env[name] != str(value):
                raise PlanError(
                    f"{wanted_by[name]} runs its workers with {name}={env[name]} and {step.key} "
                    f"with {name}={value}; one job has one environment: run them as two jobs",
                    key=f"{step.key}.params",
                )
            env[name] = str(value)
            wanted_by.setdefault(name, step.key)
    return env


def in_cluster(ray: RaySettings) -> bool:
    """Whether the job runs inside a remote cluster (Ray Client): its paths are the cluster's."""
    return (ray.address or "").startswith("ray://")


def plan_job(
    config: dict[str, Any], cluster: Cluster | None = None, *, inspect: bool | None = None
) -> Plan:
    """Validate a resolved config (plain dicts and lists) and plan it for ``cluster``.

    ``cluster``: the resources the job runs on (default: this machine, as the embedded Ray and every
    dry run see it). ``inspect``: read the source's schema and the output's state here (default:
    unless the job runs through Ray Client, where paths are the cluster's and the same checks run
    inside it). Raises a :class:`~pipeline.contract.errors.BulkInferError` naming the key for
    anything a run would refuse without reading the data.
    """
    job, source, maps, sink = _validated(config)
    _check_error_policies(maps, sink)
    env = job_env(maps)
    cluster = cluster or Cluster.local(job.ray)
    layout = share_cluster(maps, job.ray, cluster)
    flow = dataflow([source, *maps, sink])
    plan = Plan(
        source=source,
        maps=maps,
        sink=sink,
        ray=job.ray,
        run=job.run,
        fingerprint=fingerprint(flow),
        dataflow=flow,
        cluster=cluster,
        layout=layout,
        env_vars=env,
    )
    if inspect is None:
        inspect = not in_cluster(job.ray)
    return inspected(plan) if inspect else plan


def validate_ray(config: dict[str, Any]) -> RaySettings:
    """The ``ray`` block alone, validated: where the job runs decides what it is planned for."""
    return validate_model(RaySettings, config.get("ray") or {}, "ray")


def inspected(plan: Plan) -> Plan:
    """The plan checked against what is on disk (:func:`check_destination`), typed from the
    source's schema (:func:`typed`) and, for a real run, with each map stage's outside
    services checked (:func:`preflight`). Where the paths are (a Ray Client job does this
    inside the cluster)."""
    plan = replace(plan, resumes=check_destination(plan))
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
    """Each map stage's :meth:`~pipeline.contract.stage.MapStage.preflight`, in order, on the
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
    :meth:`~pipeline.contract.stage.MapStage.estimate` from the source's first ``limit`` rows
    (:meth:`~pipeline.contract.source.Source.preview`). Empty when no stage estimates anything, and
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


def check_destination(plan: Plan) -> bool:
    """Refuse an existing output (``mode: error``), an unfinished run without
    ``run.resume=true``, or a resume whose config changed: what is on disk, before any work.

    Returns whether a table sink's job record of this job is there to resume (the target's
    own check, which needs the output's columns, runs in :func:`typed`).
    """
    if issubclass(plan.sink.plugin, TableSink):
        from pipeline.output.tables import check_table

        return check_table(table_target(plan), plan.staged_job())
    sink = plan.sink.plugin(plan.io())
    if isinstance(sink, FileSink):
        from pipeline.output.publish import check

        check(sink.output(plan.sink.params), plan.fingerprint, plan.dataflow, plan.run.resume)
    elif isinstance(sink, DatasetSink):
        sink.check(plan.sink.params)
    return False


def table_target(plan: Plan) -> StagedTarget:
    """The target of the plan's table sink (opens nothing yet)."""
    sink = plan.sink.plugin(plan.io())
    assert isinstance(sink, TableSink)
    return sink.target(plan.sink.params)


def typed(plan: Plan, source_schema: Any) -> Plan:
    """The plan with the Arrow schema after every step, checked from the source to the sink.

    Each map stage's :meth:`~pipeline.contract.stage.MapStage.output_schema` gets the schema
    before it (a missing column or one of the wrong type is refused with the stage's key),
    and the sink's :meth:`~pipeline.contract.sink.Sink.check_schema` (a table sink: its
    target's ``check``) gets the last one; a column of pickled Python objects is refused for
    every sink. Runs before any model loads.

    A stage that declares no ``output_schema`` has its columns decided at run time: typing stops
    before it (``plan.pending`` is its index in ``plan.maps``), the sink is not checked yet, and
    the job types the rest from the stage's first output batch (:func:`typed_at_run_time`).
    """
    return _typed_from(plan, {plan.source.key: source_schema}, 0, source_schema)


def typed_at_run_time(plan: Plan, batch_schema: Any) -> Plan:
    """The plan typed on from ``plan.maps[plan.pending]``, a stage that declares no
    ``output_schema``, given the Arrow schema of its first output batch.

    The stage's columns are the batch's, each of the batch's type (a column that holds only
    nulls in that batch keeps the type it had before the stage); then the stages after it are
    typed as :func:`typed` does, and the sink is checked, or typing stops again at the next stage
    that declares no ``output_schema``. Raises what :func:`typed` raises (the sink's refusal
    keyed ``sink``). ``batch_schema`` None (the stage returned no rows at all): its columns are
    taken to be those before it.
    """
    import pyarrow as pa

    index = plan.pending
    if index is None:
        raise ValueError("the plan has no stage whose columns are decided at run time")
    step = plan.maps[index]
    before = list(plan.schemas.values())[-1]
    if batch_schema is None:
        schema = before
    else:
        fields = []
        for field in batch_schema:
            if pa.types.is_null(field.type) and field.name in before.names:
                field = before.field(field.name)
            fields.append(field)
        schema = pa.schema(fields)
    schemas = {**plan.schemas, step.key: schema}
    plan = replace(plan, run_time_typed=(*plan.run_time_typed, step.key))
    return _typed_from(plan, schemas, index + 1, schema)


def _typed_from(plan: Plan, schemas: dict[str, Any], start: int, schema: Any) -> Plan:
    """Type ``plan.maps[start:]`` from ``schema`` on into ``schemas``, then check the sink."""
    for index in range(start, len(plan.maps)):
        step = plan.maps[index]
        if not step.plugin.declares_output_schema():
            return replace(plan, schemas=schemas, pending=index)
        try:
            schema = step.plugin.output_schema(step.params, schema)
        except BulkInferError as exc:
            raise exc.within(step.key) from None
        schemas[step.key] = schema
    check_sink(plan, schema)
    return replace(plan, schemas=schemas, pending=None)


def check_sink(plan: Plan, schema: Any) -> None:
    """The sink's check of the output's columns (:meth:`~pipeline.contract.sink.Sink.
    check_schema`, or a table sink's target ``check``); a column of pickled Python objects is
    refused for every sink. Raises a :class:`~pipeline.contract.errors.BulkInferError` keyed
    under ``sink``."""
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
            target = table_target(plan)
            reach(
                lambda: target.check(schema, plan.resumes), key=target.key, location=target.location
            )
        else:
            plan.sink.plugin(plan.io()).check_schema(plan.sink.params, schema)
    except BulkInferError as exc:
        raise exc.within("sink") from None
