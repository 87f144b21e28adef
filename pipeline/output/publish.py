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
from pipeline.contract.halts import halt
from pipeline.contract.sink import FileOutput
from pipeline.contract.source import WorkUnit
from pipeline.output.records import (
    JobRecord,
    Manifest,
    ManifestRun,
    OutputFile,
    Totals,
    Written,
    input_digest,
    now,
    unit_digest,
)
from pipeline.output.staging import ERRORS_DIR, MANIFEST, Staging
from pipeline.output.store import already_published, check_record, check_units

log = logging.getLogger("bulkinfer")


@dataclass
class Assembled:
    """This run's part of the manifest: the files it publishes and its run entry."""

    files: list[OutputFile]
    error_files: list[OutputFile]
    run: ManifestRun


def _assemble(staging: Staging, written: list[Written], totals: Totals, prefix: str) -> Assembled:
    """Move the recorded parts' files (and the set-aside rows) into ``publish/``; return this
    run's part of the manifest."""
    publish = staging.path("publish")
    staging.fs.create_dir(publish, recursive=True)
    files: list[OutputFile] = []
    error_files: list[OutputFile] = []
    for record in written:
        for f in record.written:
            name = f"{prefix}{f['name']}"
            src = staging.path("parts", f["name"])
            if staging.has(src):  # a resumed publish skips files already moved
                staging.fs.move(src, f"{publish}/{name}")
                halt("renaming")
            files.append(OutputFile(name, int(f["rows"])))
    for info in staging.entries(staging.path("errors"), "File"):
        name = f"{ERRORS_DIR}/{prefix}{posixpath.basename(info.path)}"
        staging.fs.create_dir(f"{publish}/{ERRORS_DIR}", recursive=True)
        with staging.fs.open_input_stream(info.path) as f:
            rows = f.read().count(b"\n")
        staging.fs.move(info.path, f"{publish}/{name}")
        error_files.append(OutputFile(name, rows))
    job = _record(staging)
    run = ManifestRun(
        job.run_id, job.fingerprint, now(), len(written), totals, input_digest(job.units)
    )
    return Assembled(files, error_files, run)


def publish(staging: Staging, written: list[Written], totals: Totals) -> Manifest:
    """Put the recorded output at its final path (per ``mode``) with its manifest.

    ``totals``: the whole job's, as the runner counted them. Returns the manifest written as
    ``<output>/_SUCCESS``.
    """
    job = _record(staging)
    dest = staging.out.path.rstrip("/")
    append = job.mode == "append" and staging.has(dest)
    prefix = f"{job.run_id}-" if append else ""
    part = _assemble(staging, written, totals, prefix)
    previous = None
    if append and staging.has(f"{dest}/{MANIFEST}"):
        previous = Manifest.from_json(staging.read_json(f"{dest}/{MANIFEST}"))
    manifest = build_manifest(job, part, previous)
    staging.write_json(staging.path("publish", MANIFEST), manifest.to_json())
    staging.set_state("publishing")
    halt("publishing")
    finish_publishing(staging)
    return manifest


def read_manifest(staging: Staging) -> Manifest:
    """The manifest of the published output (raises FileNotFoundError if there is none)."""
    return Manifest.from_json(staging.read_json(f"{staging.out.path.rstrip('/')}/{MANIFEST}"))


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


def build_manifest(job: JobRecord, part: Assembled, previous: Manifest | None) -> Manifest:
    """The ``_SUCCESS`` manifest: totals, files, fingerprint; appended runs add up (a resumed
    publish replaces its own run's entry and files in ``previous``)."""
    runs = [r for r in previous.runs if r.run_id != job.run_id] if previous else []
    old_files = [f for f in previous.files if f not in part.files] if previous else []
    old_errors = [f for f in previous.error_files if f not in part.error_files] if previous else []
    return Manifest.of_runs(
        job, old_files + part.files, old_errors + part.error_files, [*runs, part.run]
    )


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
    if resume and _last_run(staging, fingerprint) is not None:
        return staging  # perhaps this very job, published: prepare() compares the input
    _refuse_by_mode(out, staging)
    return staging


def _last_run(staging: Staging, fingerprint: str) -> ManifestRun | None:
    """The last run of the published output at the destination, if one of config
    ``fingerprint`` made it."""
    try:
        runs = read_manifest(staging).runs
    except (FileNotFoundError, ValueError, KeyError, TypeError):  # none, or not bulkinfer's
        return None
    return runs[-1] if runs and runs[-1].fingerprint == fingerprint else None


def _refuse_by_mode(out: FileOutput, staging: Staging) -> None:
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


def _refuse_a_published_job(
    out: FileOutput, staging: Staging, fingerprint: str, units: list[WorkUnit]
) -> None:
    """``run.resume=true`` with nothing staged: refuse when the output's last run was this job,
    published (:func:`~pipeline.output.store.already_published`); else refuse what ``mode``
    refuses (:func:`check` left that to here)."""
    last = _last_run(staging, fingerprint)
    if last is not None and last.same_job(
        fingerprint, input_digest([unit_digest(u) for u in units])
    ):
        raise already_published(out.location, last.run_id, last.finished_at)
    _refuse_by_mode(out, staging)


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
        _refuse_a_published_job(out, staging, fingerprint, units)
        log.warning("bulkinfer: nothing to resume at %s; starting the job", out.location)
    staging.start(job_record(out, fingerprint, dataflow, units).to_json())
    return Prepared(staging, [], resumed=False)
