"""The end of a multirun: one table and one plot for the whole sweep, and the best setting.

Every job writes ``metrics.json`` into its folder (a failed job too, with its error). At the end
of the sweep :func:`summarize` reads them and writes into the sweep folder:

- ``summary.csv`` and ``summary.md``: one row per job with the swept values, steady-state rows/s
  (after the first output: Ray's start and the model load, which only the first job of a sweep
  pays in full, left out), the whole job's rows/s, times, whether the job started Ray or reused
  the warm one of an earlier job, driver peak memory and status;
- ``throughput.png``: steady-state rows/s (and, dashed, the whole job's) against the first
  numeric swept key, from zero, one line per combination of the other swept keys (needs
  matplotlib: ``pip install bulkinfer[plots]``);

and returns a report that ends with the best setting as command-line overrides.

:class:`SweepSummary` calls it from Hydra (``hydra.callbacks`` in ``conf/config.yaml``). This
module does not import Hydra: Hydra calls a callback's hooks by name, so the class implements
that protocol (``hydra.experimental.callback.Callback``) without subclassing it.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.app.metrics import METRICS_FILE, read_metrics
from pipeline.app.overrides import as_written, split

log = logging.getLogger("bulkinfer")

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
THROUGHPUT_PNG = "throughput.png"


@dataclass
class JobRow:
    """One job of the sweep as the summary shows it."""

    folder: Path
    num: int | None
    status: str
    overrides: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, str]:
        """Override key -> value, as given on the command line."""
        found = {}
        for override in self.overrides:
            key, value = split(override)
            if value is not None:
                found[key] = value
        return found

    def get(self, name: str) -> Any:
        return self.metrics.get(name)

    @property
    def ray(self) -> str:
        """``started`` when this job started the Ray it ran on, ``reused`` when an earlier job
        of the sweep did (its workers were warm), empty when unknown."""
        started = (self.metrics.get("ray") or {}).get("started_for_job")
        return {True: "started", False: "reused"}.get(started, "")

    @property
    def peak_mib(self) -> float | None:
        peak = self.metrics.get("driver_peak_rss_bytes")
        return round(peak / 2**20, 1) if peak else None


def _overrides_yaml(folder: Path) -> list[str]:
    path = folder / ".hydra" / "overrides.yaml"
    try:
        import yaml  # a dependency of omegaconf

        loaded = yaml.safe_load(path.read_text())
    except (OSError, ValueError, ImportError):
        return []
    return [str(o) for o in loaded] if isinstance(loaded, list) else []


def _job_folders(sweep_dir: Path) -> list[Path]:
    folders = {p.parent for p in sweep_dir.rglob(METRICS_FILE)}
    folders |= {p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir()}
    folders.discard(sweep_dir)
    return sorted(folders)


def _natural(folder: Path, root: Path) -> tuple:
    rel = folder.relative_to(root).parts
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in rel)


def collect(sweep_dir: str | os.PathLike[str]) -> list[JobRow]:
    """Every job folder under ``sweep_dir``, in job order, with its metrics (if any)."""
    root = Path(sweep_dir)
    rows = []
    for folder in _job_folders(root):
        metrics = read_metrics(folder)
        if metrics is None:
            rows.append(JobRow(folder, None, "no metrics", _overrides_yaml(folder)))
            continue
        job = metrics.get("job") or {}
        overrides = job.get("overrides")
        rows.append(
            JobRow(
                folder=folder,
                num=job.get("num"),
                status=str(metrics.get("status", "unknown")),
                overrides=list(overrides) if overrides is not None else _overrides_yaml(folder),
                metrics=metrics,
            )
        )
    rows.sort(key=lambda r: (r.num is None, r.num or 0, _natural(r.folder, root)))
    return rows


def swept_keys(rows: list[JobRow]) -> list[str]:
    """Override keys whose value differs between jobs, in command-line order."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row.values if k not in keys]
    return [k for k in keys if len({row.values.get(k, "") for row in rows}) > 1]


def rate(row: JobRow) -> float | None:
    """The figure jobs are compared by: steady-state rows/s (after the first output, so Ray's
    start and the model load, which the first job of a sweep pays alone, do not count), else
    the whole job's rows/s."""
    return row.get("steady_rows_per_s") or row.get("rows_per_s")


