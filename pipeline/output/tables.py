"""A table sink's job: its target's steps and job store, run by :mod:`pipeline.execute.staged`.

A :class:`~pipeline.contract.sink.TableSink` names a :class:`~pipeline.contract.sink.StagedTarget`
(Lance, Iceberg, SQL). The job record and one record per write task
(:class:`~pipeline.output.records.Written`, the parts it staged) go into the target's job store
(a folder beside it, or tables in its database); the job record keeps the target's state from
``begin``. When every row is written, the record's state becomes ``publishing``, the target
publishes every recorded part in one commit, and the store is dropped (a target may drop it
inside its own commit, as the SQL target does). A run killed at any point resumes: recorded
parts are kept, rows no record holds are read and staged again (parts no record names are never
published), and a repeated publish finds the commit it already made. Nothing here imports Ray.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.contract.halts import halt
from pipeline.contract.reach import reach
from pipeline.contract.sink import JOB_KEY, JobStore, StagedTarget, StoreFolder
from pipeline.contract.source import WorkUnit
from pipeline.output.records import (
    JobRecord,
    Receipt,
    StagedJob,
    Totals,
    UnitReceipt,
    Written,
    input_digest,
)
from pipeline.output.store import (
    FolderStore,
    Opened,
    already_published,
    check_record,
    check_units,
    start_over,
)

log = logging.getLogger("bulkinfer")


def job_store(target: StagedTarget) -> JobStore:
    """The target's job store (a :class:`StoreFolder` becomes the core's folder store)."""
    store = target.job_store()
    if isinstance(store, StoreFolder):
        return FolderStore(store.filesystem, store.path.rstrip("/"), store.location)
    return store


def check_table(target: StagedTarget, spec: StagedJob) -> bool:
    """Refuse an unfinished job's record without ``run.resume`` or with another config.

    Returns whether a record of this job is there to resume. Reads, creates nothing.
    """

    def load() -> tuple[JobStore, dict[str, Any] | None]:
        store = job_store(target)
        return store, store.load()

    store, job = reach(load, key=target.key, location=target.location)
    if job is None:
        return False
    check_record(store, JobRecord.from_json(job), spec.fingerprint, spec.dataflow, spec.resume)
    return True


def receipts(written: list[Written]) -> list[dict[str, Any]]:
    """The targets' receipts (:class:`~pipeline.output.records.UnitReceipt` as JSON,
    ``{"unit", "rows", "parts"}``) of the recorded writes."""
    return [UnitReceipt.of(w).to_json() for w in written]


class TableJob:
    """A table sink's staged output (see the module docstring): ``target`` written for the job
    ``spec`` with the columns of ``schema``; the job record and the records of the write
    tasks' parts in the target's job store."""

    def __init__(self, target: StagedTarget, spec: StagedJob, schema: Any) -> None:
        self.spec, self.target, self.schema = spec, target, schema
        self.location, self.key = target.location, target.key
        self.store = job_store(target)
        self.where = self.store.location
        self.job: JobRecord | None = None

    @property
    def state(self) -> dict[str, Any]:
        """What the target's ``begin`` returned (kept in the job record)."""
        assert self.job is not None, "the job is not open"
        return self.job.target

    def written(self) -> list[Written]:
        return [Written.from_json(m) for _, m in sorted(self.store.committed().items())]

    def open(self, units: list[WorkUnit]) -> Opened:
        """Start the job, or resume it (refused if its config or input changed)."""
        spec = self.spec
        stored = self.store.load()
        if stored is not None:
            job = JobRecord.from_json(stored)
            check_record(self.store, job, spec.fingerprint, spec.dataflow, spec.resume)
            self.job = job
            if job.state == "publishing":
                return Opened(self.written(), resumed=True, publishing=True)
            check_units(self.store, job, units)
            return Opened(self.written(), resumed=True)
        job = JobRecord.new(spec.fingerprint, spec.dataflow, units, spec.mode, self.location)
        named = f"{spec.fingerprint}:{input_digest(job.units)}"
        if spec.resume:
            self._refuse_a_published_job(named)
            log.warning("bulkinfer: nothing to resume at %s; starting the job", self.location)
        job.target = {**self.target.begin(job.run_id, self.schema), JOB_KEY: named}
        self.store.start(job.to_json())
        self.job = job
        return Opened([], resumed=False)

    def _refuse_a_published_job(self, named: str) -> None:
        """``run.resume=true`` with nothing staged: refuse when the target's last commit was
        this very job (:func:`~pipeline.output.store.already_published`; targets that keep it:
        :meth:`StagedTarget.last_job`)."""
        last = reach(self.target.last_job, key=self.key, location=self.location)
        if last is not None and last.get("job") == named:
            raise already_published(self.location, last.get("run_id", ""), last.get("at", ""))

    def publish(self, written: list[Written], totals: Totals, dead_letters: bytes) -> Receipt:
        """One commit makes every recorded part visible (table sinks keep no dead letters)."""
        assert self.job is not None, "the job is not open"
        self.job.state = "publishing"
        self.job.totals = totals
        self.store.save(self.job.to_json())
        halt("publishing")
        return self._publish(written)

    def finish(self) -> Receipt:
        """Resumed in state ``publishing``: publish again (the target finds its commit)."""
        return self._publish(self.written())

    def _publish(self, written: list[Written]) -> Receipt:
        assert self.job is not None, "the job is not open"
        receipt = Receipt.of(self.job, self.target.publish(self.state, receipts(written)))
        halt("committed")
        self.store.remove()
        log.info(
            "bulkinfer: published %d rows into %s%s",
            receipt.rows_published,
            self.location,
            " (already done by the interrupted run)" if receipt.already else "",
        )
        return receipt

    def remove(self) -> None:
        """The job wrote nothing: drop what it staged and its record."""
        if self.job is not None:
            self.target.abandon(self.state)
        self.store.remove()

    def start_over(self) -> str:
        return start_over(self.store)
