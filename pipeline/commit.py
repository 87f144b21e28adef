"""Atomic, resumable file output: a staging folder, unit commits, a manifest, output modes.

The runner writes each work unit into the staging folder beside the output
(``<output>.__bulkinfer_staging``) and commits it there; only when every unit is committed is the
output published at its final path with a ``_SUCCESS`` manifest. A crashed run leaves its
committed units in the staging folder, where ``run.resume=true`` finds them. Layout::

    <output>.__bulkinfer_staging/
        job.json               fingerprint, config, work units, state (running | publishing)
        work/<unit>-<token>/   a unit being written: discarded when a run resumes, unless
                               its receipt.json says its write finished (then committed)
        units/<unit>/          a unit's files (data/) and dead letters (errors.jsonl) ...
        units/<unit>.json      ... committed once this marker exists (row counts, files)
        publish/               the output being assembled, moved to <output> at the end

Every step is a rename or a write of a small file that is either complete or absent, and every
step can be repeated, so a run killed at any point can be resumed.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError, DataError, OutputError
from pipeline.guard import add_counts
from pipeline.interfaces import FileOutput, WorkUnit
from pipeline.secrets import mask_secrets

log = logging.getLogger("bulkinfer")

STAGING_SUFFIX = ".__bulkinfer_staging"
MANIFEST = "_SUCCESS"
#: A unit's receipt in its work folder: its write finished (files and row counts).
RECEIPT = "receipt.json"
ERRORS_DIR = "_errors"
FORMAT = "bulkinfer-manifest/1"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_leaves(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def config_changes(old: dict[str, Any], new: dict[str, Any], limit: int = 5) -> list[str]:
    """``key: old -> new`` for each leaf that differs between two data-flow configs."""
    a, b = _leaves(old), _leaves(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            changes.append(
                f"{key}: {json.dumps(a.get(key, '<unset>'))} -> {json.dumps(b.get(key, '<unset>'))}"
            )
    if len(changes) > limit:
        changes = changes[:limit] + [f"... and {len(changes) - limit} more"]
    return changes


def unit_digest(unit: WorkUnit) -> str:
    """What identifies a unit's input: its id and spec."""
    blob = json.dumps({"id": unit.id, "spec": unit.spec}, sort_keys=True, default=str)
    return f"{unit.id}:{hash_text(blob)}"


def hash_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class UnitWork:
    """A unit being written: the sink writes ``data``; dead letters go to ``errors``."""

    unit: WorkUnit
    root: str
    data: str
    errors: str


