"""Publishing a staged file output: the ``_SUCCESS`` manifest, output modes, resume checks.

When every row of a job is written in its staging folder (:mod:`pipeline.output.staging`),
the output is assembled and moved to its final path with a ``_SUCCESS`` manifest (``mode``: error,
overwrite, append). :func:`check` refuses, before any work, what ``mode`` and ``run.resume`` do not
allow; :func:`prepare` opens the staging folder of a new or a resumed run.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from typing import Any

from pipeline.contract.errors import DataError
from pipeline.contract.sink import FileOutput
from pipeline.contract.source import WorkUnit
from pipeline.output.halts import halt
from pipeline.output.records import FORMAT, JobRecord, Written, add_counts, now
from pipeline.output.staging import ERRORS_DIR, MANIFEST, Staging
from pipeline.output.store import check_record, check_units

log = logging.getLogger("bulkinfer")


def _assemble(
    staging: Staging, written: list[Written], totals: dict[str, Any], prefix: str
) -> dict[str, Any]:
    """Move the recorded parts' files (and the set-aside rows) into ``publish/``; return this
    run's part of the manifest."""
    publish = staging.path("publish")
    staging.fs.create_dir(publish, recursive=True)
    files, error_files = [], []
    for record in written:
        for f in record.written:
            name = f"{prefix}{f['name']}"
            src = staging.path("parts", f["name"])
            if staging.has(src):  # a resumed publish skips files already moved
                staging.fs.move(src, f"{publish}/{name}")
                halt("renaming")
            files.append({"path": name, "rows": int(f["rows"])})
    for info in staging.entries(staging.path("errors"), "File"):
        name = f"{ERRORS_DIR}/{prefix}{posixpath.basename(info.path)}"
        staging.fs.create_dir(f"{publish}/{ERRORS_DIR}", recursive=True)
        with staging.fs.open_input_stream(info.path) as f:
            rows = f.read().count(b"\n")
        staging.fs.move(info.path, f"{publish}/{name}")
        error_files.append({"path": name, "rows": rows})
    job = _record(staging)
    run = {
        "run_id": job.run_id,
        "fingerprint": job.fingerprint,
        "finished_at": now(),
        "parts": len(written),
        **totals,
    }
    return {"files": files, "error_files": error_files, "run": run}


def publish(staging: Staging, written: list[Written], totals: dict[str, Any]) -> dict[str, Any]:
    """Put the recorded output at its final path (per ``mode``) with its manifest.

    ``totals``: ``rows_in``, ``rows_out``, ``rows_set_aside``, ``set_aside`` and ``stages`` of
    the whole job, as the runner counted them.
    """
    job = _record(staging)
    dest = staging.out.path.rstrip("/")
    append = job.mode == "append" and staging.has(dest)
    prefix = f"{job.run_id}-" if append else ""
    part = _assemble(staging, written, totals, prefix)
    previous = None
    if append and staging.has(f"{dest}/{MANIFEST}"):
        previous = staging.read_json(f"{dest}/{MANIFEST}")
    manifest = build_manifest(job, part, previous)
    staging.write_json(staging.path("publish", MANIFEST), manifest)
    staging.set_state("publishing")
    halt("publishing")
    finish_publishing(staging)
    return manifest


def finish_publishing(staging: Staging) -> None:
    """The last, repeatable steps of :meth:`publish` (also run when resuming after a crash
    that happened between them): put ``publish/`` in place, then drop the staging folder."""
    mode = _record(staging).mode
    dest = staging.out.path.rstrip("/")
    publish = staging.path("publish")
    if staging.has(publish):
        if mode == "append" and staging.has(dest):
            for info in staging.entries(f"{publish}/{ERRORS_DIR}", "File"):
                staging.fs.create_dir(f"{dest}/{ERRORS_DIR}", recursive=True)
                staging.fs.move(info.path, f"{dest}/{ERRORS_DIR}/{posixpath.basename(info.path)}")
            for info in staging.entries(publish, "File"):
                name = posixpath.basename(info.path)
                if name != MANIFEST:
                    staging.fs.move(info.path, f"{dest}/{name}")
            # The manifest goes last: the output is complete once it names the new files.
            staging.fs.move(f"{publish}/{MANIFEST}", f"{dest}/{MANIFEST}")
        else:
            if staging.has(dest):
                if mode == "error":
                    raise DataError(
                        f"output appeared while the job ran: {staging.out.location}. The "
                        f"finished work is kept in {staging.root}; move the other output away "
                        "and rerun with run.resume=true.",
                        key="sink.params.path",
                    )
                staging.delete(staging.path("replaced"))
                staging.fs.move(dest, staging.path("replaced"))
            staging.fs.move(publish, dest)
    staging.remove()


