"""The records of a staged job, and the digests and counts they hold.

A job record (:class:`JobRecord`: run id, config fingerprint, data flow, work units, state) is
written when a job starts; each write task adds a :class:`Written` record; a table target's
publish gets a :class:`UnitReceipt` per record. A published job ends in a :class:`Manifest` (a
file output's ``_SUCCESS``) or a :class:`Receipt` (a table output's), both holding the job's
:class:`Totals`. Each record is a dataclass with one JSON round trip (``to_json``,
``from_json``) that keeps the keys this bulkinfer does not know; no other module reads these
records' JSON by key. :func:`unit_digest` identifies a work unit's input, :func:`config_changes`
says what changed between two data flows, :func:`add_counts` adds a unit's row counts into a
total.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.contract.secrets import mask_secrets
from pipeline.contract.source import WorkUnit

FORMAT = "bulkinfer-manifest/1"


@dataclass(frozen=True)
class StagedJob:
    """What a staged output records of the job that writes it: the config ``fingerprint`` and
    ``dataflow`` (:mod:`pipeline.plan.fingerprints`), whether ``run.resume`` asks to finish an
    unfinished run, and the sink's ``mode`` (``error``, ``overwrite``, ``append``; "" if none)."""

    fingerprint: str
    dataflow: dict[str, Any]
    resume: bool
    mode: str = ""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """``20261126T041139-4c3881``: the start time (UTC) and a random suffix."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class JobRecord:
    """The job record of a staged output (``job.json``, or a table sink's job store): what runs
    into the output, kept from the job's start until its output is published. Stores hold it as
    JSON (:meth:`to_json`, :meth:`from_json`: one round trip; keys this bulkinfer does not know
    are kept as they were)."""

    run_id: str
    fingerprint: str
    #: The job's data flow with secrets masked (:func:`config_changes` compares two).
    dataflow: dict[str, Any]
    #: :func:`unit_digest` of each work unit, in order: a resumed run's input must match.
    units: list[str]
    mode: str
    location: str
    #: ``running``, then ``publishing`` once the publish began (a resumed run finishes it).
    state: str = "running"
    started_at: str = ""
    #: A table sink's target state (what its ``begin`` returned); None for file outputs.
    target: Any = None
    #: The job's totals, kept when its publish begins (table sinks).
    totals: Totals | None = None
    format: str = FORMAT
    #: Keys of the stored record this version does not know, written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        fingerprint: str,
        dataflow: dict[str, Any],
        units: list[WorkUnit],
        mode: str,
        location: str,
    ) -> JobRecord:
        """The record of a new run (secrets in the data flow masked)."""
        return cls(
            run_id=new_run_id(),
            fingerprint=fingerprint,
            dataflow=mask_secrets(dataflow),
            units=[unit_digest(u) for u in units],
            mode=mode,
            location=location,
            started_at=now(),
        )

    def to_json(self) -> dict[str, Any]:
        """The record as stores keep it (JSON-able; :meth:`from_json` reads it back)."""
        value = {
            "format": self.format,
            "run_id": self.run_id,
            "fingerprint": self.fingerprint,
            "dataflow": self.dataflow,
            "units": list(self.units),
            "mode": self.mode,
            "location": self.location,
            "state": self.state,
            "started_at": self.started_at,
            **self.extra,
        }
        if self.target is not None:
            value["target"] = self.target
        if self.totals is not None:
            value["totals"] = self.totals.to_json()
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> JobRecord:
        """The record :meth:`to_json` wrote (raises KeyError without ``run_id`` or
        ``fingerprint``)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            run_id=value["run_id"],
            fingerprint=value["fingerprint"],
            dataflow=value.get("dataflow", {}),
            units=list(value.get("units", [])),
            mode=value.get("mode", ""),
            location=value.get("location", ""),
            state=value.get("state", "running"),
            started_at=value.get("started_at", ""),
            target=value.get("target"),
            totals=Totals.from_json(value["totals"]) if value.get("totals") is not None else None,
            format=value.get("format", FORMAT),
            extra={k: v for k, v in value.items() if k not in known},
        )


