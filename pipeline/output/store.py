"""Job records and unit markers: the folder store, and the checks a resumed job goes through.

Every staged job (a file sink's, a table sink's) keeps a *job record* (run id, config
fingerprint, data flow, work units, state) and one *marker* per committed work unit in a
:class:`~pipeline.contract.sink.JobStore`. :class:`FolderStore` keeps them as JSON files in a folder
of any pyarrow filesystem (``job.json``, ``units/<unit>.json``); file sinks use it (through
:class:`pipeline.output.staging.Staging`) and so do table sinks whose target names a
:class:`~pipeline.contract.sink.StoreFolder`. :func:`check_record` and :func:`check_units` refuse
what ``run.resume`` does not allow, whatever the store (:class:`JobStore`). Nothing here imports
Ray.
"""

from __future__ import annotations

import json
import logging
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

from pipeline.contract.errors import ConfigError, DataError
from pipeline.contract.secrets import mask_secrets
from pipeline.contract.sink import JobStore
from pipeline.contract.source import WorkUnit
from pipeline.output.records import (
    JobRecord,
    Written,
    config_changes,
    recorded_rows,
    unit_digest,
)

log = logging.getLogger("bulkinfer")

JOB_FILE = "job.json"


@dataclass
class Opened:
    """A job's store, opened: the parts earlier runs wrote, and what the last one was doing."""

    written: list[Written]
    resumed: bool
    #: The earlier run was killed while publishing: finish that, run nothing.
    publishing: bool = False


def start_over(store: Any, named: bool = True) -> str:
    """How a user drops a store's leftovers, e.g. ``delete /out.__bulkinfer_staging``."""
    how = getattr(store, "start_over", None)
    return how(named) if callable(how) else f"delete {store.location}"


def check_record(
    store: JobStore, job: JobRecord, fingerprint: str, dataflow: dict[str, Any], resume: bool
) -> None:
    """Refuse to run over an unfinished job's record without ``run.resume``, or to resume it
    with another config (the message lists what changed)."""
    if not resume:
        raise DataError(
            f"an unfinished run of this job left its work in {store.location} "
            f"({recorded_rows(store.committed().values()):,} rows "
            "written). "
            f"Rerun with run.resume=true to finish it, or {start_over(store, False)} to start "
            "over.",
            key="run.resume",
        )
    if job.fingerprint != fingerprint:
        changes = config_changes(job.dataflow, mask_secrets(dataflow))
        listed = "; ".join(changes) if changes else "a masked (secret) value"
        raise ConfigError(
            f"cannot resume: the config changed since the interrupted run (config "
            f"fingerprint {job.fingerprint} -> {fingerprint}): {listed}. Rerun with "
            f"the original config, or {start_over(store)} to start over.",
            key=changes[0].split(":", 1)[0] if changes else "run.resume",
        )


def already_published(location: str, run_id: str, at: str) -> DataError:
    """The refusal of ``run.resume=true`` that finds nothing staged at ``location`` because this
    very job (its config and input) was published there, by run ``run_id`` at ``at``: a
    process killed after its publish, before it could say so. Running it again would append
    its rows twice, or replace them with the same."""
    return DataError(
        f"nothing to resume: {location} already holds this job's output (the same config and "
        f"input), published by run {run_id} at {at}; to run it again, leave run.resume out",
        key="run.resume",
    )


def check_units(store: JobStore, job: JobRecord, units: list[WorkUnit]) -> None:
    """Refuse to resume a job whose input was split into other work units."""
    now = [unit_digest(u) for u in units]
    if job.units != now:
        how = start_over(store)
        raise DataError(
            f"cannot resume: the input changed since the interrupted run (its work units "
            f"were {len(job.units)}, now {len(now)}; files or sizes differ, or "
            f"run.unit_rows/run.unit_bytes changed). {how[:1].upper()}{how[1:]} to start over.",
            key="source.params",
        )


class FolderStore:
    """A job record and unit markers as JSON files in a folder of a pyarrow filesystem::

        <root>/job.json            the job record
        <root>/units/<unit>.json   a committed unit's marker

    Each file is written under a temporary name and renamed, so it is complete or absent.
    """

    def __init__(self, filesystem: Any, root: str, location: str | None = None) -> None:
        self.fs = filesystem
        self.root = root
        self.location = location or root
        self.job: dict[str, Any] = {}

    def start_over(self, named: bool = True) -> str:
        return f"delete {self.root}" if named else "delete that folder"

    # -- small file-system helpers --
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def has(self, path: str) -> bool:
        import pyarrow.fs

        return self.fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def is_dir(self, path: str) -> bool:
        import pyarrow.fs

        return self.fs.get_file_info(path).type == pyarrow.fs.FileType.Directory

    def read_json(self, path: str) -> Any:
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a small file atomically: a temporary name, then a rename."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def write_json(self, path: str, value: Any) -> None:
        self.write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n")

    def entries(self, path: str, kind: str | None = None) -> list[Any]:
        """Entries of a folder (none if it is missing); ``kind``: only "File" or "Directory"."""
        import pyarrow.fs

        if not self.is_dir(path):
            return []
        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=False))
        if kind is not None:
            infos = [i for i in infos if i.type == getattr(pyarrow.fs.FileType, kind)]
        return sorted(infos, key=lambda i: i.path)

    def delete(self, path: str) -> None:
        import pyarrow.fs

        info = self.fs.get_file_info(path)
        if info.type == pyarrow.fs.FileType.Directory:
            self.fs.delete_dir(path)
        elif info.type != pyarrow.fs.FileType.NotFound:
            self.fs.delete_file(path)

    # -- the job record --
    def exists(self) -> bool:
        return self.has(self.root)

    def load(self) -> dict[str, Any] | None:
        path = self.path(JOB_FILE)
        self.job = self.read_json(path) if self.has(path) else {}
        return self.job or None

    def start(self, job: dict[str, Any]) -> None:
        self.fs.create_dir(self.root, recursive=True)
        self.delete(self.path("units"))
        self.job = job
        self.write_json(self.path(JOB_FILE), job)

    def save(self, job: dict[str, Any]) -> None:
        self.job = job
        self.write_json(self.path(JOB_FILE), job)

    def set_state(self, state: str) -> None:
        """Save the job record with ``state`` (raises RuntimeError if none was loaded)."""
        record = self.record
        if record is None:
            raise RuntimeError(f"{self.root} has no job record")
        record.state = state
        self.save(record.to_json())

    @property
    def record(self) -> JobRecord | None:
        """The job record last loaded or saved, typed (None: there is none)."""
        return JobRecord.from_json(self.job) if self.job else None

    def remove(self) -> None:
        self.delete(self.root)

    # -- unit markers --
    def committed(self) -> dict[str, dict[str, Any]]:
        """Markers of the committed units, by unit id."""
        markers = {}
        for info in self.entries(self.path("units"), "File"):
            if info.path.endswith(".json") and ".tmp-" not in info.path:
                marker = self.read_json(info.path)
                markers[marker["unit"]] = marker
        return markers

    def add_marker(self, marker: dict[str, Any]) -> None:
        self.fs.create_dir(self.path("units"), recursive=True)
        self.write_json(self.path("units", f"{marker['unit']}.json"), marker)
