"""Run a staged job (a file or a table output) in one Ray Data execution; resume; publish.

The job's output is opened (a new job record, or the one an unfinished run left), the rows no
earlier run wrote are read, run through every map stage and written in ONE streaming execution
(actor pools start and models load once), each write task recording what it wrote as soon as it
is written (:mod:`pipeline.execute.writing`). When the execution ends, the recorded parts are
published at once: a file output with its ``_SUCCESS`` manifest
(:mod:`pipeline.output.publish`), a table in one commit (:mod:`pipeline.output.tables`). Stopped
at any point (Ctrl-C, a crash, a killed driver), the job loses at most the blocks in flight: a
resumed run reads only the rows no record holds.

Counts are exact after any number of resumes: every row an earlier run wrote passed every stage
once; every row it did not write (set aside, filtered out, in flight) is read again, so this
run's ledger counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.contract.errors import BulkInferError, EmptyInputError, Interrupted, OutputError
from pipeline.contract.halts import halt
from pipeline.contract.sink import FileOutput, JobStore
from pipeline.contract.source import WorkUnit
from pipeline.execute.guard import ErrorLimitError
from pipeline.execute.ledger import dead_letter_lines, over_error_limit, progress_amounts
from pipeline.execute.progress_line import ProgressLine, ledger_poll
from pipeline.output.journal import journal_entries
from pipeline.output.progress import Progress
from pipeline.output.publish import finish_publishing, prepare, publish, read_manifest
from pipeline.output.records import (
    JobRecord,
    Manifest,
    Receipt,
    StagedJob,
    Totals,
    Written,
    add_counts,
    new_run_id,
)
from pipeline.output.staging import Staging
from pipeline.output.store import Opened
from pipeline.plan.model import Plan

log = logging.getLogger("bulkinfer")

#: Runs the job's pending rows into the output: (the rows already written, the job's id, this
#: run's id) -> per-operator stats of the execution.
Execution = Callable[[Progress, str, str], list[dict[str, Any]]]


class StagedOutput(Protocol):
    """What :func:`run_staged` needs of an output (a file sink's or a table sink's)."""

    #: The output as messages show it, and the config key naming it.
    location: str
    key: str
    #: Where the job record is kept (messages tell the user to resume from, or delete, it).
    where: str
    store: JobStore
    #: The job record, once :meth:`open` returned.
    job: JobRecord | None

    def open(self, units: list[WorkUnit]) -> Opened: ...

    def written(self) -> list[Written]: ...

    def publish(
        self, written: list[Written], totals: Totals, dead_letters: bytes
    ) -> Manifest | Receipt: ...

    def finish(self) -> Manifest | Receipt: ...

    def remove(self) -> None: ...

    def start_over(self) -> str: ...


class FileJob:
    """A file sink's staged output: parts and their records in the staging folder beside it."""

    def __init__(self, spec: StagedJob, out: FileOutput) -> None:
        self.spec, self.out = spec, out
        self.location, self.key = out.location, "sink.params.path"
        self.where = ""
        self.staging: Staging = Staging(out)
        self.store: JobStore = self.staging

    @property
    def job(self) -> JobRecord | None:
        return self.staging.record

    @property
    def parts(self) -> str:
        """The folder write tasks write their files into."""
        return self.staging.parts

    def open(self, units: list[WorkUnit]) -> Opened:
        s = self.spec
        prepared = prepare(self.out, s.fingerprint, s.dataflow, units, s.resume)
        self.staging = self.store = prepared.staging
        self.where = self.staging.root
        record = self.staging.record
        publishing = record is not None and record.state == "publishing"
        return Opened(prepared.written, prepared.resumed, publishing)

    def written(self) -> list[Written]:
        return self.staging.written()

    def publish(self, written: list[Written], totals: Totals, dead_letters: bytes) -> Manifest:
        record = self.staging.record
        assert record is not None, "the job is not open"
        self.staging.write_errors(record.run_id, dead_letters)
        return publish(self.staging, written, totals)

    def finish(self) -> Manifest:
        finish_publishing(self.staging)
        return read_manifest(self.staging)

    def remove(self) -> None:
        self.staging.remove()

    def start_over(self) -> str:
        return "delete that folder"


