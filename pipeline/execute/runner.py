"""Run a job: plan it for the Ray it runs on, then execute that plan unchanged.

``source -> map_batches per preprocessor -> map_batches for the predictor -> sink``, compiled by
:mod:`pipeline.execute.compile`. Ray Data streams blocks through every stage, so the first
predictions are written while the source is still being read. A file sink's output is written work
unit by work unit into a staging folder and published when the job succeeded
(:mod:`pipeline.execute.units`), so a crashed job can resume; a dataset sink consumes the whole job
in one piece.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
import ray.data

from pipeline.contract.errors import BulkInferError, EmptyInputError, Interrupted
from pipeline.contract.settings import RunSettings
from pipeline.contract.sink import FileSink, TableSink
from pipeline.contract.source import WHOLE_SOURCE, Source, WorkUnit
from pipeline.execute import ray_internals, ray_session
from pipeline.execute.compile import compile_stages, typed_by_first_batch
from pipeline.execute.failures import find_user_error, hide_tracebacks, user_errors
from pipeline.execute.ledger import Ledger, counters_of
from pipeline.execute.ray_stats import FirstOutputProbe, operator_stages
from pipeline.execute.reading import read_pending
from pipeline.execute.services import close_services, start_services, with_journals
from pipeline.execute.staged import FileJob, check_error_limits, error_limits, run_staged
from pipeline.execute.writing import JournaledDatasink
from pipeline.output.progress import ROW_ID, Progress
from pipeline.output.records import UnitReceipt, Written
from pipeline.plan.model import Plan
from pipeline.plan.planner import plan_job, typed, validate_ray
from pipeline.plan.report import describe
from pipeline.plan.shares import check_placement
from pipeline.plan.validation import validate_model

log = logging.getLogger("bulkinfer")


@dataclass
class RunResult:
    """What a finished job reports."""

    output: str | None
    rows_in: int | None
    rows_out: int | None
    wall_s: float = 0.0
    job_s: float = 0.0
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: Rows that map stages set aside (``on_error: skip | dead_letter``).
    rows_set_aside: int = 0
    #: Rows earlier runs of the job wrote (a resumed job), and rows this run wrote.
    rows_resumed: int = 0
    rows_done: int | None = None
    #: What the published output records, as JSON: a file output's ``_SUCCESS`` manifest
    #: (:class:`~pipeline.output.records.Manifest`), a table output's receipt
    #: (:class:`~pipeline.output.records.Receipt`).
    manifest: dict[str, Any] | None = None
    #: A table sink's publish: rows, and the engine's facts (version, snapshot id).
    published: dict[str, Any] | None = None
    #: Seconds from the start of the job until its last stage first handed rows on, and how
    #: many rows it had handed on at that moment.
    first_output_s: float | None = None
    first_output_rows: int = 0
    #: The Ray cluster's total resources during the job ("CPU", "GPU").
    cluster: dict[str, float] = field(default_factory=dict)
    #: Run-time decisions the stages reported (``batch_size: auto`` choices, OOM halving).
    notes: list[str] = field(default_factory=list)
    #: Per stage key: the job's totals of the stage's counters (requests, tokens, ...).
    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Lines the stages phrase from their counters (``MapStage.summary``).
    summaries: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float | None:
        done = self.rows_done if self.rows_done is not None else self.rows_out
        return done / self.job_s if done and self.job_s > 0 else None

    @property
    def steady_rows_per_s(self) -> float | None:
        """Rows per second after the first output: the rows handed on from then to the end
        over that time (start-up, model loading and the first batch left out)."""
        done = self.rows_done if self.rows_done is not None else self.rows_out
        if not done or self.first_output_s is None:
            return None
        seconds = self.job_s - self.first_output_s
        rows = done - self.first_output_rows
        return rows / seconds if rows > 0 and seconds > 0 else None

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
            "rows_resumed": self.rows_resumed,
            "rows_per_s": round(self.rows_per_s, 3) if self.rows_per_s else None,
            "steady_rows_per_s": (
                round(self.steady_rows_per_s, 3) if self.steady_rows_per_s else None
            ),
            "output": self.output,
            **({"published": self.published} if self.published is not None else {}),
            "stages": self.stages,
            "counters": self.counters,
            "summaries": self.summaries,
            "cluster": self.cluster,
            "notes": self.notes,
        }

    def remarks(self) -> list[str]:
        """What the run decided, set aside or skipped: lines printed before its summary."""
        lines = list(self.notes) + list(self.summaries)
        if self.rows_set_aside:
            lines.append(f"{self.rows_set_aside} rows set aside")
        if self.rows_resumed:
            lines.append(f"resumed: {self.rows_resumed:,} rows were already written")
        return lines


def run_job(
    config: dict[str, Any],
    *,
    started: float | None = None,
    recorder: Any = None,
    published: Callable[[], None] | None = None,
):
    """Plan a resolved config for the Ray it runs on and run it; returns the RunResult.

    The embedded Ray is planned for before it starts (so a refused plan costs no start-up)
    and checked against what Ray then reports; a cluster (``ray.address``), or a Ray this
    process already has, is connected to first and planned for as it is. ``recorder`` (a
    :class:`pipeline.app.metrics.Recorder`) gets the plan as soon as there is one;
    ``published`` is called once a staged output is published (see :func:`execute`).
    """
    started = time.perf_counter() if started is None else started
    settings = validate_ray(config)
    ray_logs = validate_model(RunSettings, config.get("run") or {}, "run").ray_logs
    if settings.address or ray.is_initialized():
        started_ray = ray_session.connect(settings, ray_logs)
        plan = plan_job(config, ray_session.cluster(settings.address))
    else:
        plan = plan_job(config)
        if recorder is not None:
            recorder.plan = plan
        started_ray = ray_session.connect(settings, ray_logs)
        check_placement(plan.maps, plan.layout, ray_session.cluster(None))
    if recorder is not None:
        recorder.plan, recorder.ray_started = plan, started_ray
        recorder.ray_node = ray.get_runtime_context().get_node_id()
    return execute(plan, started=started, published=published)


def _client_mode() -> bool:
    from ray.util.client import ray as client

    return client.is_connected()


def execute(
    plan: Plan,
    *,
    started: float | None = None,
    published: Callable[[], None] | None = None,
) -> RunResult:
    """Run the plan on the Ray cluster this process is connected to (see :func:`run_job`).

    ``started`` is the ``time.perf_counter()`` value the wall time counts from (default: now).
    ``published``, if given, is called on the driver right after a staged output is published
    (its files in place, or its table committed), before the job's actors are released: from
    then on the job's output is final, whatever stops the process (the command line stops
    turning Ctrl-C into an interrupt then).
    Returns once the job's actors are released. Through Ray Client (``ray://``) the job runs as
    a task inside the cluster: Ray Data's streaming executor needs a driver that is part of the
    cluster, and the output is checked and staged where the workers write.
    """
    started = time.perf_counter() if started is None else started
    if _client_mode():
        in_cluster = ray.remote(num_cpus=0, max_retries=0)(_execute_inspected)
        try:
            return ray.get(in_cluster.remote(plan))
        except Exception as exc:
            error = find_user_error(exc)
            if error is None:
                raise
            fresh = error.rebuilt()
        raise fresh
    # Release the actor pools of earlier failed jobs in this process: Ray Data drops them when
    # their Dataset is garbage, which a cycle through a kept exception can delay.
    gc.collect()
    stopping = False
    try:
        return _execute(plan, started, published)
    except BulkInferError as error:
        # A fresh error, raised outside this handler: the original's traceback holds the failed
        # Dataset, whose actor pool (and its CPUs) lives as long as anything references it.
        fresh = error.rebuilt()
        stopping = isinstance(error, Interrupted)
    finally:
        # A stopped job's process ends: no wait for its actors, which would hang on a Ray
        # that the same signal stopped (SIGTERM to the job's process group, as Slurm sends it).
        if not stopping:
            ray_session.wait_for_actors_released()
    gc.collect()
    raise fresh


def _execute_inspected(plan: Plan) -> RunResult:
    """Inside the cluster (Ray Client): check and type the plan where its paths are, then run."""
    from pipeline.plan.planner import inspected

    return execute(inspected(plan))


def _configure_ray_data(plan: Plan) -> None:
    ray_session.configure_output(plan.run.ray_logs)
    context = ray.data.DataContext.get_current()
    context.execution_no_progress_timeout_s = plan.run.stall_timeout_s
    ray_internals.mute_no_free_cpu_warning()  # the stall timeout reports a real wait
    hide_tracebacks()


def _execute(plan: Plan, started: float, published: Callable[[], None] | None = None) -> RunResult:
    resources = ray.cluster_resources()
    _configure_ray_data(plan)
    io = plan.io()
    source, sink = plan.source.plugin(io), plan.sink.plugin(io)
    job_start = time.perf_counter()
    probe = FirstOutputProbe()  # installed before the first dataset exists (see its docstring)
    with probe.installed():
        plan, units, read = _reads(plan, source, staged := isinstance(sink, FileSink | TableSink))
        log.info("\n%s", describe(plan))
        ledger = _start_ledger(plan, staged)
        services: dict[str, dict[str, Any]] = {}
        try:
            services = start_services(plan)
            # Stages that declare no output_schema: typed from their first batch, and the sink
            # checked against that, before any output is opened.
            plan = typed_by_first_batch(plan, services)
            read.plan = plan
            if staged:
                result = _run_staged(plan, read, sink, units, ledger, probe, services, published)
            else:
                result = _run_whole(plan, read, sink, ledger, probe, services)
            if ledger is not None:
                result.notes = ray.get(ledger.notes.remote())
        finally:
            close_services(services)
            if ledger is not None:
                ray.kill(ledger)
    result.wall_s = time.perf_counter() - started
    result.job_s = time.perf_counter() - job_start
    _summarize(plan, result)
    result.first_output_s = probe.seconds_since(job_start)
    result.first_output_rows = probe.rows
    result.cluster = {k: resources[k] for k in ("CPU", "GPU") if k in resources}
    return result


def _summarize(plan: Plan, result: RunResult) -> None:
    """The lines the stages' plugins phrase from their counters."""
    for step in plan.maps:
        totals = result.counters.get(step.key)
        if totals:
            line = step.plugin.summary(step.params, totals, result.job_s)
            if line:
                result.summaries.append(f"{step.key}: {line}")


