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
import re
import secrets
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
    from pipeline.plan.model import Plan, Step

METRICS_FILE = "metrics.json"
SCHEMA_VERSION = 2
#: The steady rate (rows/s after the first output) is recorded only when it was measured over at
#: least this many seconds...
STEADY_MIN_S = 10.0
#: ...and over at least this share of the run's rows. A shorter span is mostly scheduling steps
#: and the end of the job (the last write, actors stopping); fewer rows describe the job's tail,
#: not the job.
STEADY_MIN_SHARE = 0.5
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


def steady_rate(
    rows: int | None, job_s: float | None, first_output_s: float | None, first_rows: int
) -> tuple[float, float] | None:
    """``(rows/s, seconds)`` from the first output to the end of the job, or None.

    ``rows``: the rows this run wrote; ``first_rows``: how many the last stage had handed on at
    the first output (``first_output_s`` seconds into the ``job_s``-second job). None unless the
    span is at least :data:`STEADY_MIN_S` seconds and holds at least :data:`STEADY_MIN_SHARE` of
    the rows, so that the figure describes the job and not its last scheduling steps.
    """
    if not rows or not job_s or first_output_s is None:
        return None
    span = job_s - first_output_s
    after = rows - first_rows
    if span < STEADY_MIN_S or after < STEADY_MIN_SHARE * rows:
        return None
    return after / span, span


#: Ray Data operators that read (``ReadParquet``, ``FromArrow``, ...) or that bulkinfer adds to
#: cut the read's blocks; and those that write or take rows for the sink.
_SOURCE_OPS = re.compile(r"(Read|From|ListFiles)\w*|MapBatches\(_identity\)|StreamingRepartition.*")
_SINK_OPS = re.compile(r"(Write|Limit|limit=)\S*.*")
_MAP_OP = re.compile(r"(?:MapBatches|Map|FlatMap|Filter)\((?P<cls>[^)]*)\)")


def _stage_keys(operator: str, maps: tuple[Step, ...], cursor: list[int]) -> list[str | None]:
    """The bulkinfer stage key of each part of a (possibly fused) Ray Data operator name."""
    keys: list[str | None] = []
    for part in (p.strip() for p in operator.split("->")):
        key = None
        if _SOURCE_OPS.fullmatch(part):
            key = "source"
        elif (m := _MAP_OP.fullmatch(part)) is not None:
            for i in range(cursor[0], len(maps)):  # stages run in plan order
                if maps[i].plugin.__name__ == m.group("cls"):
                    key, cursor[0] = maps[i].key, i + 1
                    break
        elif _SINK_OPS.fullmatch(part):
            key = "sink"
        keys.append(key)
    return keys


def stage_figures(
    operators: list[dict[str, Any]], plan: Plan | None, written: int | None = None
) -> list[dict[str, Any]]:
    """Ray Data's per-operator figures under bulkinfer's stage keys, in execution order.

    ``operators``: ``{"name": Ray operator, "rows": int | None, "time_s": float}`` as
    :func:`pipeline.execute.ray_stats.operator_stages` reports them. Each becomes
    ``{"name": key, "operator": Ray's name, "rows", "time_s"}`` where ``key`` is the plan's
    (``source``, ``preprocessors[0]``, ``predictor``, ``sink``); operators Ray fused get the
    keys they run joined with `` + `` (Ray times them as one). Consecutive operators of the same
    key are summed into one entry (rows: the last one's output). An operator no key matches keeps
    Ray's name. An operator that ends in a write outputs a row per write task (its result), so
    its ``rows`` are ``written`` instead: the rows the job wrote (None where not known).
    """
    maps = plan.maps if plan is not None else ()
    cursor = [0]
    found: list[dict[str, Any]] = []
    for op in operators:
        keys = list(dict.fromkeys(k for k in _stage_keys(op["name"], maps, cursor) if k))
        name = " + ".join(keys) if keys else op["name"]
        rows = op.get("rows")
        if op["name"].split("->")[-1].strip().startswith("Write"):
            rows = written
        entry = {"name": name, "operator": op["name"], "rows": rows, "time_s": op.get("time_s")}
        last = found[-1] if found else None
        if last is not None and keys and last["name"] == name:
            last["operator"] += f"; {op['name']}"
            last["rows"] = rows if rows is not None else last["rows"]
            last["time_s"] = round((last["time_s"] or 0.0) + (op.get("time_s") or 0.0), 3)
            continue
        found.append(entry)
    return found


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
        #: The id of the Ray node the driver ran on (one Ray instance: one id for every job).
        self.ray_node: str | None = None
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
            "rows_done": None,
            "rows_per_s": None,
            "steady_rows_per_s": None,
            "steady_span_s": None,
            "output": None,
            "stages": [],
            "cluster": {},
            "driver_peak_rss_bytes": peak_rss_bytes(),
            "driver_peak_rss_scope": self.peak_scope,
            "ray": {
                "address": (plan.ray.address or "local") if plan else None,
                "started_for_job": self.ray_started,
                "node_id": self.ray_node,
            },
            "versions": versions(plan),
        }

    def completed(self, result: RunResult) -> dict[str, Any]:
        """Metrics of a finished job; written if the job has an output folder."""
        metrics = self._base("completed")
        metrics.update(result.as_dict())
        metrics["wall_s"] = round(result.wall_s, 3)
        done = result.rows_done if result.rows_done is not None else result.rows_out
        metrics["rows_done"] = done
        steady = steady_rate(done, result.job_s, result.first_output_s, result.first_output_rows)
        metrics["steady_rows_per_s"] = round(steady[0], 3) if steady else None
        metrics["steady_span_s"] = round(steady[1], 3) if steady else None
        metrics["stages"] = stage_figures(result.stages, self.plan, done)
        return self._write(metrics)

    def dry_run(self) -> dict[str, Any]:
        """Metrics of a dry run: the plan was valid, nothing ran."""
        return self._write(self._base("dry_run"))

    def failed(self, error: BaseException) -> dict[str, Any]:
        """Metrics of a failed job, with the message the user saw."""
        metrics = self._base("interrupted" if isinstance(error, Interrupted) else "failed")
        metrics["error"] = _mask_text(describe_error(error), list(self.job.overrides))
        if isinstance(error, Interrupted):  # what the line says: written so far, of the input
            metrics["rows_written"], metrics["rows_total"] = error.rows_written, error.rows_total
        return self._write(metrics)

    def _write(self, metrics: dict[str, Any]) -> dict[str, Any]:
        metrics = mask_secrets(metrics)
        if self.job.output_dir:
            self.path = write_metrics(self.job.output_dir, metrics)
        return metrics