def short_hash(text: str) -> str:
    """The first 16 hex digits of the SHA-256 of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def unit_digest(unit: WorkUnit) -> str:
    """What identifies a unit's input: its id and spec."""
    blob = json.dumps({"id": unit.id, "spec": unit.spec}, sort_keys=True, default=str)
    return f"{unit.id}:{short_hash(blob)}"


def input_digest(units: list[str]) -> str:
    """One digest of a job's input: of its units' :func:`unit_digest` values, in order."""
    return short_hash("\n".join(units))


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


def add_counts(into: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    """Add per-stage counts ``more`` into ``into``."""
    for stage, counts in more.items():
        total = into.setdefault(stage, {})
        for name, value in counts.items():
            total[name] = total.get(name, 0) + value


@dataclass(frozen=True)
class Written:
    """What one write task wrote, recorded once its output is durable: the journal of a staged
    job is these records, one per write task (a retried task's record replaces the first).

    ``part``: the name the task gave its output (file names start with it; a table target's
    staged rows carry it); ``rows``: rows written; ``ranges``: the ids of the input rows they
    hold (:mod:`pipeline.output.progress`), None where the source gives rows no ids (the record
    then counts only for a job that finishes in this run); ``written``: what the sink reports,
    JSON-able (a file sink: ``[{"name", "rows"}]``, a table target: its parts); ``run_id``:
    the run of the job that wrote it (each resume is a new run).
    """

    part: str
    rows: int
    ranges: list[list[int]] | None
    written: list[dict[str, Any]]
    run_id: str = ""

    @property
    def id(self) -> str:
        """The record's name: the same for every attempt at the same rows (a retried task)."""
        if self.ranges is None:
            return f"w-{self.part}"
        return f"w-{short_hash(json.dumps(self.ranges))}"

    def to_json(self) -> dict[str, Any]:
        """The record as the job store keeps it (its id under ``unit``, the stores' key)."""
        return {
            "unit": self.id,
            "part": self.part,
            "rows": self.rows,
            "ranges": self.ranges,
            "written": self.written,
            "run_id": self.run_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Written:
        """The record :meth:`to_json` wrote (raises KeyError without ``part``, ``rows``,
        ``ranges`` or ``written``)."""
        return cls(
            part=data["part"],
            rows=int(data["rows"]),
            ranges=data["ranges"],
            written=list(data["written"]),
            run_id=data.get("run_id", ""),
        )


def recorded_rows(records: Iterable[dict[str, Any]]) -> int:
    """The rows a job store's records (:meth:`Written.to_json`) hold; a record without
    ``rows`` (from an earlier bulkinfer) counts 0."""
    return sum(int(r.get("rows", 0)) for r in records)


def _unknown(value: dict[str, Any], known: set[str]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k not in known}


@dataclass
class Totals:
    """A job's row counts, as the runner counted them over every run of the job: ``rows_in``
    (into the first map stage), ``rows_out`` (written), ``rows_set_aside`` and, per stage key,
    ``set_aside`` (``{"skipped": n, "dead_letter": n}``, only stages that set rows aside) and
    ``stages`` (the ledger's counts). Held by a table job's record while it publishes, by each
    run of a :class:`Manifest` and by a :class:`Receipt`; in JSON, its keys sit beside theirs."""

    rows_in: int = 0
    rows_out: int = 0
    rows_set_aside: int = 0
    set_aside: dict[str, dict[str, int]] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Keys this bulkinfer does not know, written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)

    KEYS = frozenset({"rows_in", "rows_out", "rows_set_aside", "set_aside", "stages"})

    def to_json(self) -> dict[str, Any]:
        """``{"rows_in", "rows_out", "rows_set_aside", "set_aside", "stages", ...}``."""
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_set_aside": self.rows_set_aside,
            "set_aside": self.set_aside,
            "stages": self.stages,
            **self.extra,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Totals:
        """The totals :meth:`to_json` wrote; missing counts are 0."""
        return cls(
            rows_in=int(value.get("rows_in", 0)),
            rows_out=int(value.get("rows_out", 0)),
            rows_set_aside=int(value.get("rows_set_aside", 0)),
            set_aside=dict(value.get("set_aside", {})),
            stages=dict(value.get("stages", {})),
            extra=_unknown(value, set(cls.KEYS)),
        )


@dataclass
class UnitReceipt:
    """What a table target staged for one record (:class:`Written`) or unit: the receipt its
    ``write_unit`` returns and its ``publish`` gets, ``{"unit", "rows", "parts"}`` in JSON
    (see :class:`~pipeline.contract.sink.StagedTarget`; ``parts``: the target's own, JSON-able)."""

    unit: str
    rows: int
    parts: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, written: Written) -> UnitReceipt:
        """The receipt of a write task's record (its parts are what the target wrote)."""
        return cls(written.id, written.rows, written.written)

    def to_json(self) -> dict[str, Any]:
        """``{"unit": id, "rows": n, "parts": [...]}``, as targets take it."""
        return {"unit": self.unit, "rows": self.rows, "parts": self.parts, **self.extra}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> UnitReceipt:
        """A target's receipt (raises KeyError without ``parts``; ``unit`` and ``rows`` may
        be missing: "" and the parts' rows)."""
        parts = list(value["parts"])
        rows = value.get("rows")
        return cls(
            unit=str(value.get("unit", "")),
            rows=int(rows) if rows is not None else sum(int(p.get("rows", 0)) for p in parts),
            parts=parts,
            extra=_unknown(value, {"unit", "rows", "parts"}),
        )


