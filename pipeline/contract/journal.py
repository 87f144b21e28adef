"""A stage's journal: results kept in the job's staging area under a key of their request.

A stage that sets :attr:`~pipeline.contract.stage.MapStage.keeps_journal` gets one as
``services["journal"]``; the core makes it (:class:`pipeline.output.journal.FolderJournal`) in
the staging folder of the job's output, where a resumed run finds it, and deletes it with the
staging folder when the output is published. Values are JSON-serialisable (dicts of strings and
numbers); keys are strings, e.g. a digest of a request body.
"""

from __future__ import annotations

from typing import Any, Protocol


class Journal(Protocol):
    """Results by key, durable once :meth:`put` returns (process death loses none; a machine's
    crash may lose what the operating system had not yet written out). Safe to call from
    several threads of one worker; each worker of the stage has its own instance, and every
    worker sees what earlier runs (and earlier workers of this run) put when it first reads."""

    def get(self, key: str) -> Any | None:
        """The value put under ``key`` by this or an earlier run, or None."""

    def take(self, key: str) -> Any | None:
        """A value put under ``key`` by an earlier run, handed out once (for results that must
        not be shared by identical requests), or None."""

    def put(self, key: str, value: Any) -> None:
        """Keep ``value`` under ``key``."""