def best(rows: list[JobRow]) -> JobRow | None:
    """The completed job with the highest :func:`rate`."""
    done = [r for r in rows if r.status == "completed" and rate(r)]
    return max(done, key=rate) if done else None


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def table(rows: list[JobRow]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the summary (shared by the CSV and the Markdown)."""
    keys = swept_keys(rows)
    header = ["job", "status", *keys]
    figures = ("rows_out", "steady_rows_per_s", "rows_per_s", "wall_s", "job_s", "first_output_s")
    header += [*figures, "ray", "driver_peak_mib", "fingerprint", "error"]
    cells = []
    for row in rows:
        cells.append(
            [_fmt(row.num), row.status]
            + [row.values.get(k, "") for k in keys]
            + [_fmt(row.get(n)) for n in figures]
            + [row.ray, _fmt(row.peak_mib)]
            + [_fmt(row.get("fingerprint")), _fmt(row.get("error"))]
        )
    return header, cells


def write_csv(path: Path, rows: list[JobRow]) -> Path:
    header, cells = table(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(cells)
    return path


def _md_cell(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.replace("|", "\\|")


def markdown(rows: list[JobRow]) -> str:
    """The summary as a Markdown table, with the best job's overrides below it."""
    header, cells = table(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in cells]
    winner = best(rows)
    if winner is not None:
        lines += ["", f"Best: {rate(winner):,.1f} rows/s with `{best_override(rows)}`"]
    return "\n".join(lines) + "\n"


def best_override(rows: list[JobRow]) -> str:
    """The swept values of the best job, as command-line overrides."""
    winner = best(rows)
    if winner is None:
        return ""
    keys = swept_keys(rows)
    chosen = [o for o in winner.overrides if split(o)[0] in keys]
    return " ".join(shlex.quote(as_written(o)) for o in (chosen or winner.overrides))


def _as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def plot_throughput(rows: list[JobRow], path: Path) -> Path | None:
    """rows/s against the first numeric swept key, a line per other swept values; None if
    there is nothing to plot or matplotlib is not installed."""
    done = [r for r in rows if r.status == "completed" and rate(r) is not None]
    if not done:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("no throughput.png: matplotlib is not installed (pip install bulkinfer[plots])")
        return None
    keys = swept_keys(rows)
    numeric = [k for k in keys if all(_as_number(r.values.get(k, "")) is not None for r in done)]
    x_key = numeric[0] if numeric else (keys[0] if keys else None)
    others = [k for k in keys if k != x_key]
    series: dict[str, list[JobRow]] = {}
    for row in done:
        label = ", ".join(f"{k}={row.values.get(k, '')}" for k in others) or "rows/s"
        series.setdefault(label, []).append(row)

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    categories: list[str] = []
    if x_key is None:
        categories = [f"job {_fmt(r.num)}" for r in done]
    elif x_key not in numeric:
        categories = list(dict.fromkeys(r.values.get(x_key, "") for r in done))

    def x_of(row: JobRow) -> float:
        if x_key is None:
            return float(done.index(row))
        if categories:
            return float(categories.index(row.values.get(x_key, "")))
        return _as_number(row.values[x_key]) or 0.0

    for label, members in series.items():
        members = sorted(members, key=x_of)
        line = ax.plot([x_of(r) for r in members], [rate(r) for r in members], marker="o")
        ax.plot(
            [x_of(r) for r in members],
            [r.get("rows_per_s") for r in members],
            linestyle="--",
            color=line[0].get_color(),
            alpha=0.5,
        )
        line[0].set_label(label)
    if categories:
        ax.set_xticks(range(len(categories)), categories)
    else:
        xs = sorted({x_of(r) for r in done})
        if xs[0] > 0 and xs[-1] / xs[0] >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [_fmt(x if x % 1 else int(x)) for x in xs])
    winner = best(rows)
    if winner is not None and winner in done:
        ax.annotate(
            f"best {rate(winner):,.1f}",
            (x_of(winner), rate(winner)),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
        )
    failed = len(rows) - len(done)
    title = f"throughput by {x_key}" if x_key else "throughput by job"
    ax.set_title(title + (f" ({failed} job(s) failed, not shown)" if failed else ""))
    ax.set_xlabel(x_key or "job")
    ax.set_ylabel("rows/s after the first output (dashed: whole job)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.08, y=0.15)
    ax.set_ylim(bottom=0)
    if len(series) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return path


def summarize(sweep_dir: str | os.PathLike[str], command: str = "python -m pipeline") -> str:
    """Write summary.csv, summary.md and throughput.png into ``sweep_dir``; return the report."""
    root = Path(sweep_dir)
    rows = collect(root)
    if not rows:
        return f"bulkinfer sweep: no jobs found under {root}"
    csv_path = write_csv(root / SUMMARY_CSV, rows)
    md_path = root / SUMMARY_MD
    md_path.write_text(markdown(rows))
    png = plot_throughput(rows, root / THROUGHPUT_PNG)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    states = ", ".join(f"{n} {status}" for status, n in counts.items())
    written = ", ".join(str(p) for p in (csv_path, md_path, png) if p is not None)
    lines = [markdown(rows).rstrip("\n"), "", f"bulkinfer sweep: {len(rows)} jobs ({states})"]
    lines.append(f"summary: {written}")
    winner = best(rows)
    if winner is None:
        lines.append("best: none (no job completed)")
    else:
        lines.append(f"best: {rate(winner):,.1f} rows/s with {best_override(rows)}")
        full = " ".join(shlex.quote(o) for o in winner.overrides)
        lines.append(f"  rerun it: {command} {full}".rstrip())
    return "\n".join(lines)


class SweepSummary:
    """Hydra callback: at the end of a multirun, summarize the sweep folder (see module doc).

    Registered in ``conf/config.yaml`` under ``hydra.callbacks``. Works with any launcher whose
    jobs write into the sweep folder; with the default (basic) launcher all jobs run in this
    process.
    """

    def __init__(self, command: str = "python -m pipeline") -> None:
        self.command = command

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = summarize(sweep_dir, self.command)
        except Exception:  # a summary must not hide the jobs' own results
            log.exception("could not summarize the sweep in %s", sweep_dir)
            return
        print(report, flush=True)

    # The rest of Hydra's callback protocol: nothing to do.
    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        """Not used."""

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        """Not used."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """Not used."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        """Not used."""

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        """Not used."""
