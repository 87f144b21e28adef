"""The job's ledger: rows, set-aside rows and counters per stage, and run-time notes.

Every batch of every map stage is reported to one :class:`Ledger` actor by the stage's guard
(:mod:`pipeline.execute.guard`): rows in, rows out, the rows set aside and the stage's counters.
Reports are keyed by the Ray Data task and the batch's position in it, so a task that Ray retries (a
worker died) replaces its earlier report instead of counting twice. The driver reads the ledger
after each work unit; the ledger also stops the job early once a stage is over its error limit.
Write tasks report the rows they recorded (:meth:`Ledger.written`), for the job's progress line
(:mod:`pipeline.execute.progress_line`).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.contract.errors import BulkInferError
from pipeline.output.progress import Progress
from pipeline.output.records import add_counts

#: A stage is stopped early (before the end of a work unit) only after it has seen this many rows,
#: so a few bad rows at the start do not fail a job whose overall error rate is within its limit.
EARLY_STOP_MIN_ROWS = 1000


def error_limit_message(
    guard_key: str, name: str, rate: float, bad: int, rows: int, first: str
) -> str:
    """The message for a stage over its error limit."""
    return (
        f"stage '{name}' set aside {bad} of {rows} rows ({bad / max(rows, 1):.1%}), more than "
        f"max_error_rate={rate:g} allows. First error: {first or 'unknown'}. Fix the data or the "
        f"stage, or raise {guard_key}.stage.max_error_rate."
    )


#: Stage counters (:meth:`pipeline.contract.stage.MapStage.counters`) are kept beside the row counts
#: under this prefix: ``counters.requests``.
COUNTER = "counters."


def _empty_counts() -> dict[str, int]:
    return {"rows_in": 0, "rows_out": 0, "skipped": 0, "dead_letter": 0}


def counters_of(counts: dict[str, float]) -> dict[str, float]:
    """A stage's counters (names without the prefix) from its counts."""
    return {k[len(COUNTER) :]: v for k, v in counts.items() if k.startswith(COUNTER)}