def write_metrics(folder: str | os.PathLike[str], metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` into ``folder`` atomically (a reader never sees half a file).

    The file gets the permissions of any new file of the process (``0o666`` less the umask, as
    the job's outputs get), not the owner-only ones of a temporary file.
    """
    target = Path(folder) / METRICS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".metrics-{os.getpid()}-{secrets.token_hex(4)}.json"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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


def _rows(n: Any) -> str:
    """``1 row``, ``300 rows``, ``12,000 rows``; ``? rows`` when unknown."""
    if not isinstance(n, int):
        return "? rows"
    return f"{n:,} row" + ("" if n == 1 else "s")


def _rate(value: float | None) -> str:
    """Rows per second with the digits that mean something: 12,345; 123.4; 1.2; 0.042."""
    if not value:
        return "n/a rows/s"
    if value >= 1000:
        return f"{value:,.0f} rows/s"
    if value >= 1:
        return f"{value:,.1f} rows/s"
    return f"{value:.2g} rows/s"


def _whose(done: int, resumed: int, rows_out: int) -> str:
    """Who wrote an output's rows, when this run wrote only ``done`` of its ``rows_out``: the
    run it resumed (``resumed``) and, for an output appended to, earlier runs."""
    earlier = rows_out - done - resumed
    if earlier <= 0:
        return f"{done:,} by this run, the rest by the run it resumed"
    if not resumed:
        return f"{done:,} by this run, the rest by earlier runs appended to"
    return f"{done:,} by this run, {resumed:,} by the run it resumed, the rest by earlier runs"


def sentence(metrics: dict[str, Any], where: str | os.PathLike[str] | None = None) -> str:
    """The run's last line: rows, time, rate, first output, peak memory, output, metrics file.

    The rate counts the rows this run wrote (after a resume, not those of the run it finished);
    the steady rate (after the first output) is given with the span it was measured over, and
    only when that span is long enough (:func:`steady_rate`).
    """
    rows_in, rows_out, done = metrics.get("rows_in"), metrics.get("rows_out"), None
    if metrics.get("rows_done") is not None and metrics["rows_done"] != rows_out:
        done = metrics["rows_done"]
    parts = [_rate(metrics.get("rows_per_s")) + (" of this run's rows" if done is not None else "")]
    if metrics.get("first_output_s") is not None:
        parts.append(f"first rows after {metrics['first_output_s']:.1f} s")
    if metrics.get("steady_rows_per_s") and metrics.get("steady_span_s"):
        parts[-1] += (
            f", then {_rate(metrics['steady_rows_per_s'])} over the last "
            f"{metrics['steady_span_s']:.1f} s"
        )
    if metrics.get("driver_peak_rss_bytes"):
        parts.append(f"driver peak {_mib(metrics['driver_peak_rss_bytes'])}")
    job_s = metrics.get("job_s") or 0.0
    counts = f"{_rows(rows_in)} in, {_rows(rows_out)} out"
    if done is not None:
        counts += f" ({_whose(done, metrics.get('rows_resumed') or 0, rows_out or 0)})"
    text = (
        f"bulkinfer: {counts} in {job_s:.1f} s "
        f"({'; '.join(parts)}; {metrics.get('wall_s', 0.0):.1f} s in all)"
    )
    if metrics.get("output"):
        text += f" -> {metrics['output']}"
    if where:
        text += f"; metrics in {where}"
    return text