@dataclass
class StagedOutcome:
    """What a staged run did."""

    #: What the published output records: a file output's ``_SUCCESS`` manifest, a table
    #: output's receipt.
    manifest: Manifest | Receipt
    #: Rows written by earlier runs of the job, and by this one.
    rows_resumed: int
    rows_done: int
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: The ledger's counts per stage key over the job (rows, set-aside rows, counters).
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


def consistent(records: list[Written], run_id: str | None = None) -> list[Written]:
    """The records a job counts: each holding rows no record before it (by id) holds (one
    whose rows another holds is from a task Ray ran twice). A record without row ids (a
    source or sink that gives none) counts only in the run that wrote it, ``run_id``."""
    kept: list[Written] = []
    seen = Progress()
    for record in sorted(records, key=lambda r: r.id):
        if record.ranges is None:
            if record.run_id == run_id:
                kept.append(record)
            continue
        if seen.overlaps(record.ranges):
            continue
        kept.append(record)
        seen.add(record.ranges)
    return kept


def interrupted(rows_written: int, rows_total: int | None, kept: bool = True) -> Interrupted:
    """The one line a stopped job ends with: what is written, and how to finish (``kept``:
    the staging is kept for ``run.resume=true``; else nothing was kept, the job starts over)."""
    of = f" of {rows_total:,}" if rows_total is not None else ""
    then = (
        "run again with run.resume=true to finish"
        if kept
        else "nothing is kept: run the job again to start it"
    )
    return Interrupted(
        f"interrupted: {rows_written:,}{of} rows written; {then}",
        rows_written=rows_written,
        rows_total=rows_total,
    )


def _storing(out: StagedOutput, step: Callable[[], Any]) -> Any:
    """Run a publish step; a storage failure becomes an :class:`OutputError`."""
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


def _answers_kept(out: StagedOutput) -> int:
    """Results the stages' journals hold in the output's staging (0 where it has none)."""
    try:
        return journal_entries(out.store)
    except Exception:  # noqa: BLE001 - only for deciding what to keep and the message
        return 0


def _with_hint(
    error: BulkInferError, out: StagedOutput, rows: int, answers: int = 0
) -> BulkInferError:
    done = f"{rows:,} rows written" + (f", {answers:,} answers kept" if answers else "")
    hint = (
        f" The finished work ({done}) is kept in {out.where}: rerun with "
        f"run.resume=true to finish the job without redoing it, or {out.start_over()} to "
        "start over."
    )
    return error.rebuilt(error.message + hint)


def _cleanly(step: Callable[..., Any], *args: Any) -> None:
    """A clean-up step after a failure: its own failure is logged, never raised over the
    job's error (a resumed run, or the user, cleans up what it left)."""
    try:
        step(*args)
    except Exception as exc:  # noqa: BLE001 - the job's own error is the one to report
        log.warning("bulkinfer: could not clean up after the failure: %s", exc)


def _where(plan: Plan) -> str:
    path = getattr(plan.source.params, "path", None)
    return path if path is not None else f"source '{plan.source.name}'"