class Ledger:
    """Rows in/out and set-aside rows per stage for the work unit being run (a Ray actor), and
    the decisions stages made at run time (notes), for the whole job.

    Reports are keyed by batch (see :func:`pipeline.execute.guard.batch_key`): a retried task
    replaces its reports. ``limits`` maps stage key -> (plugin name, max_error_rate) for stages
    that set rows aside.
    """

    def __init__(self, limits: dict[str, tuple[str, float]]) -> None:
        self.limits = limits
        self.job_notes: list[str] = []
        # This run's written rows: by row id (a task Ray ran twice counts once), and the rows
        # of records without ids, by record.
        self.written_ids = Progress()
        self.written_other: dict[str, int] = {}
        self.reset({})

    def note(self, message: str) -> None:
        """A decision a worker made at run time (``batch_size: auto``, out-of-memory halving)."""
        if message not in self.job_notes:
            self.job_notes.append(message)

    def notes(self) -> list[str]:
        """The job's notes, in the order they first arrived."""
        return self.job_notes

    def reset(self, base: dict[str, dict[str, int]]) -> None:
        """Start a new unit; ``base`` holds the counts of the units already committed."""
        self.error: BulkInferError | None = None
        self.base = base
        self.batches: dict[str, tuple[Any, ...]] = {}
        self.totals: dict[str, dict[str, int]] = {}
        self.first_error: dict[str, str] = {}

    def _apply(
        self,
        stage: str,
        rows_in: int,
        rows_out: int,
        records: list,
        counters: dict[str, float],
        sign: int,
    ) -> None:
        counts = self.totals.setdefault(stage, _empty_counts())
        counts["rows_in"] += sign * rows_in
        counts["rows_out"] += sign * rows_out
        for record in records:
            kind = "dead_letter" if "row" in record else "skipped"
            counts[kind] += sign
        for name, value in counters.items():
            counts[COUNTER + name] = counts.get(COUNTER + name, 0) + sign * value

    def record(
        self,
        key: str,
        stage: str,
        rows_in: int,
        rows_out: int,
        records: list[dict[str, Any]],
        counters: dict[str, float] | None = None,
    ) -> str | None:
        """Store one batch's report; return a message if the stage is now over its error limit."""
        old = self.batches.get(key)
        if old is not None:
            self._apply(*old, sign=-1)
        self.batches[key] = (stage, rows_in, rows_out, records, dict(counters or {}))
        self._apply(*self.batches[key], sign=+1)
        if records and stage not in self.first_error:
            self.first_error[stage] = records[0]["error"]
        if stage not in self.limits:
            return None
        return self.over_error_limit(stage, min_rows=EARLY_STOP_MIN_ROWS)

    def over_error_limit(self, stage: str, min_rows: int = 0) -> str | None:
        """A message if ``stage`` (committed units plus this one) is over its error limit."""
        counts: dict[str, dict[str, int]] = {}
        add_counts(counts, {stage: self.base.get(stage, _empty_counts())})
        add_counts(counts, {stage: self.totals.get(stage, _empty_counts())})
        return over_error_limit(self.limits, counts, self.first_error, stage, min_rows)

    def fail(self, error: BulkInferError) -> None:
        """Keep the first error that stopped a stage, for the driver to report."""
        if self.error is None:
            self.error = error

    def failure(self) -> BulkInferError | None:
        """The error a stage stopped the job with, if any."""
        return self.error

    def written(self, record: str, rows: int, ranges: list[list[int]] | None) -> None:
        """A write task recorded ``rows`` (the input rows ``ranges``, where the rows have ids)."""
        if ranges is None:
            self.written_other[record] = rows
            return
        fresh = Progress(ranges)
        if self.written_ids.overlaps(fresh.ranges):  # a retried task's rows: counted once
            fresh = Progress(r for r in fresh.ranges if not self.written_ids.overlaps([r]))
        self.written_ids.add(fresh.ranges)

    def progress(self) -> tuple[int, int, dict[str, float]]:
        """This run's rows written so far, the rows its stages set aside, and the stages'
        :data:`PROGRESS_COUNTERS` summed over the stages (those any stage reports)."""
        rows = self.written_ids.rows + sum(self.written_other.values())
        aside = sum(c["skipped"] + c["dead_letter"] for c in self.totals.values())
        return rows, aside, progress_amounts(self.totals)

    def drain(self) -> dict[str, Any]:
        """This unit's per-stage counts and dead-letter records (skipped rows are counted only)."""
        records = [r for batch in self.batches.values() for r in batch[3] if "row" in r]
        return {"stages": self.totals, "records": records, "first_error": self.first_error}


#: Stage counters the progress line shows as they grow (an LLM stage's tokens and cost).
PROGRESS_COUNTERS = ("prompt_tokens", "completion_tokens", "cost")


def progress_amounts(stages: dict[str, dict[str, Any]]) -> dict[str, float]:
    """:data:`PROGRESS_COUNTERS` summed over the stages' counts (those any stage reports)."""
    amounts: dict[str, float] = {}
    for counts in stages.values():
        for name in PROGRESS_COUNTERS:
            if COUNTER + name in counts:
                amounts[name] = amounts.get(name, 0.0) + counts[COUNTER + name]
    return amounts


def over_error_limit(
    limits: dict[str, tuple[str, float]],
    counts: dict[str, dict[str, int]],
    first_errors: dict[str, str],
    stage: str,
    min_rows: int = 0,
) -> str | None:
    """A message if ``stage`` set aside more than its limit of the rows it received.

    ``limits``: stage -> (plugin name, max_error_rate); no entry, no limit. Below ``min_rows``
    rows received, the stage is not judged yet.
    """
    if stage not in limits:
        return None
    name, rate = limits[stage]
    c = counts.get(stage, {})
    bad, rows = c.get("skipped", 0) + c.get("dead_letter", 0), c.get("rows_in", 0)
    if bad == 0 or rows < min_rows or bad <= rate * rows:
        return None
    return error_limit_message(stage, name, rate, bad, rows, first_errors.get(stage, ""))


def dead_letter_lines(records: list[dict[str, Any]]) -> bytes:
    """Dead-letter records as JSON lines (values JSON cannot hold are written as text)."""
    return b"".join(
        json.dumps(r, default=str, ensure_ascii=False).encode() + b"\n" for r in records
    )