@dataclass
class Staging:
    """The staging folder of one output (see the module docstring)."""

    out: FileOutput
    root: str = ""
    job: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fs = self.out.filesystem
        self.root = self.root or self.out.path.rstrip("/") + STAGING_SUFFIX

    # -- small file-system helpers --
    def _p(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def _exists(self, path: str) -> bool:
        import pyarrow.fs

        return self.fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def _is_dir(self, path: str) -> bool:
        import pyarrow.fs

        return self.fs.get_file_info(path).type == pyarrow.fs.FileType.Directory

    def _read_json(self, path: str) -> Any:
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())

    def _write_bytes(self, path: str, data: bytes) -> None:
        """Write a small file atomically: a temporary name, then a rename."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def _write_json(self, path: str, value: Any) -> None:
        self._write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n")

    def _list(self, path: str, kind: str | None = None) -> list[Any]:
        """Entries of a folder (none if it is missing); ``kind``: only "File" or "Directory"."""
        import pyarrow.fs

        if not self._is_dir(path):
            return []
        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=False))
        if kind is not None:
            infos = [i for i in infos if i.type == getattr(pyarrow.fs.FileType, kind)]
        return sorted(infos, key=lambda i: i.path)

    def _delete(self, path: str) -> None:
        import pyarrow.fs

        info = self.fs.get_file_info(path)
        if info.type == pyarrow.fs.FileType.Directory:
            self.fs.delete_dir(path)
        elif info.type != pyarrow.fs.FileType.NotFound:
            self.fs.delete_file(path)

    # -- the job record --
    def exists(self) -> bool:
        return self._exists(self.root)

    def load(self) -> dict[str, Any] | None:
        path = self._p("job.json")
        self.job = self._read_json(path) if self._exists(path) else {}
        return self.job or None

    def start(self, job: dict[str, Any]) -> None:
        self.fs.create_dir(self.root, recursive=True)
        self.job = job
        self._write_json(self._p("job.json"), job)

    def set_state(self, state: str) -> None:
        self.job["state"] = state
        self._write_json(self._p("job.json"), self.job)

    def remove(self) -> None:
        self._delete(self.root)

    # -- units --
    def committed(self) -> dict[str, dict[str, Any]]:
        """Markers of the committed units, by unit id."""
        markers = {}
        for info in self._list(self._p("units")):
            if info.path.endswith(".json") and ".tmp-" not in info.path:
                marker = self._read_json(info.path)
                markers[marker["unit"]] = marker
        return markers

    def discard_uncommitted(self, unit_ids: set[str] | None = None) -> None:
        """Commit units whose write finished (a receipt) but whose commit did not; delete
        units being written and unit folders without a marker (a crash mid-commit)."""
        committed = self.committed()
        for info in self._list(self._p("work"), "Directory"):
            receipt_path = f"{info.path}/{RECEIPT}"
            if self._exists(receipt_path):
                receipt = self._read_json(receipt_path)
                unit = receipt["unit"]
                if unit not in committed and (unit_ids is None or unit in unit_ids):
                    work = UnitWork(WorkUnit(unit), info.path, f"{info.path}/data", "")
                    self._move_in(work, receipt)
                    log.info(
                        "bulkinfer: work unit %s was written before the crash: committed", unit
                    )
        self._delete(self._p("work"))
        committed = self.committed()
        for info in self._list(self._p("units"), "Directory"):
            if posixpath.basename(info.path) not in committed:
                self._delete(info.path)
        for info in self._list(self._p("units"), "File"):
            if ".tmp-" in posixpath.basename(info.path):
                self._delete(info.path)

    def begin(self, unit: WorkUnit) -> UnitWork:
        root = self._p("work", f"{unit.id}-{uuid.uuid4().hex[:8]}")
        self.fs.create_dir(root, recursive=True)
        return UnitWork(unit=unit, root=root, data=f"{root}/data", errors=f"{root}/errors.jsonl")

    def commit(
        self,
        work: UnitWork,
        stages: dict[str, dict[str, int]],
        first_stage: str | None,
        dead_letters: bytes,
        written: dict[str, int],
    ) -> dict[str, Any]:
        """Record the unit's receipt, move it under ``units/`` and write its marker (the commit).

        ``written`` maps each file the sink wrote to its rows, as the write tasks reported
        them; ``stages`` are the ledger's counts; rows in are those that entered
        ``first_stage`` (the first map stage), or the rows written when the job has no map
        stage. The receipt is written into the work folder first: a run that dies after it
        commits the unit when resumed, without running it again.
        """
        if not self._exists(work.data):
            self.fs.create_dir(work.data, recursive=True)  # an empty unit still commits
        present = sorted(
            posixpath.basename(i.path)
            for i in self._list(work.data, "File")
            if not posixpath.basename(i.path).startswith((".", "_"))
        )
        if present != sorted(written):
            raise OutputError(
                f"the files in {work.data} ({', '.join(present) or 'none'}) are not the files "
                f"the write tasks reported ({', '.join(sorted(written)) or 'none'})"
            )
        files = [{"name": name, "rows": written[name]} for name in present]
        if dead_letters:
            self._write_bytes(work.errors, dead_letters)
        rows_out = sum(f["rows"] for f in files)
        set_aside = {
            stage: {"skipped": c["skipped"], "dead_letter": c["dead_letter"]}
            for stage, c in stages.items()
            if c["skipped"] or c["dead_letter"]
        }
        marker = {
            "unit": work.unit.id,
            "rows_in": stages.get(first_stage, {}).get("rows_in", 0) if first_stage else rows_out,
            "rows_out": rows_out,
            "rows_set_aside": sum(c["skipped"] + c["dead_letter"] for c in set_aside.values()),
            "set_aside": set_aside,
            "stages": stages,
            "files": files,
            "dead_letters": dead_letters.count(b"\n"),
        }
        self._write_json(f"{work.root}/{RECEIPT}", marker)
        return self._move_in(work, marker)

    def _move_in(self, work: UnitWork, receipt: dict[str, Any]) -> dict[str, Any]:
        """Move a written unit under ``units/`` and write its marker: the unit is committed."""
        marker = {**receipt, "committed_at": _now()}
        unit = receipt["unit"]
        final = self._p("units", unit)
        self._delete(final)
        self.fs.create_dir(self._p("units"), recursive=True)
        self.fs.move(work.root, final)
        self._write_json(self._p("units", f"{unit}.json"), marker)
        return marker

    # -- publishing --
    def _assemble(self, markers: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
        """Move every committed unit's files into ``publish/``; return the run's manifest."""
        publish = self._p("publish")
        self.fs.create_dir(publish, recursive=True)
        files, error_files = [], []
        for marker in markers:
            unit_dir = self._p("units", marker["unit"])
            for f in marker["files"]:
                name = f"{prefix}{marker['unit']}-{f['name']}"
                src = f"{unit_dir}/data/{f['name']}"
                if self._exists(src):  # a resumed publish skips files already moved
                    self.fs.move(src, f"{publish}/{name}")
                files.append({"path": name, "rows": f["rows"]})
            if marker["dead_letters"]:
                name = f"{ERRORS_DIR}/{prefix}{marker['unit']}.jsonl"
                self.fs.create_dir(f"{publish}/{ERRORS_DIR}", recursive=True)
                if self._exists(f"{unit_dir}/errors.jsonl"):
                    self.fs.move(f"{unit_dir}/errors.jsonl", f"{publish}/{name}")
                error_files.append({"path": name, "rows": marker["dead_letters"]})
        stages: dict[str, dict[str, int]] = {}
        set_aside: dict[str, dict[str, int]] = {}
        for marker in markers:
            add_counts(stages, marker["stages"])
            add_counts(set_aside, marker["set_aside"])
        run = {
            "run_id": self.job["run_id"],
            "fingerprint": self.job["fingerprint"],
            "finished_at": _now(),
            "units": len(markers),
            "rows_in": sum(m["rows_in"] for m in markers),
            "rows_out": sum(m["rows_out"] for m in markers),
            "rows_set_aside": sum(m["rows_set_aside"] for m in markers),
            "set_aside": set_aside,
            "stages": stages,
        }
        return {"files": files, "error_files": error_files, "run": run}

    def publish(self, markers: list[dict[str, Any]]) -> dict[str, Any]:
        """Put the committed output at its final path (per ``mode``) with its manifest."""
        mode = self.job["mode"]
        dest = self.out.path.rstrip("/")
        append = mode == "append" and self._exists(dest)
        prefix = f"{self.job['run_id']}-" if append else ""
        part = self._assemble(markers, prefix)
        previous = None
        if append and self._exists(f"{dest}/{MANIFEST}"):
            previous = self._read_json(f"{dest}/{MANIFEST}")
        manifest = build_manifest(self.job, part, previous)
        self._write_json(self._p("publish", MANIFEST), manifest)
        self.set_state("publishing")
        self.finish_publishing()
        return manifest

    def finish_publishing(self) -> None:
        """The last, repeatable steps of :meth:`publish` (also run when resuming after a crash
        that happened between them): put ``publish/`` in place, then drop the staging folder."""
        mode = self.job["mode"]
        dest = self.out.path.rstrip("/")
        publish = self._p("publish")
        if self._exists(publish):
            if mode == "append" and self._exists(dest):
                for info in self._list(f"{publish}/{ERRORS_DIR}", "File"):
                    self.fs.create_dir(f"{dest}/{ERRORS_DIR}", recursive=True)
                    self.fs.move(info.path, f"{dest}/{ERRORS_DIR}/{posixpath.basename(info.path)}")
                for info in self._list(publish, "File"):
                    name = posixpath.basename(info.path)
                    if name != MANIFEST:
                        self.fs.move(info.path, f"{dest}/{name}")
                # The manifest goes last: the output is complete once it names the new files.
                self.fs.move(f"{publish}/{MANIFEST}", f"{dest}/{MANIFEST}")
            else:
                if self._exists(dest):
                    if mode == "error":
                        raise DataError(
                            f"output appeared while the job ran: {self.out.location}. The "
                            f"finished work is kept in {self.root}; move the other output away "
                            "and rerun with run.resume=true.",
                            key="sink.params.path",
                        )
                    self._delete(self._p("replaced"))
                    self.fs.move(dest, self._p("replaced"))
                self.fs.move(publish, dest)
        self.remove()


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
    return {
        "format": FORMAT,
        "run_id": _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        + f"-{uuid.uuid4().hex[:6]}",
        "fingerprint": fingerprint,
        "dataflow": mask_secrets(dataflow),
        "units": [unit_digest(u) for u in units],
        "mode": out.mode,
        "location": out.location,
        "state": "running",
        "started_at": _now(),
    }


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
        job = staging.job
        if not resume:
            raise DataError(
                f"an unfinished run of this job left its work in {staging.root} "
                f"({len(staging.committed())} of {len(job['units'])} work units committed). "
                "Rerun with run.resume=true to finish it, or delete that folder to start over.",
                key="run.resume",
            )
        if job["fingerprint"] != fingerprint:
            changes = config_changes(job.get("dataflow", {}), mask_secrets(dataflow))
            listed = "; ".join(changes) if changes else "a masked (secret) value"
            raise ConfigError(
                f"cannot resume: the config changed since the interrupted run (config "
                f"fingerprint {job['fingerprint']} -> {fingerprint}): {listed}. Rerun with "
                f"the original config, or delete {staging.root} to start over.",
                key=changes[0].split(":", 1)[0] if changes else "run.resume",
            )
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
        now = [unit_digest(u) for u in units]
        if staging.job["units"] != now:
            raise DataError(
                f"cannot resume: the input changed since the interrupted run (its work units "
                f"were {len(staging.job['units'])}, now {len(now)}; files or sizes differ, or "
                f"run.unit_rows/run.unit_bytes changed). Delete {staging.root} to start over.",
                key="source.params",
            )
        staging.discard_uncommitted({u.id for u in units})
        return Prepared(staging, staging.committed(), resumed=True)
    if staging.exists():  # killed before its job record was written: nothing to keep
        staging.remove()
    if resume:
        log.warning("bulkinfer: nothing to resume at %s; starting the job", out.location)
    staging.start(job_record(out, fingerprint, dataflow, units))
    return Prepared(staging, {}, resumed=False)