def _reads(plan: Plan, source: Source, staged: bool) -> tuple[Plan, list[WorkUnit], _Reads]:
    """The work units and their datasets; a plan whose source could not tell its schema on the
    driver is typed from the first unit's dataset, which then runs as it is."""
    if plan.empty:
        return plan, [], _Reads(plan, source, {})
    params = plan.source.params
    with user_errors(plan, source, None):
        units = source.units(params) if staged else [WHOLE_SOURCE]
        if plan.schemas or not units:
            return plan, units, _Reads(plan, source, {})
        first = _read(source, params, units[0])
        schema = first.schema()
        if schema is None:
            raise EmptyInputError.for_source(_where(plan), key=_source_key(plan))
        plan = typed(plan, getattr(schema, "base_schema", schema))
    return plan, units, _Reads(plan, source, {units[0].id: first})


def _read(source: Source, params: Any, unit: WorkUnit) -> ray.data.Dataset:
    """``source.read(params, unit)`` with Ray Data's first (streaming) Parquet reader (see
    :func:`~pipeline.execute.ray_internals.first_parquet_reader`), for every source alike."""
    with ray_internals.first_parquet_reader():
        return source.read(params, unit)


def _where(plan: Plan) -> Any:
    path = getattr(plan.source.params, "path", None)
    return path if path is not None else f"source '{plan.source.name}'"


