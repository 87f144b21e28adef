"""What identifies a job's output: its data flow, the fingerprint of it, and what changed.

A resumed run must compute exactly what the interrupted one would have, so it is refused when
the data flow changed; execution settings (how many actors, how much memory) may change.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.interfaces import WorkUnit
    from pipeline.plan import Step

#: Stage keys about how or where a stage runs, or when the job gives up, not what it outputs: a
#: resumed job may change them (e.g. fewer actors after running out of memory).
EXECUTION_KEYS = frozenset(
    {
        "compute",
        "concurrency",
        "num_cpus",
        "num_gpus",
        "memory",
        "ray_remote_args",
        "max_error_rate",
        "batch_size",
        "num_threads",
    }
)


def short_hash(text: str) -> str:
    """The first 16 hex digits of the SHA-256 of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataflow(steps: list[Step] | tuple[Step, ...]) -> dict[str, Any]:
    """What determines the output, by stage key: each stage's plugin, its validated params
    (defaults filled in, so spelling a default out changes nothing) and the stage settings that
    are not :data:`EXECUTION_KEYS`. ``ray`` and ``run`` are left out: the same job run locally or
    on a cluster, with or without progress bars, has the same data flow."""
    flow: dict[str, Any] = {}
    for step in steps:
        stage = step.stage.model_dump(mode="json") if step.stage else None
        flow[step.key] = {
            "type": step.name,
            "params": step.params.model_dump(mode="json"),
            "stage": {k: v for k, v in stage.items() if k not in EXECUTION_KEYS} if stage else None,
        }
    return flow


def fingerprint(flow: dict[str, Any]) -> str:
    """Hash of a :func:`dataflow`: equal fingerprints, equal outputs."""
    return short_hash(json.dumps(flow, sort_keys=True, default=str))


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