@dataclass
class OutputFile:
    """A file of a published output (a manifest's ``files`` and ``error_files``): its path
    relative to the output and its rows, ``{"path", "rows"}`` in JSON."""

    path: str
    rows: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, **self.extra}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> OutputFile:
        """The entry :meth:`to_json` wrote (raises KeyError without ``path`` or ``rows``)."""
        return cls(
            path=value["path"], rows=int(value["rows"]), extra=_unknown(value, {"path", "rows"})
        )


@dataclass
class ManifestRun:
    """One run that published into an output (a manifest's ``runs``): its run id, the config
    fingerprint, when it finished, how many write-task records it published, its
    :class:`Totals` (their keys beside these in JSON) and the digest of its input."""

    run_id: str
    fingerprint: str
    finished_at: str
    parts: int
    #: The run's totals; keys of an entry this bulkinfer does not know are kept in theirs.
    totals: Totals
    #: :func:`input_digest` of the job's work units ("" in manifests written before it).
    input: str = ""

    KEYS = frozenset({"run_id", "fingerprint", "finished_at", "parts", "input"})

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "fingerprint": self.fingerprint,
            "finished_at": self.finished_at,
            "parts": self.parts,
            **({"input": self.input} if self.input else {}),
            **self.totals.to_json(),
        }

    def same_job(self, fingerprint: str, input: str) -> bool:
        """Whether this run was a job of config ``fingerprint`` on input ``input``."""
        return bool(self.input) and (self.fingerprint, self.input) == (fingerprint, input)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ManifestRun:
        """The entry :meth:`to_json` wrote (unknown keys are kept with the totals)."""
        return cls(
            run_id=str(value.get("run_id", "")),
            fingerprint=str(value.get("fingerprint", "")),
            finished_at=str(value.get("finished_at", "")),
            parts=int(value.get("parts", 0)),
            totals=Totals.from_json(_unknown(value, set(cls.KEYS))),
            input=str(value.get("input", "")),
        )


