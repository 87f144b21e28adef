"""A table sink's job: its target's steps and job store, run by
:func:`pipeline.execute.units.run_units`.

A :class:`~pipeline.contract.sink.TableSink` names a :class:`~pipeline.contract.sink.StagedTarget`
(Lance, Iceberg, SQL). The job record and one marker per committed unit go into the target's job
store (a folder beside it, or tables in its database); the record keeps the target's state from
``begin`` and each marker the unit's receipt. When every unit is committed, the record's state
becomes ``publishing``, the target publishes every receipt in one commit, and the store is
dropped (a target may drop it inside its own commit, as the SQL target does). A run killed at any
point resumes: committed units are kept, the others discarded and redone, and a repeated
publish finds the commit it already made. Nothing here imports Ray.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.contract.reach import reach
from pipeline.contract.sink import JobStore, StagedTarget, StoreFolder
from pipeline.contract.source import WorkUnit
from pipeline.output.records import StagedJob, add_counts, new_record
from pipeline.output.store import FolderStore, Opened, check_record, check_units, start_over

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
    check_record(store, job, spec.fingerprint, spec.dataflow, spec.resume)
    return True


def summary(
    job: dict[str, Any], markers: list[dict[str, Any]], published: dict[str, Any]
) -> dict[str, Any]:
    """What a published table job reports (the file sinks' manifest, for a table)."""
    stages: dict[str, dict[str, int]] = {}
    set_aside: dict[str, dict[str, int]] = {}
    for marker in markers:
        add_counts(stages, marker["stages"])
        add_counts(set_aside, marker["set_aside"])
    return {
        "run_id": job["run_id"],
        "fingerprint": job["fingerprint"],
        "location": job["location"],
        "mode": job["mode"],
        "units": len(markers),
        "rows_in": sum(m["rows_in"] for m in markers),
        "rows_out": sum(m["rows_out"] for m in markers),
        "rows_set_aside": sum(m["rows_set_aside"] for m in markers),
        "set_aside": set_aside,
        "stages": stages,
        "published": published,
    }


class TableUnits:
    """A table sink's output for :func:`pipeline.execute.units.run_units` (see the module
    docstring): ``target`` written for the job ``spec`` with the columns of ``schema``."""

    def __init__(self, target: StagedTarget, spec: StagedJob, schema: Any) -> None:
        self.spec, self.target, self.schema = spec, target, schema
        self.location, self.key = target.location, target.key
        self.store = job_store(target)
        self.where = self.store.location
        self.job: dict[str, Any] = {}

    @property
    def state(self) -> dict[str, Any]:
        return self.job["target"]

    def open(self, units: list[WorkUnit]) -> Opened:
        spec = self.spec
        job = self.store.load()
        if job is not None:
            check_record(self.store, job, spec.fingerprint, spec.dataflow, spec.resume)
            self.job = job
            if job.get("state") == "publishing":
                return Opened(self.store.committed(), resumed=True, publishing=True)
            check_units(self.store, job, units)
            committed = self.store.committed()
            redo = [u.id for u in units if u.id not in committed]
            self.target.discard(self.state, redo, [])
            return Opened(committed, resumed=True)
        if spec.resume:
            log.warning("bulkinfer: nothing to resume at %s; starting the job", self.location)
        job = new_record(spec.fingerprint, spec.dataflow, units, spec.mode, self.location)
        job["target"] = self.target.begin(job["run_id"], self.schema)
        self.store.start(job)
        self.job = job
        return Opened({}, resumed=False)

    def begin(self, unit: WorkUnit) -> None:
        return None

    def commit(self, handle, written, stages, first_stage, dead_letters) -> dict[str, Any]:
        """The unit's marker (row counts and the target's receipt), written to the store."""
        set_aside = {
            stage: {"skipped": c["skipped"], "dead_letter": c["dead_letter"]}
            for stage, c in stages.items()
            if c["skipped"] or c["dead_letter"]
        }
        rows_out = int(written["rows"])
        marker = {
            "unit": written["unit"],
            "rows_in": stages.get(first_stage, {}).get("rows_in", 0) if first_stage else rows_out,
            "rows_out": rows_out,
            "rows_set_aside": sum(c["skipped"] + c["dead_letter"] for c in set_aside.values()),
            "set_aside": set_aside,
            "stages": stages,
            "receipt": written,
            "dead_letters": 0,
        }
        self.store.add_marker(marker)
        return marker

    def publish(self, markers: list[dict[str, Any]]) -> dict[str, Any]:
        self.job["state"] = "publishing"
        self.store.save(self.job)
        return self._publish(markers)

    def finish(self) -> dict[str, Any]:
        """Resumed in state ``publishing``: publish again (the target finds its commit)."""
        markers = sorted(self.store.committed().values(), key=lambda m: m["unit"])
        return self._publish(markers)

    def _publish(self, markers: list[dict[str, Any]]) -> dict[str, Any]:
        published = self.target.publish(self.state, [m["receipt"] for m in markers])
        self.store.remove()
        log.info(
            "bulkinfer: published %d rows into %s%s",
            published.get("rows", 0),
            self.location,
            " (already done by the interrupted run)" if published.get("already") else "",
        )
        return summary(self.job, markers, published)

    def drop(self, unit: WorkUnit, written: Any) -> None:
        """Discard what a unit that failed (or was not committed) staged."""
        if self.job:
            self.target.discard(self.state, [unit.id], [written] if written else [])

    def remove(self) -> None:
        """The job committed nothing: drop what it staged and its record."""
        if self.job:
            self.target.abandon(self.state)
        self.store.remove()

    def start_over(self) -> str:
        return start_over(self.store)