def run_staged(
    plan: Plan,
    out: StagedOutput,
    units: list[WorkUnit],
    ledger: Any,
    execute: Execution,
    rows_total: int | None = None,
    published: Callable[[], None] | None = None,
) -> StagedOutcome:
    """Run the rows not yet written, then publish the output (see the module docstring).

    ``rows_total``: the input's rows, where the source knows them (for the progress line and
    the line a stopped job ends with). Ctrl-C (KeyboardInterrupt) before the output is published
    keeps every recorded part and the staging area for ``run.resume=true`` and raises
    :class:`~pipeline.contract.errors.Interrupted`; ``published`` is called as soon as the
    output is published (by this run, or by finishing the publish of the run it resumes).
    """
    import ray

    opened = out.open(units)
    if opened.publishing:  # killed while publishing: finish that
        try:
            manifest = out.finish()
        except KeyboardInterrupt:  # every row is written: the next resume finishes again
            written = opened.written
            rows = sum(r.rows for r in consistent(written)) + sum(
                r.rows for r in written if r.ranges is None
            )
            raise interrupted(rows, rows_total) from None
        _published(published)
        return StagedOutcome(manifest, manifest.rows_out, 0)
    earlier = consistent(opened.written)
    done = Progress(r for record in earlier for r in record.ranges or [])
    if opened.resumed:
        log.warning(
            "bulkinfer: resuming %s: %s rows already written", out.location, f"{done.rows:,}"
        )
    # Rows written earlier passed every stage: they count in every stage's totals.
    base = {
        step.key: {"rows_in": done.rows, "rows_out": done.rows, "skipped": 0, "dead_letter": 0}
        for step in plan.maps
    }
    run_id = new_run_id()  # this run's: a resumed job's record keeps its first run's id
    mode = plan.run.progress if ledger is not None else "off"
    line = ProgressLine(mode, ledger_poll(ledger), rows_total, done.rows)
    manifest = None
    try:
        if ledger is not None:
            ray.get(ledger.reset.remote(base))
        line.start()
        try:
            assert out.job is not None, "the output is open"
            stats = execute(done, out.job.run_id, run_id)
        finally:
            line.stop_drawing()
        drained = (
            ray.get(ledger.drain.remote())
            if ledger is not None
            else {"stages": {}, "records": [], "first_error": {}}
        )
        counts: dict[str, dict[str, Any]] = {}
        add_counts(counts, base)
        add_counts(counts, drained["stages"])
        check_error_limits(plan, counts, drained["first_error"], min_rows=0)
        mine = [r for r in out.written() if r.run_id == run_id]
        written = [*earlier, *consistent(mine, run_id)]
        line.finish(
            sum(r.rows for r in written) - done.rows,
            sum(c["skipped"] + c["dead_letter"] for c in drained["stages"].values()),
            progress_amounts(drained["stages"]),
        )
        if len(consistent(written, run_id)) != len(written):
            raise OutputError(
                "two write tasks recorded some of the same input rows; nothing was published",
                key=out.key,
            )
        totals = _totals(plan, counts, written)
        if not plan.run.allow_empty and not totals.rows_in and not totals.rows_out:
            raise EmptyInputError.for_source(_where(plan))
        dead = dead_letter_lines(drained["records"])
        manifest = _storing(out, lambda: out.publish(written, totals, dead))
    except KeyboardInterrupt:
        if manifest is not None:  # published: the job is done, there is nothing to resume
            raise
        line.stop()
        kept = _kept(out, run_id)
        raise interrupted(kept[0] if kept else 0, rows_total, kept is not None) from None
    except BaseException as exc:
        line.stop()
        kept = _kept(out, run_id, drop=isinstance(exc, EmptyInputError))
        if kept is not None and isinstance(exc, BulkInferError):
            raise _with_hint(exc, out, *kept) from None
        raise
    _published(published)
    return StagedOutcome(manifest, done.rows, totals.rows_out - done.rows, stats, counts)


def _published(callback: Callable[[], None] | None) -> None:
    """The output is published: tell ``callback`` (the command line stops treating Ctrl-C as
    an interrupt), then the test-only halt point ``published``."""
    if callback is not None:
        callback()
    halt("published")


def _kept(out: StagedOutput, run_id: str, drop: bool = False) -> tuple[int, int] | None:
    """After a stop or a failure: (rows the job's records hold, answers its stages' journals
    keep) for ``run.resume=true``; or None, with the staging removed, where there is neither
    (nothing written, nothing paid for: no trace, and no leftover work to refuse a plain rerun)
    or ``drop`` says so."""
    rows = sum(r.rows for r in consistent(_safely(out.written), run_id))
    answers = _answers_kept(out)
    if drop or not (rows or answers):
        _cleanly(out.remove)
        return None
    return rows, answers


def _safely(read: Callable[[], list[Written]]) -> list[Written]:
    try:
        return read()
    except Exception:  # noqa: BLE001 - only for the figures of a message
        return []


def _totals(plan: Plan, counts: dict[str, dict[str, Any]], written: list[Written]) -> Totals:
    """The job's row counts for the manifest (see the module docstring)."""
    stages = {key: {k: v for k, v in c.items()} for key, c in counts.items()}
    set_aside = {
        stage: {"skipped": c.get("skipped", 0), "dead_letter": c.get("dead_letter", 0)}
        for stage, c in stages.items()
        if c.get("skipped") or c.get("dead_letter")
    }
    rows_out = sum(r.rows for r in written)
    first = plan.maps[0].key if plan.maps else None
    rows_in = stages.get(first, {}).get("rows_in", 0) if first else rows_out
    return Totals(
        rows_in=rows_in,
        rows_out=rows_out,
        rows_set_aside=sum(c["skipped"] + c["dead_letter"] for c in set_aside.values()),
        set_aside=set_aside,
        stages=stages,
    )