def _record(staging: Staging) -> JobRecord:
    record = staging.record
    if record is None:  # pragma: no cover - publish runs only after the record was written
        raise RuntimeError(f"{staging.root} has no job record")
    return record


def build_manifest(
    job: JobRecord, part: dict[str, Any], previous: dict[str, Any] | None
) -> dict[str, Any]:
    """The ``_SUCCESS`` manifest: totals, files, fingerprint; appended runs add up."""
    runs = [r for r in (previous or {}).get("runs", []) if r.get("run_id") != job.run_id]
    old_files = [f for f in (previous or {}).get("files", []) if f not in part["files"]]
    old_errors = [
        f for f in (previous or {}).get("error_files", []) if f not in part["error_files"]
    ]
    runs.append(part["run"])
    set_aside: dict[str, dict[str, int]] = {}
    for run in runs:
        add_counts(set_aside, run.get("set_aside", {}))
    return {
        "format": FORMAT,
        "fingerprint": job.fingerprint,
        "location": job.location,
        "mode": job.mode,
        "rows_in": sum(r["rows_in"] for r in runs),
        "rows_out": sum(r["rows_out"] for r in runs),
        "rows_set_aside": sum(r["rows_set_aside"] for r in runs),
        "set_aside": set_aside,
        "files": old_files + part["files"],
        "error_files": old_errors + part["error_files"],
        "runs": runs,
    }


def job_record(
    out: FileOutput, fingerprint: str, dataflow: dict[str, Any], units: list[WorkUnit]
) -> JobRecord:
    """What ``job.json`` holds for a new run."""
    return JobRecord.new(fingerprint, dataflow, units, out.mode, out.location)


@dataclass
class Prepared:
    """The staging folder to run in and the parts already written there."""

    staging: Staging
    written: list[Written]
    resumed: bool


def check(out: FileOutput, fingerprint: str, dataflow: dict[str, Any], resume: bool) -> Staging:
    """Refuse what ``mode`` and ``run.resume`` do not allow, given what is on disk.

    Cheap (no Ray, no input listing), so the command line runs it before Ray starts.
    Returns the staging folder with its job record loaded (``job`` empty if there is none).
    """
    staging = Staging(out)
    if staging.exists() and staging.load() is not None:
        check_record(staging, _record(staging), fingerprint, dataflow, resume)
        return staging
    dest = out.path.rstrip("/")
    if out.mode == "error" and staging.has(dest):
        raise DataError(
            f"output already exists: {out.location}. Choose another path, or set "
            "sink.params.mode=overwrite (replace it when the job succeeds) or append.",
            key="sink.params.path",
        )
    if out.mode == "append" and staging.has(dest) and not staging.has(f"{dest}/{MANIFEST}"):
        raise DataError(
            f"cannot append to {out.location}: it has no {MANIFEST} manifest, so it is not a "
            "finished bulkinfer output. Choose another path or set sink.params.mode=overwrite.",
            key="sink.params.mode",
        )
    return staging


def prepare(
    out: FileOutput,
    fingerprint: str,
    dataflow: dict[str, Any],
    units: list[WorkUnit],
    resume: bool,
) -> Prepared:
    """:func:`check`, then open the staging folder: a new one, or the one being resumed (its
    recorded parts kept; files no record names are left over from tasks that were stopped)."""
    staging = check(out, fingerprint, dataflow, resume)
    record = staging.record
    if record is not None:
        if record.state == "publishing":
            return Prepared(staging, staging.written(), resumed=True)
        check_units(staging, record, units)
        return Prepared(staging, staging.written(), resumed=True)
    if staging.exists():  # killed before its job record was written: nothing to keep
        staging.remove()
    if resume:
        log.warning("bulkinfer: nothing to resume at %s; starting the job", out.location)
    staging.start(job_record(out, fingerprint, dataflow, units).to_json())
    return Prepared(staging, [], resumed=False)