def _source_key(plan: Plan) -> str:
    return "source.params.path" if hasattr(plan.source.params, "path") else "source.params"


class _Reads:
    """The source's dataset for each work unit, handing out the one read ahead first."""

    def __init__(self, plan: Plan, source: Source, ahead: dict[str, ray.data.Dataset]) -> None:
        self.plan, self.source, self.ahead = plan, source, ahead

    def __call__(self, unit: WorkUnit) -> ray.data.Dataset:
        ds = self.ahead.pop(unit.id, None)
        return ds if ds is not None else _read(self.source, self.plan.source.params, unit)

    def rows(self, unit: WorkUnit) -> int | None:
        """The unit's row count, where the source knows it without reading the rows."""
        return self.source.count_rows(self.plan.source.params, unit)

    @property
    def streams(self) -> bool:
        """Whether the source's rows are read here, each with its id (``read_unit``)."""
        return self.source.reads_units()

    def pending(self, units: list[WorkUnit], done: Progress) -> ray.data.Dataset:
        """One dataset of every row of ``units`` not in ``done``: read here with ids where the
        source reads units itself, else the source's own datasets, one after another."""
        if self.streams:
            self.ahead.clear()
            plan, layout = self.plan, self.plan.layout
            return read_pending(
                self.source,
                plan.source.params,
                units,
                done,
                layout.read_tasks,
                layout.rows_per_block,
            )
        datasets = [self(unit) for unit in units]
        return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]


