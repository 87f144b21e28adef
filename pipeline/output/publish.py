"""Publishing a staged file output: the ``_SUCCESS`` manifest, output modes, resume checks.

When every work unit of a job is committed in its staging folder (:mod:`pipeline.output.staging`),
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
from pipeline.output.records import FORMAT, add_counts, new_record, now
from pipeline.output.staging import ERRORS_DIR, MANIFEST, Staging
from pipeline.output.store import check_record, check_units

log = logging.getLogger("bulkinfer")


def _assemble(staging: Staging, markers: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """Move every committed unit's files into ``publish/``; return the run's manifest."""
    publish = staging._p("publish")
    staging.fs.create_dir(publish, recursive=True)
    files, error_files = [], []
    for marker in markers:
        unit_dir = staging._p("units", marker["unit"])
        for f in marker["files"]:
            name = f"{prefix}{marker['unit']}-{f['name']}"
            src = f"{unit_dir}/data/{f['name']}"
            if staging._exists(src):  # a resumed publish skips files already moved
                staging.fs.move(src, f"{publish}/{name}")
            files.append({"path": name, "rows": f["rows"]})
        if marker["dead_letters"]:
            name = f"{ERRORS_DIR}/{prefix}{marker['unit']}.jsonl"
            staging.fs.create_dir(f"{publish}/{ERRORS_DIR}", recursive=True)
            if staging._exists(f"{unit_dir}/errors.jsonl"):
                staging.fs.move(f"{unit_dir}/errors.jsonl", f"{publish}/{name}")
            error_files.append({"path": name, "rows": marker["dead_letters"]})
    stages: dict[str, dict[str, int]] = {}
    set_aside: dict[str, dict[str, int]] = {}
    for marker in markers:
        add_counts(stages, marker["stages"])
        add_counts(set_aside, marker["set_aside"])
    run = {
        "run_id": staging.job["run_id"],
        "fingerprint": staging.job["fingerprint"],
        "finished_at": now(),
        "units": len(markers),
        "rows_in": sum(m["rows_in"] for m in markers),
        "rows_out": sum(m["rows_out"] for m in markers),
        "rows_set_aside": sum(m["rows_set_aside"] for m in markers),
        "set_aside": set_aside,
        "stages": stages,
    }
    return {"files": files, "error_files": error_files, "run": run}


def publish(staging: Staging, markers: list[dict[str, Any]]) -> dict[str, Any]:
    """Put the committed output at its final path (per ``mode``) with its manifest."""
    mode = staging.job["mode"]
    dest = staging.out.path.rstrip("/")
    append = mode == "append" and staging._exists(dest)
    prefix = f"{staging.job['run_id']}-" if append else ""
    part = _assemble(staging, markers, prefix)
    previous = None
    if append and staging._exists(f"{dest}/{MANIFEST}"):
        previous = staging._read_json(f"{dest}/{MANIFEST}")
    manifest = build_manifest(staging.job, part, previous)
    staging._write_json(staging._p("publish", MANIFEST), manifest)
    staging.set_state("publishing")
    finish_publishing(staging)
    return manifest


def finish_publishing(staging: Staging) -> None:
    """The last, repeatable steps of :meth:`publish` (also run when resuming after a crash
    that happened between them): put ``publish/`` in place, then drop the staging folder."""
    mode = staging.job["mode"]
    dest = staging.out.path.rstrip("/")
    publish = staging._p("publish")
    if staging._exists(publish):
        if mode == "append" and staging._exists(dest):
            for info in staging._list(f"{publish}/{ERRORS_DIR}", "File"):
                staging.fs.create_dir(f"{dest}/{ERRORS_DIR}", recursive=True)
                staging.fs.move(info.path, f"{dest}/{ERRORS_DIR}/{posixpath.basename(info.path)}")
            for info in staging._list(publish, "File"):
                name = posixpath.basename(info.path)
                if name != MANIFEST:
                    staging.fs.move(info.path, f"{dest}/{name}")
            # The manifest goes last: the output is complete once it names the new files.
            staging.fs.move(f"{publish}/{MANIFEST}", f"{dest}/{MANIFEST}")
        else:
            if staging._exists(dest):
                if mode == "error":
                    raise DataError(
                        f"output appeared while the job ran: {staging.out.location}. The "
                        f"finished work is kept in {staging.root}; move the other output away "
                        "and rerun with run.resume=true.",
                        key="sink.params.path",
                    )
                staging._delete(staging._p("replaced"))
                staging.fs.move(dest, staging._p("replaced"))
            staging.fs.move(publish, dest)
    staging.remove()


def build_manifest(
    job: dict[str, Any], part: dict[str, Any], previous: dict[str, Any] | None
) -> dict[str, Any]:
    """The ``_SUCCESS`` manifest: totals, files, fingerprint; appended runs add up."""
    runs = [r for r in (previous or {}).get("runs", []) if r.get("run_id") != job["run_id"]]
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
        "fingerprint": job["fingerprint"],
        "location": job["location"],
        "mode": job["mode"],
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
) -> dict[str, Any]:
    """What ``job.json`` holds for a new run."""
    return new_record(fingerprint, dataflow, units, out.mode, out.location)


@dataclass
class Prepared:
    """The staging folder to run in and the units already committed there."""

    staging: Staging
    committed: dict[str, dict[str, Any]]
    resumed: bool


def check(out: FileOutput, fingerprint: str, dataflow: dict[str, Any], resume: bool) -> Staging:
    """Refuse what ``mode`` and ``run.resume`` do not allow, given what is on disk.

    Cheap (no Ray, no input listing), so the command line runs it before Ray starts.
    Returns the staging folder with its job record loaded (``job`` empty if there is none).
    """
    staging = Staging(out)
    if staging.exists() and staging.load() is not None:
        check_record(staging, staging.job, fingerprint, dataflow, resume)
        return staging
    dest = out.path.rstrip("/")
    if out.mode == "error" and staging._exists(dest):
        raise DataError(
            f"output already exists: {out.location}. Choose another path, or set "
            "sink.params.mode=overwrite (replace it when the job succeeds) or append.",
            key="sink.params.path",
        )
    if out.mode == "append" and staging._exists(dest) and not staging._exists(f"{dest}/{MANIFEST}"):
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
    """:func:`check`, then open the staging folder: a new one, or the one being resumed."""
    staging = check(out, fingerprint, dataflow, resume)
    if staging.job:
        done = staging.committed()
        if staging.job.get("state") == "publishing":
            return Prepared(staging, done, resumed=True)
        check_units(staging, staging.job, units)
        staging.discard_uncommitted({u.id for u in units})
        return Prepared(staging, staging.committed(), resumed=True)
    if staging.exists():  # killed before its job record was written: nothing to keep
        staging.remove()
    if resume:
        log.warning("bulkinfer: nothing to resume at %s; starting the job", out.location)
    staging.start(job_record(out, fingerprint, dataflow, units))
    return Prepared(staging, {}, resumed=False)
