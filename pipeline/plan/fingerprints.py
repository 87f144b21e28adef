"""What identifies a job's output: its data flow, the fingerprint of it, and what changed.

A resumed run must compute exactly what the interrupted one would have, so it is refused when
the data flow changed; execution settings (how many actors, how much memory) may change.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pipeline.output.records import short_hash

if TYPE_CHECKING:
    from pipeline.plan.model import Step

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