def _start_ledger(plan: Plan, staged: bool) -> Any:
    """The job's ledger actor: for the map stages' reports, and a staged job's written rows
    (its progress line); None for a dataset sink's job without map stages."""
    if not plan.maps and not staged:
        return None
    actor = ray.remote(num_cpus=0, max_restarts=0)(Ledger)
    return actor.remote(error_limits(plan))


def _run_staged(
    plan: Plan,
    read: _Reads,
    sink: FileSink | TableSink,
    units: list[WorkUnit],
    ledger: Any,
    probe: FirstOutputProbe,
    services: dict[str, dict[str, Any]],
    published: Callable[[], None] | None = None,
) -> RunResult:
    """A staged (file or table) output: one execution of the rows not yet written, each write
    task's output recorded as it is written, published when the job is done."""
    if isinstance(sink, TableSink):
        from pipeline.output.tables import TableJob

        target = sink.target(plan.sink.params)
        if plan.empty:  # run.allow_empty and a source without rows (or columns) to write
            log.warning("bulkinfer: no rows: %s is left as it was", target.location)
            return RunResult(output=target.location, rows_in=0, rows_out=0)
        out: Any = TableJob(target, plan.staged_job(), plan.output_schema)

        def writer(run_id: str) -> Any:
            return target.writer(out.state, run_id)

        def legacy(ds: ray.data.Dataset) -> list[dict[str, Any]]:
            receipt = target.write_unit(ds, out.state, "all", dict(sink.io.ray_remote_args))
            return UnitReceipt.from_json(receipt).parts
    else:
        out = FileJob(plan.staged_job(), sink.output(plan.sink.params))

        def writer(run_id: str) -> Any:
            return sink.writer(out.parts, plan.sink.params, run_id)

        def legacy(ds: ray.data.Dataset) -> list[dict[str, Any]]:
            files = sink.write_files(ds, out.parts, plan.sink.params)
            return [{"name": name, "rows": rows} for name, rows in files.items()]

    counted = [read.rows(unit) for unit in units]  # once: footers may be a request each
    rows_total = sum(counted) if None not in counted else None  # type: ignore[arg-type]

    def execute(done: Progress, job_id: str, run_id: str) -> list[dict[str, Any]]:
        # rows still to run, where the source knows its units' rows (for the windows)
        pending = max(0, rows_total - done.rows) if rows_total is not None else None
        if done.rows and read.streams and pending == 0:
            # A resumed job whose every row was written (stopped before its publish): start
            # no stage, load no model; publish what the records hold.
            log.warning("bulkinfer: every input row is written; publishing")
            return []
        with user_errors(plan, read.source, None, ledger):
            ds = compile_stages(
                plan,
                read.pending(units, done),
                ledger,
                with_journals(plan, services, out.store),
                pending,
            )
            probe.arm()
            # Made here, on the driver (where the job's credentials are), sent to each task.
            block_writer = writer(run_id)
            if block_writer is None:  # a sink without a BlockWriter: written at the end
                if read.streams:
                    ds = ds.drop_columns([ROW_ID])
                written = legacy(ds)
                rows = sum(int(w["rows"]) for w in written)
                if rows:
                    record = Written("all", rows, None, written, run_id)
                    out.store.add_marker(record.to_json())
            else:
                ds.write_datasink(
                    JournaledDatasink(
                        block_writer,
                        out.store,
                        job_id,
                        run_id,
                        out.location,
                        out.key,
                        block_writer.min_rows_per_write,
                        ledger,
                    ),
                    ray_remote_args=dict(sink.io.ray_remote_args),
                )
        return operator_stages(ds)

    outcome = run_staged(plan, out, units, ledger, execute, rows_total, published)
    manifest = outcome.manifest
    return RunResult(
        output=out.location,
        rows_in=manifest.rows_in,
        rows_out=manifest.rows_out,
        stages=outcome.stages,
        rows_set_aside=manifest.rows_set_aside,
        rows_resumed=outcome.rows_resumed,
        rows_done=outcome.rows_done,
        manifest=manifest.to_json(),
        published=manifest.published,
        counters={k: counters_of(c) for k, c in outcome.counts.items() if counters_of(c)},
    )


