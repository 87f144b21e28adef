"""Run a staged job work unit by work unit, committing each; resume; publish.

The source splits its input into deterministic work units (:meth:`Source.units`). Each unit is
one streaming Ray Data execution through every map stage into the sink, staged invisibly to
readers and committed with its row counts in the job's store. A resumed run skips the committed
units, so whatever the shape of the pipeline (any number of map stages, any staged sink), the
output has every input row once. When all units are committed the output is published at once.

What is staged where is the :class:`UnitOutput`'s business: :class:`FileUnits` (a file sink: files
in the staging folder, published with a ``_SUCCESS`` manifest, :mod:`pipeline.output.publish`) or
:class:`pipeline.output.tables.TableUnits` (a table sink's target and its job store).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.contract.errors import BulkInferError, EmptyInputError, Interrupted, OutputError
from pipeline.contract.sink import FileOutput
from pipeline.contract.source import WorkUnit
from pipeline.execute.guard import ErrorLimitError
from pipeline.execute.ledger import EARLY_STOP_MIN_ROWS, dead_letter_lines, over_error_limit
from pipeline.output.publish import finish_publishing, prepare, publish
from pipeline.output.records import add_counts
from pipeline.output.staging import MANIFEST, Staging
from pipeline.output.store import Opened
from pipeline.plan.model import Plan

log = logging.getLogger("bulkinfer")

#: Runs one unit: (unit, the output's handle for it: a folder to write files into for a file
#: sink) -> (per-operator stats of that execution, what was written: rows of each file by name
#: for a file sink, the receipt for a table sink).
WriteUnit = Callable[[WorkUnit, Any], tuple[list[dict[str, Any]], Any]]


class UnitOutput(Protocol):
    """What :func:`run_units` needs of an output (a file sink's or a table sink's)."""

    #: The output as messages show it, and the config key naming it.
    location: str
    key: str
    #: Where the job record is (messages tell the user to resume from, or delete, it).
    where: str

    def open(self, units: list[WorkUnit]) -> Opened: ...

    def finish(self) -> dict[str, Any]: ...

    def begin(self, unit: WorkUnit) -> Any: ...

    def commit(
        self,
        handle: Any,
        written: Any,
        stages: dict[str, dict[str, int]],
        first_stage: str | None,
        dead_letters: bytes,
    ) -> dict[str, Any]: ...

    def publish(self, markers: list[dict[str, Any]]) -> dict[str, Any]: ...

    def drop(self, unit: WorkUnit, written: Any) -> None: ...

    def remove(self) -> None: ...

    def start_over(self) -> str: ...


class FileUnits:
    """A file sink's output: units as folders of files in the staging folder beside it."""

    def __init__(self, plan: Plan, out: FileOutput) -> None:
        self.plan, self.out = plan, out
        self.location, self.key = out.location, "sink.params.path"
        self.where = ""
        self.staging: Staging | None = None

    def open(self, units: list[WorkUnit]) -> Opened:
        prepared = prepare(
            self.out, self.plan.fingerprint, self.plan.dataflow, units, self.plan.run.resume
        )
        self.staging = prepared.staging
        self.where = self.staging.root
        publishing = self.staging.job.get("state") == "publishing"
        return Opened(dict(prepared.committed), prepared.resumed, publishing)

    def finish(self) -> dict[str, Any]:
        finish_publishing(self.staging)
        return self.staging._read_json(f"{self.out.path.rstrip('/')}/{MANIFEST}")

    def begin(self, unit: WorkUnit) -> Any:
        return self.staging.begin(unit)

    def commit(self, handle, written, stages, first_stage, dead_letters) -> dict[str, Any]:
        return self.staging.commit(handle, stages, first_stage, dead_letters, written)

    def publish(self, markers: list[dict[str, Any]]) -> dict[str, Any]:
        return publish(self.staging, markers)

    def drop(self, unit: WorkUnit, written: Any) -> None:
        """Nothing now: a resumed run discards the unit's work folder."""

    def remove(self) -> None:
        if self.staging is not None:
            self.staging.remove()

    def start_over(self) -> str:
        return "delete that folder"


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


def error_limits(plan: Plan) -> dict[str, tuple[str, float]]:
    """stage key -> (plugin name, max_error_rate) for stages that set bad rows aside."""
    return {
        step.key: (step.name, step.stage.max_error_rate)
        for step in plan.maps
        if step.stage is not None and step.stage.on_error != "fail"
    }


def check_error_limits(
    plan: Plan, counts: dict[str, dict[str, int]], first_errors: dict[str, str], min_rows: int
) -> None:
    """Raise :class:`ErrorLimitError` for the first stage over its error limit."""
    limits = error_limits(plan)
    for step in plan.maps:
        message = over_error_limit(limits, counts, first_errors, step.key, min_rows)
        if message:
            raise ErrorLimitError(message, key=f"{step.key}.stage.max_error_rate")


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


