"""The staging folder of a file output: the job record, unit folders and their commits.

The runner writes each work unit into the staging folder beside the output
(``<output>.__bulkinfer_staging``) and commits it there with its row counts;
:mod:`pipeline.output.publish` publishes the committed units. Layout::

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

import logging
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

from pipeline.contract.errors import OutputError
from pipeline.contract.sink import FileOutput
from pipeline.contract.source import WorkUnit
from pipeline.output.records import now
from pipeline.output.store import FolderStore

log = logging.getLogger("bulkinfer")

STAGING_SUFFIX = ".__bulkinfer_staging"
MANIFEST = "_SUCCESS"
#: A unit's receipt in its work folder: its write finished (files and row counts).
RECEIPT = "receipt.json"
ERRORS_DIR = "_errors"
__all__ = ["MANIFEST", "STAGING_SUFFIX", "Staging", "UnitWork"]


@dataclass
class UnitWork:
    """A unit being written: the sink writes ``data``; dead letters go to ``errors``."""

    unit: WorkUnit
    root: str
    data: str
    errors: str


class Staging(FolderStore):
    """The staging folder of one output (see the module docstring); its job record and unit
    markers are a :class:`~pipeline.output.store.FolderStore`."""

    def __init__(self, out: FileOutput, root: str = "") -> None:
        self.out = out
        super().__init__(out.filesystem, root or out.path.rstrip("/") + STAGING_SUFFIX)

    # -- units --
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
        marker = {**receipt, "committed_at": now()}
        unit = receipt["unit"]
        final = self._p("units", unit)
        self._delete(final)
        self.fs.create_dir(self._p("units"), recursive=True)
        self.fs.move(work.root, final)
        self.add_marker(marker)
        return marker
