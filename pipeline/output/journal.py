"""A stage's journal (:class:`~pipeline.contract.journal.Journal`) as files in the staging folder.

Layout, beside the job's other staging files::

    <staging>/journal/<stage>/<worker>.jsonl    one file per worker process of each run
                                                (on a filesystem without appends: one file
                                                per value, <worker>-<n>.jsonl)

Each line is ``{"k": key, "v": value}``. A worker appends to its own file only, so workers never
share a file; on a local filesystem every :meth:`FolderJournal.put` is one ``write`` of one whole
line before it returns, so a killed process loses nothing it put, and a line cut short by a
machine's crash is skipped when read. Elsewhere (object stores, which cannot append) each value is
a small file of its own. A worker reads every file of the folder once, when it first looks a key
up: what earlier runs and earlier workers put. The staging folder, and the journal with it, is
deleted when the output is published.

Nothing here imports Ray; pyarrow filesystems pickle, so the journal travels to the workers as
the stage's service and opens its file there.
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading
import uuid
from collections import deque
from typing import Any

log = logging.getLogger("bulkinfer")

JOURNAL_DIR = "journal"


def stage_folder(stage_key: str) -> str:
    """A folder name for a stage key: ``preprocessors[0]`` -> ``preprocessors_0``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stage_key).strip("_")


class FolderJournal:
    """The journal of one stage in ``root`` on the pyarrow ``filesystem`` (see the module
    docstring). ``get``, ``take`` and ``put`` are thread-safe."""

    def __init__(self, filesystem: Any, root: str) -> None:
        self.fs = filesystem
        self.root = root
        self._lock = threading.Lock()
        self._values: dict[str, Any] | None = None  # read on first use
        self._earlier: dict[str, deque[Any]] = {}  # what earlier runs put, each handed out once
        self._stream: Any = None
        self._name = uuid.uuid4().hex[:12]
        self._count = 0

    def __getstate__(self) -> dict[str, Any]:  # a fresh worker: nothing read, no file open
        return {"fs": self.fs, "root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["fs"], state["root"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"FolderJournal({self.root!r})"

    # -- reading --------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        if self._values is None:
            self._values = {}
            for key, value in self._lines():
                self._values[key] = value
                self._earlier.setdefault(key, deque()).append(value)
        return self._values

    def _lines(self) -> list[tuple[str, Any]]:
        import pyarrow.fs

        info = self.fs.get_file_info(self.root)
        if info.type != pyarrow.fs.FileType.Directory:
            return []
        found = self.fs.get_file_info(pyarrow.fs.FileSelector(self.root, recursive=False))
        lines: list[tuple[str, Any]] = []
        for entry in sorted(found, key=lambda i: i.path):
            if entry.type != pyarrow.fs.FileType.File or not entry.path.endswith(".jsonl"):
                continue
            with self.fs.open_input_stream(entry.path) as f:
                text = f.read().decode("utf-8", errors="replace")
            for line in text.split("\n"):
                try:
                    item = json.loads(line)
                    lines.append((item["k"], item["v"]))
                except (ValueError, KeyError, TypeError):
                    continue  # an empty line, or one cut short by a crash
        return lines

    def __len__(self) -> int:
        with self._lock:
            return len(self._read())

    def get(self, key: str) -> Any | None:
        with self._lock:
            return self._read().get(key)

    def take(self, key: str) -> Any | None:
        with self._lock:
            self._read()
            queue = self._earlier.get(key)
            if not queue:
                return None
            value = queue.popleft()
            if not queue:
                del self._earlier[key]
            return value

    # -- writing --------------------------------------------------------------------------

    def put(self, key: str, value: Any) -> None:
        line = json.dumps({"k": key, "v": value}, ensure_ascii=False, separators=(",", ":"))
        data = (line + "\n").encode()
        with self._lock:
            self._read()[key] = value
            self._write(data)

    def _write(self, data: bytes) -> None:
        import pyarrow.fs

        if isinstance(self.fs, pyarrow.fs.LocalFileSystem):
            if self._stream is None:
                self.fs.create_dir(self.root, recursive=True)
                path = posixpath.join(self.root, f"{self._name}.jsonl")
                self._stream = self.fs.open_append_stream(path)
            self._stream.write(data)  # unbuffered: one write(2) of the whole line
            self._stream.flush()
            return
        self._count += 1
        path = posixpath.join(self.root, f"{self._name}-{self._count:08d}.jsonl")
        with self.fs.open_output_stream(path) as f:
            f.write(data)

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None


def journal_for(store: Any, stage_key: str) -> FolderJournal | None:
    """The journal of ``stage_key`` in a job store that is a folder (a file sink's staging, a
    table sink's store folder), or None for a store that is not (a database table)."""
    from pipeline.output.store import FolderStore

    if not isinstance(store, FolderStore):
        return None
    return FolderJournal(store.fs, store.path(JOURNAL_DIR, stage_folder(stage_key)))


def journal_entries(store: Any) -> int:
    """How many results the journals in a job store hold (lines of every stage's files; 0 for
    a store that is not a folder)."""
    from pipeline.output.store import FolderStore

    if not isinstance(store, FolderStore):
        return 0
    count = 0
    for stage in store.entries(store.path(JOURNAL_DIR), "Directory"):
        for entry in store.entries(stage.path, "File"):
            if entry.path.endswith(".jsonl"):
                with store.fs.open_input_stream(entry.path) as f:
                    count += f.read().count(b"\n")
    return count
