"""Run a job with a file output work unit by work unit, committing each; resume; publish.

The source splits its input into deterministic work units (:meth:`Source.units`). Each unit is
one streaming Ray Data execution through every map stage into the sink's files, written into the
staging folder and committed there with its row counts (:mod:`pipeline.commit`). A resumed run
skips the committed units, so whatever the shape of the pipeline (any number of map stages, any
file sink), the output has every input row once. When all units are committed the output is
published with its ``_SUCCESS`` manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.commit import finish_publishing, prepare, publish
from pipeline.errors import BulkInferError, EmptyInputError, OutputError
from pipeline.guard import ErrorBudgetError
from pipeline.interfaces import FileOutput, WorkUnit
from pipeline.ledger import EARLY_STOP_MIN_ROWS, add_counts, dead_letter_lines, over_budget
from pipeline.plan import Plan
from pipeline.staging import MANIFEST, Staging

log = logging.getLogger("bulkinfer")

#: Runs one unit: (unit, folder to write its files into) -> (per-operator stats of that
#: execution, rows of each file written, by file name).
WriteUnit = Callable[[WorkUnit, str], tuple[list[dict[str, Any]], dict[str, int]]]


@dataclass
class UnitsOutcome:
    """What a run of work units did."""

    manifest: dict[str, Any]
    units: int
    units_skipped: int
    rows_done: int  # rows written by this run (not by the run it resumed)
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: The ledger's counts per stage key over every unit (rows, set-aside rows, counters).
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)


def budgets(plan: Plan) -> dict[str, tuple[str, float]]:
    """stage key -> (plugin name, max_error_rate) for stages that set bad rows aside."""
    return {
        step.key: (step.name, step.stage.max_error_rate)
        for step in plan.maps
        if step.stage is not None and step.stage.on_error != "fail"
    }


def check_budgets(
    plan: Plan, counts: dict[str, dict[str, int]], first_errors: dict[str, str], min_rows: int
) -> None:
    """Raise :class:`ErrorBudgetError` for the first stage over its error budget."""
    limits = budgets(plan)
    for step in plan.maps:
        message = over_budget(limits, counts, first_errors, step.key, min_rows)
        if message:
            raise ErrorBudgetError(message, key=f"{step.key}.stage.max_error_rate")


def _merge_stats(into: list[dict[str, Any]], more: list[dict[str, Any]]) -> None:
    by_name = {s["name"]: s for s in into}
    for stat in more:
        have = by_name.get(stat["name"])
        if have is None:
            into.append(dict(stat))
            by_name[stat["name"]] = into[-1]
            continue
        if stat.get("rows") is not None:
            have["rows"] = (have.get("rows") or 0) + stat["rows"]
        have["time_s"] = round(have.get("time_s", 0.0) + stat.get("time_s", 0.0), 3)


def _where(plan: Plan) -> str:
    path = getattr(plan.source.params, "path", None)
    return path if path is not None else f"source '{plan.source.name}'"


def _storing(out: FileOutput, step: Callable[[], Any]) -> Any:
    """Run a commit or publish step; a storage failure becomes an :class:`OutputError`."""
    try:
        return step()
    except BulkInferError:
        raise
    except Exception as exc:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise OutputError(
            f"cannot store the output at {out.location}: {type(exc).__name__}: {cause}.",
            key="sink.params.path",
        ) from None


def _with_hint(error: BulkInferError, staging: Staging, committed: int) -> BulkInferError:
    hint = (
        f" The finished work ({committed} committed work unit(s)) is kept in {staging.root}: "
        "rerun with run.resume=true to finish the job without redoing it, or delete that "
        "folder to start over."
    )
    return type(error)(error.message + hint, key=error.key)


def run_units(
    plan: Plan,
    out: FileOutput,
    units: list[WorkUnit],
    ledger: Any,
    write_unit: WriteUnit,
) -> UnitsOutcome:
    """Run the units not yet committed, then publish the output (see the module docstring)."""
    import ray

    prepared = prepare(out, plan.fingerprint, plan.dataflow, units, plan.run.resume)
    staging = prepared.staging
    if staging.job.get("state") == "publishing":  # killed while publishing: finish that
        finish_publishing(staging)
        manifest = staging._read_json(f"{out.path.rstrip('/')}/{MANIFEST}")
        return UnitsOutcome(manifest, len(units), len(units), 0)
    markers = dict(prepared.committed)
    skipped = sum(1 for u in units if u.id in markers)
    if prepared.resumed:
        log.warning(
            "bulkinfer: resuming %s: %d of %d work units already done",
            out.location,
            skipped,
            len(units),
        )
    counts: dict[str, dict[str, int]] = {}
    for marker in markers.values():
        add_counts(counts, marker["stages"])
    first_stage = plan.maps[0].key if plan.maps else None
    stats: list[dict[str, Any]] = []
    rows_done = 0
    first_errors: dict[str, str] = {}
    written_any = False
    try:
        for unit in units:
            if unit.id in markers:
                continue
            started = time.perf_counter()
            if ledger is not None:
                ray.get(ledger.reset.remote(counts))
            work = staging.begin(unit)
            unit_stats, written = write_unit(unit, work.data)
            _merge_stats(stats, unit_stats)
            drained = (
                ray.get(ledger.drain.remote())
                if ledger is not None
                else {"stages": {}, "records": [], "first_error": {}}
            )
            add_counts(counts, drained["stages"])
            for stage, error in drained["first_error"].items():
                first_errors.setdefault(stage, error)
            check_budgets(plan, counts, first_errors, EARLY_STOP_MIN_ROWS)
            written_any = True
            marker = _storing(
                out,
                lambda work=work, drained=drained, written=written: staging.commit(
                    work,
                    drained["stages"],
                    first_stage,
                    dead_letter_lines(drained["records"]),
                    written,
                ),
            )
            markers[unit.id] = marker
            rows_done += marker["rows_out"]
            log.info(
                "bulkinfer: work unit %s committed: %d rows in, %d out, %d set aside (%.1f s)",
                unit.id,
                marker["rows_in"],
                marker["rows_out"],
                marker["rows_set_aside"],
                time.perf_counter() - started,
            )
        check_budgets(plan, counts, first_errors, min_rows=0)
        if not plan.run.allow_empty and not sum(markers[u.id]["rows_in"] for u in units):
            raise EmptyInputError.for_source(_where(plan))
        manifest = _storing(out, lambda: publish(staging, [markers[u.id] for u in units]))
    except BaseException as exc:
        if isinstance(exc, EmptyInputError) or not (markers or written_any):
            staging.remove()  # nothing finished: leave no trace
        elif isinstance(exc, BulkInferError):
            raise _with_hint(exc, staging, len(markers)) from None
        raise
    return UnitsOutcome(manifest, len(units), skipped, rows_done, stats, counts)
