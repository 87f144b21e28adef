"""The records of a staged job, and the digests and counts they hold.

A job record (:class:`JobRecord`: run id, config fingerprint, data flow, work units, state) is
written when a job starts; :func:`unit_digest` identifies a work unit's input,
:func:`config_changes` says what changed between two data flows, :func:`add_counts` adds a
unit's row counts into a total.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid
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
    totals: dict[str, Any] | None = None
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
            value["totals"] = self.totals
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> JobRecord:
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
            totals=value.get("totals"),
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
        return cls(
            part=data["part"],
            rows=int(data["rows"]),
            ranges=data["ranges"],
            written=list(data["written"]),
            run_id=data.get("run_id", ""),
        )
