"""The staging folder of a file output: the job record, the written parts and their records.

The runner writes the job's files into the staging folder beside the output
(``<output>.__bulkinfer_staging``); each write task records what it wrote as soon as it is
written (:mod:`pipeline.execute.writing`), and :mod:`pipeline.output.publish` publishes the
recorded parts. Layout::

    <output>.__bulkinfer_staging/
        job.json               fingerprint, config, work units, state (running | publishing)
        parts/<part>.<ext>     the files the write tasks wrote; only those a record names count
        units/w-<id>.json      one record per write task (:class:`~.records.Written`)
        errors/<run>.jsonl     the rows set aside by the run that publishes
        journal/<stage>/       results a stage keeps by request (:mod:`.journal`: LLM answers)
        publish/               the output being assembled, moved to <output> at the end

Every step is a rename or a write of a small file that is either complete or absent, and every
step can be repeated, so a run killed at any point can be resumed.
"""

from __future__ import annotations

import logging
import posixpath

from pipeline.contract.sink import FileOutput
from pipeline.output.records import Written
from pipeline.output.store import FolderStore

log = logging.getLogger("bulkinfer")

STAGING_SUFFIX = ".__bulkinfer_staging"
MANIFEST = "_SUCCESS"
ERRORS_DIR = "_errors"
__all__ = ["ERRORS_DIR", "MANIFEST", "STAGING_SUFFIX", "Staging"]


class Staging(FolderStore):
    """The staging folder of one output (see the module docstring); its job record and the
    records of written parts are a :class:`~pipeline.output.store.FolderStore`."""

    def __init__(self, out: FileOutput, root: str = "") -> None:
        self.out = out
        super().__init__(out.filesystem, root or out.path.rstrip("/") + STAGING_SUFFIX)

    @property
    def parts(self) -> str:
        """The folder the write tasks write their files into."""
        return self.path("parts")

    def written(self) -> list[Written]:
        """The records of the parts written so far, by id."""
        return [Written.from_json(m) for _, m in sorted(self.committed().items())]

    def part_files(self) -> set[str]:
        """Names of the files in :attr:`parts` (a crashed task's unrecorded ones among them)."""
        return {posixpath.basename(i.path) for i in self.entries(self.parts, "File")}

    def write_errors(self, run_id: str, lines: bytes) -> str | None:
        """Keep the rows this run set aside (dead letters, JSON lines) for the publish; drop
        any an earlier run left (its set-aside rows were read again in this run)."""
        self.delete(self.path("errors"))
        if not lines:
            return None
        path = self.path("errors", f"{run_id}.jsonl")
        self.fs.create_dir(self.path("errors"), recursive=True)
        self.write_bytes(path, lines)
        return path
