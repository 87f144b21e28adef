"""``metrics.json``: what one run measured, written into the run's output folder.

The runner measures the job (rows, times, first output, per-stage figures from Ray Data's own
stats); this module adds what the driver knows (peak memory, versions, the config fingerprint,
how the job was launched), masks secrets and writes the file atomically. It imports neither Ray
nor Hydra: the command line passes the output folder and the overrides in a :class:`JobInfo`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.app.overrides import as_written, split
from pipeline.contract.errors import BulkInferError, Interrupted
from pipeline.contract.secrets import MASK, mask_override, mask_secrets
from pipeline.execute.batching import peak_rss_bytes
from pipeline.plan import registry

if TYPE_CHECKING:
    from pipeline.execute.runner import RunResult
    from pipeline.plan.model import Plan

METRICS_FILE = "metrics.json"
SCHEMA_VERSION = 1
#: Model libraries recorded for a map stage that does not declare its ``libraries``.
MODEL_LIBRARIES = (
    "torch",
    "transformers",
    "sentence-transformers",
    "xgboost",
    "scikit-learn",
    "onnxruntime",
    "vllm",
    "tensorflow",
    "jax",
)


@dataclass
class JobInfo:
    """How the job was launched; the command line fills it in from Hydra."""

    output_dir: str | None = None
    overrides: list[str] = field(default_factory=list)
    num: int | None = None  # position in a sweep; None for a single run
    name: str = "bulkinfer"


def dist_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def versions(plan: Plan | None) -> dict[str, Any]:
    """Python, bulkinfer, Ray, pyarrow, each plugin's distribution and the model libraries."""
    found: dict[str, Any] = {
        "python": platform.python_version(),
        "bulkinfer": dist_version("bulkinfer"),
        "ray": dist_version("ray"),
        "pyarrow": dist_version("pyarrow"),
    }
    if plan is None:
        return found
    plugins: dict[str, Any] = {}
    libraries: set[str] = set()
    for step in plan.steps:
        info = registry.available(step.kind).get(step.name)
        dist = info.distribution if info else None
        plugins[f"{step.kind}:{step.name}"] = {
            "distribution": dist,
            "version": dist_version(dist) if dist else None,
        }
        declared = tuple(getattr(step.plugin, "libraries", ()) or ())
        if declared:
            libraries.update(declared)
        elif step.stage is not None:  # a map stage that does not say what it runs on
            libraries.update(n for n in MODEL_LIBRARIES if dist_version(n) is not None)
    found["plugins"] = plugins
    found["libraries"] = {name: dist_version(name) for name in sorted(libraries)}
    return found


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (Linux); False where the OS cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def mask_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides as written, values of secret-looking keys replaced by ``***``."""
    return [mask_override(as_written(o)) for o in overrides]


def _mask_text(text: str, overrides: list[str]) -> str:
    for override in overrides:
        key, value = split(override)
        if value and mask_secrets({key: value})[key] == MASK:
            text = text.replace(value, MASK)
    return text


def describe_error(error: BaseException) -> str:
    """The message a user sees for a failure: a BulkInferError as the CLI prints it."""
    if isinstance(error, BulkInferError):
        return str(error)
    return f"{type(error).__name__}: {error}"


class Recorder:
    """Collects one run's metrics from start to finish and writes ``metrics.json``."""

    def __init__(self, job: JobInfo | None = None) -> None:
        self.job = job or JobInfo()
        self.started = time.perf_counter()
        self.started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.peak_scope = "job" if reset_peak_rss() else "process"
        self.plan: Plan | None = None
        self.ray_started: bool | None = None
        self.path: Path | None = None

    def _base(self, status: str) -> dict[str, Any]:
        plan = self.plan
        return {
            "schema": SCHEMA_VERSION,
            "status": status,
            "error": None,
            "job": {
                "name": self.job.name,
                "num": self.job.num,
                "overrides": mask_overrides(list(self.job.overrides)),
                "output_dir": self.job.output_dir,
            },
            "started_at": self.started_at,
            "fingerprint": plan.fingerprint if plan else None,
            "rows_in": None,
            "rows_out": None,
            "wall_s": round(time.perf_counter() - self.started, 3),
            "job_s": None,
            "first_output_s": None,
            "rows_per_s": None,
            "steady_rows_per_s": None,
            "output": None,
            "stages": [],
            "cluster": {},
            "driver_peak_rss_bytes": peak_rss_bytes(),
            "driver_peak_rss_scope": self.peak_scope,
            "ray": {
                "address": (plan.ray.address or "local") if plan else None,
                "started_for_job": self.ray_started,
            },
            "versions": versions(plan),
        }

    def completed(self, result: RunResult) -> dict[str, Any]:
        """Metrics of a finished job; written if the job has an output folder."""
        metrics = self._base("completed")
        metrics.update(result.as_dict())
        metrics["wall_s"] = round(result.wall_s, 3)
        return self._write(metrics)

    def dry_run(self) -> dict[str, Any]:
        """Metrics of a dry run: the plan was valid, nothing ran."""
        return self._write(self._base("dry_run"))

    def failed(self, error: BaseException) -> dict[str, Any]:
        """Metrics of a failed job, with the message the user saw."""
        metrics = self._base("interrupted" if isinstance(error, Interrupted) else "failed")
        metrics["error"] = _mask_text(describe_error(error), list(self.job.overrides))
        return self._write(metrics)

    def _write(self, metrics: dict[str, Any]) -> dict[str, Any]:
        metrics = mask_secrets(metrics)
        if self.job.output_dir:
            self.path = write_metrics(self.job.output_dir, metrics)
        return metrics


def write_metrics(folder: str | os.PathLike[str], metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` into ``folder`` atomically (a reader never sees half a file)."""
    target = Path(folder) / METRICS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".metrics-", suffix=".json", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(metrics, handle, indent=2, default=str)
            handle.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_metrics(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``metrics.json`` of a run folder, or None if it has none (or it is unreadable)."""
    try:
        return json.loads((Path(folder) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _mib(n: int | None) -> str:
    return f"{n / 2**20:,.0f} MiB" if n else "n/a"


def sentence(metrics: dict[str, Any], where: str | os.PathLike[str] | None = None) -> str:
    """The run's last line: rows, time, rate, first output, peak memory, output, metrics file."""
    rate = metrics.get("rows_per_s")
    parts = [f"{rate:,.1f} rows/s" if rate else "n/a rows/s"]
    if metrics.get("first_output_s") is not None:
        parts.append(f"first rows after {metrics['first_output_s']:.1f} s")
    if metrics.get("steady_rows_per_s"):
        parts.append(f"{metrics['steady_rows_per_s']:,.1f} rows/s after them")
    if metrics.get("driver_peak_rss_bytes"):
        parts.append(f"driver peak {_mib(metrics['driver_peak_rss_bytes'])}")
    job_s = metrics.get("job_s") or 0.0
    text = (
        f"bulkinfer: {metrics.get('rows_in')} rows in, {metrics.get('rows_out')} rows out in "
        f"{job_s:.1f} s ({', '.join(parts)}; {metrics.get('wall_s', 0.0):.1f} s in all)"
    )
    if metrics.get("output"):
        text += f" -> {metrics['output']}"
    if where:
        text += f"; metrics in {where}"
    return text