@dataclass
class Manifest:
    """A published file output's ``_SUCCESS`` manifest: what the output holds and which runs
    wrote it (see docs/failures.md). The totals add up over ``runs`` (an output appended to
    has one run per append); ``files`` and ``error_files`` are the data files and the
    set-aside rows' files (``_errors/``)."""

    fingerprint: str
    location: str
    mode: str
    rows_in: int
    rows_out: int
    rows_set_aside: int
    set_aside: dict[str, dict[str, int]]
    files: list[OutputFile]
    error_files: list[OutputFile]
    runs: list[ManifestRun]
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def published(self) -> dict[str, Any] | None:
        """None: a file output has no table commit (see :attr:`Receipt.published`)."""
        return None

    @classmethod
    def of_runs(
        cls,
        job: JobRecord,
        files: list[OutputFile],
        error_files: list[OutputFile],
        runs: list[ManifestRun],
    ) -> Manifest:
        """The manifest of ``job``'s output holding ``files`` written by ``runs``, its totals
        added up over the runs."""
        set_aside: dict[str, dict[str, int]] = {}
        for run in runs:
            add_counts(set_aside, run.totals.set_aside)
        return cls(
            fingerprint=job.fingerprint,
            location=job.location,
            mode=job.mode,
            rows_in=sum(r.totals.rows_in for r in runs),
            rows_out=sum(r.totals.rows_out for r in runs),
            rows_set_aside=sum(r.totals.rows_set_aside for r in runs),
            set_aside=set_aside,
            files=files,
            error_files=error_files,
            runs=runs,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``_SUCCESS`` file's JSON (:meth:`from_json` reads it back)."""
        return {
            "format": self.format,
            "fingerprint": self.fingerprint,
            "location": self.location,
            "mode": self.mode,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_set_aside": self.rows_set_aside,
            "set_aside": self.set_aside,
            "files": [f.to_json() for f in self.files],
            "error_files": [f.to_json() for f in self.error_files],
            "runs": [r.to_json() for r in self.runs],
            **self.extra,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Manifest:
        """A manifest :meth:`to_json` wrote, by this or an earlier bulkinfer (raises KeyError
        for a file entry without ``path`` or ``rows``)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            fingerprint=str(value.get("fingerprint", "")),
            location=str(value.get("location", "")),
            mode=str(value.get("mode", "")),
            rows_in=int(value.get("rows_in", 0)),
            rows_out=int(value.get("rows_out", 0)),
            rows_set_aside=int(value.get("rows_set_aside", 0)),
            set_aside=dict(value.get("set_aside", {})),
            files=[OutputFile.from_json(f) for f in value.get("files", [])],
            error_files=[OutputFile.from_json(f) for f in value.get("error_files", [])],
            runs=[ManifestRun.from_json(r) for r in value.get("runs", [])],
            format=str(value.get("format", FORMAT)),
            extra=_unknown(value, known),
        )


@dataclass
class Receipt:
    """What a published table job reports (a table's counterpart of the :class:`Manifest`):
    the job's run id, fingerprint, location and mode, its :class:`Totals` (their keys beside
    these in JSON) and ``published``, what the target's ``publish`` returned (``{"rows",
    "already", ...}`` with the engine's facts, such as ``version`` or ``snapshot_id``)."""

    run_id: str
    fingerprint: str
    location: str
    mode: str
    #: The job's totals; keys of a receipt this bulkinfer does not know are kept in theirs.
    totals: Totals
    published: dict[str, Any]

    KEYS = frozenset({"run_id", "fingerprint", "location", "mode", "published"})

    @classmethod
    def of(cls, job: JobRecord, published: dict[str, Any]) -> Receipt:
        """The receipt of ``job`` (its totals as kept when the publish began)."""
        return cls(
            job.run_id, job.fingerprint, job.location, job.mode, job.totals or Totals(), published
        )

    @property
    def rows_in(self) -> int:
        return self.totals.rows_in

    @property
    def rows_out(self) -> int:
        return self.totals.rows_out

    @property
    def rows_set_aside(self) -> int:
        return self.totals.rows_set_aside

    @property
    def rows_published(self) -> int:
        """The rows the target's commit made visible (0 if it does not say)."""
        return int(self.published.get("rows", 0))

    @property
    def already(self) -> bool:
        """The target found its commit already made (by the run this one resumed)."""
        return bool(self.published.get("already"))

    def to_json(self) -> dict[str, Any]:
        """``{"run_id", "fingerprint", "location", "mode", <totals>, "published"}``."""
        return {
            "run_id": self.run_id,
            "fingerprint": self.fingerprint,
            "location": self.location,
            "mode": self.mode,
            **self.totals.to_json(),
            "published": self.published,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Receipt:
        """The receipt :meth:`to_json` wrote (unknown keys are kept with the totals)."""
        return cls(
            run_id=str(value.get("run_id", "")),
            fingerprint=str(value.get("fingerprint", "")),
            location=str(value.get("location", "")),
            mode=str(value.get("mode", "")),
            totals=Totals.from_json(_unknown(value, set(cls.KEYS))),
            published=dict(value.get("published") or {}),
        )