def _run_whole(
    plan: Plan,
    read: _Reads,
    sink: Any,
    ledger: Any,
    probe: FirstOutputProbe,
    services: dict[str, dict[str, Any]],
) -> RunResult:
    """A dataset sink (e.g. ``show``): one execution, nothing to stage."""
    if plan.empty:  # run.allow_empty and a source without rows
        return RunResult(output=None, rows_in=0, rows_out=0)
    with user_errors(plan, read.source, None, ledger):
        ds = compile_stages(plan, read(WHOLE_SOURCE), ledger, services, read.rows(WHOLE_SOURCE))
        probe.arm()
        try:
            written = sink.write(ds, plan.sink.params)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted: sink '{plan.sink.name}' keeps no output to resume; run the job again"
            ) from None
    rows_in = rows_out = None
    set_aside = 0
    stages: dict[str, dict[str, Any]] = {}
    if ledger is not None:  # the job has map stages
        drained = ray.get(ledger.drain.remote())
        stages = drained["stages"]
        check_error_limits(plan, stages, drained["first_error"], min_rows=0)
        first, last = stages.get(plan.maps[0].key), stages.get(plan.maps[-1].key)
        rows_in = first["rows_in"] if first else None
        rows_out = last["rows_out"] if last else None
        set_aside = sum(c["skipped"] + c["dead_letter"] for c in stages.values())
    if not (rows_in or written.rows) and not plan.run.allow_empty:
        raise EmptyInputError.for_source(_where(plan), key=_source_key(plan))
    return RunResult(
        output=written.location,
        rows_in=rows_in if rows_in is not None else written.rows,
        rows_out=written.rows if written.rows is not None else rows_out,
        stages=operator_stages(ds),
        rows_set_aside=set_aside,
        counters={k: counters_of(c) for k, c in stages.items() if counters_of(c)},
    )