def _storing(out: UnitOutput, step: Callable[[], Any]) -> Any:
    """Run a commit or publish step; a storage failure becomes an :class:`OutputError`."""
    try:
        return step()
    except BulkInferError:
        raise
    except Exception as exc:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise OutputError(
            f"cannot store the output at {out.location}: {type(exc).__name__}: {cause}.",
            key=out.key,
        ) from None


def _with_hint(error: BulkInferError, out: UnitOutput, committed: int) -> BulkInferError:
    hint = (
        f" The finished work ({committed} committed work unit(s)) is kept in {out.where}: "
        f"rerun with run.resume=true to finish the job without redoing it, or "
        f"{out.start_over()} to start over."
    )
    return error.rebuilt(error.message + hint)


def interrupted(rows_written: int, rows_total: int | None) -> Interrupted:
    """The one line a stopped job ends with: what is written, and how to finish."""
    of = f" of {rows_total:,}" if rows_total is not None else ""
    return Interrupted(
        f"interrupted: {rows_written:,}{of} rows written; run again with run.resume=true to finish"
    )


def _cleanly(step: Callable[..., Any], *args: Any) -> None:
    """A clean-up step after a failure: its own failure is logged, never raised over the
    job's error (a resumed run, or the user, cleans up what it left)."""
    try:
        step(*args)
    except Exception as exc:  # noqa: BLE001 - the job's own error is the one to report
        log.warning("bulkinfer: could not clean up after the failure: %s", exc)


def run_units(
    plan: Plan,
    out: UnitOutput,
    units: list[WorkUnit],
    ledger: Any,
    write_unit: WriteUnit,
    rows_total: int | None = None,
) -> UnitsOutcome:
    """Run the units not yet committed, then publish the output (see the module docstring).

    ``rows_total``: the input's rows, where the source knows them (for the line a stopped job
    ends with). Ctrl-C (KeyboardInterrupt) keeps every committed unit and the staging area for
    ``run.resume=true`` and raises :class:`~pipeline.contract.errors.Interrupted`.
    """
    import ray

    opened = out.open(units)
    if opened.publishing:  # killed while publishing: finish that
        return UnitsOutcome(out.finish(), len(units), len(units), 0)
    markers = dict(opened.committed)
    skipped = sum(1 for u in units if u.id in markers)
    if opened.resumed:
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
    pending: tuple[WorkUnit, Any] | None = None  # the unit in flight, and what it wrote
    try:
        for unit in units:
            if unit.id in markers:
                continue
            started = time.perf_counter()
            if ledger is not None:
                ray.get(ledger.reset.remote(counts))
            pending = (unit, None)
            work = out.begin(unit)
            unit_stats, written = write_unit(unit, work)
            pending = (unit, written)
            _merge_stats(stats, unit_stats)
            drained = (
                ray.get(ledger.drain.remote())
                if ledger is not None
                else {"stages": {}, "records": [], "first_error": {}}
            )
            add_counts(counts, drained["stages"])
            for stage, error in drained["first_error"].items():
                first_errors.setdefault(stage, error)
            check_error_limits(plan, counts, first_errors, EARLY_STOP_MIN_ROWS)
            written_any = True
            marker = _storing(
                out,
                lambda work=work, drained=drained, written=written: out.commit(
                    work,
                    written,
                    drained["stages"],
                    first_stage,
                    dead_letter_lines(drained["records"]),
                ),
            )
            markers[unit.id] = marker
            pending = None
            rows_done += marker["rows_out"]
            log.info(
                "bulkinfer: work unit %s committed: %d rows in, %d out, %d set aside (%.1f s)",
                unit.id,
                marker["rows_in"],
                marker["rows_out"],
                marker["rows_set_aside"],
                time.perf_counter() - started,
            )
        check_error_limits(plan, counts, first_errors, min_rows=0)
        if not plan.run.allow_empty and not sum(markers[u.id]["rows_in"] for u in units):
            raise EmptyInputError.for_source(_where(plan))
        manifest = _storing(out, lambda: out.publish([markers[u.id] for u in units]))
    except KeyboardInterrupt:
        if pending is not None:
            _cleanly(out.drop, *pending)
        done = sum(m["rows_out"] for m in markers.values())
        raise interrupted(done, rows_total) from None
    except BaseException as exc:
        if pending is not None and isinstance(exc, Exception):
            _cleanly(out.drop, *pending)  # the unit that failed, or was not committed
        if isinstance(exc, EmptyInputError) or not (markers or written_any):
            _cleanly(out.remove)  # nothing finished: leave no trace
        elif isinstance(exc, BulkInferError):
            raise _with_hint(exc, out, len(markers)) from None
        raise
    return UnitsOutcome(manifest, len(units), skipped, rows_done, stats, counts)
