"""The end of a multirun: one table and one plot for the whole sweep, and the best setting.

Every job writes ``metrics.json`` into its folder (a failed job too, with its error). At the end
of the sweep :func:`summarize` reads them and writes into the sweep folder:

- ``summary.csv`` and ``summary.md``: one row per job with the swept values, the steady rows/s
  (after the first output, where it was measured over a long enough span: see
  :func:`pipeline.app.metrics.steady_rate`), the whole job's rows/s, times, whether the job
  started Ray (cold: Ray's start and fresh worker processes in its figures) or reused the warm
  one of an earlier job, driver peak memory and status;
- ``throughput.png``: the figure the jobs are compared by (:func:`compared_figure`) against the
  first numeric swept key, from zero, one line per combination of the other swept keys, jobs
  that started Ray drawn apart (needs matplotlib: ``pip install bulkinfer[plots]``);

and returns a report that ends with the best setting as command-line overrides. Jobs are
compared only with jobs as warm as they are: when some jobs reused the Ray an earlier job
started, the jobs that started it are left out of "best", and the report says so.

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


#: The figures a sweep can compare jobs by: metrics.json key -> how the summary names it.
FIGURES = {
    "steady_rows_per_s": "rows/s after the first output",
    "rows_per_s": "rows/s of the whole job",
}


def _cold(row: JobRow) -> bool:
    return row.ray == "started"


def compared(rows: list[JobRow]) -> list[JobRow]:
    """The completed jobs that are compared: all of them, or, when some reused a warm Ray,
    only those (a job that started Ray paid its start-up and cold workers)."""
    done = [r for r in rows if r.status == "completed" and r.get("rows_per_s")]
    warm = [r for r in done if not _cold(r)]
    return warm if warm and len(warm) < len(done) else done


def compared_figure(rows: list[JobRow]) -> str:
    """``steady_rows_per_s`` when every compared job has it, else ``rows_per_s``: one figure
    for all jobs (a steady rate against a whole-job rate would compare unlike things)."""
    jobs = compared(rows)
    if jobs and all(r.get("steady_rows_per_s") for r in jobs):
        return "steady_rows_per_s"
    return "rows_per_s"


def rate(row: JobRow, figure: str = "rows_per_s") -> float | None:
    """The job's ``figure`` (a key of :data:`FIGURES`)."""
    return row.get(figure)


def best(rows: list[JobRow]) -> JobRow | None:
    """The compared job (:func:`compared`) with the highest :func:`compared_figure`."""
    figure = compared_figure(rows)
    jobs = [r for r in compared(rows) if rate(r, figure)]
    return max(jobs, key=lambda r: rate(r, figure)) if jobs else None


def caveats(rows: list[JobRow]) -> list[str]:
    """What the reader of "best" must know: jobs left out as colder than the rest."""
    done = [r for r in rows if r.status == "completed" and r.get("rows_per_s")]
    left_out = [r for r in done if r not in compared(rows)]
    if not left_out:
        if len(done) > 1 and all(_cold(r) for r in done):
            return ["every job started its own Ray: each figure includes Ray's start-up"]
        return []
    names = ", ".join(f"job {_fmt(r.num)}" for r in left_out)
    again = "sweep its value again later in the sweep"
    keys = swept_keys(rows)
    if len(keys) == 1:
        values = [r.values.get(keys[0], "") for r in rows] + [left_out[0].values.get(keys[0], "")]
        again += f" ({keys[0]}={','.join(values)})"
    return [
        f"{names} started Ray, so its figures include Ray's start-up and cold worker "
        f"processes; it is not compared with the jobs that reused that Ray. To compare its "
        f"setting, {again}"
    ]


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
    figures = (
        "rows_out",
        "steady_rows_per_s",
        "steady_span_s",
        "rows_per_s",
        "wall_s",
        "job_s",
        "first_output_s",
    )
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


def markdown_table(rows: list[JobRow]) -> list[str]:
    """The summary's lines as a Markdown table."""
    header, cells = table(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in cells]


def markdown(rows: list[JobRow]) -> str:
    """The summary as a Markdown table, with the best job's overrides and caveats below it."""
    lines = markdown_table(rows)
    winner = best(rows)
    if winner is not None:
        figure = compared_figure(rows)
        lines += [
            "",
            f"Best: {rate(winner, figure):,.1f} {FIGURES[figure]} with `{best_override(rows)}`",
        ]
    lines += [f"Note: {c}." for c in caveats(rows)]
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
    """Save :func:`throughput_figure` as a PNG at ``path``; None if there is nothing to plot or
    matplotlib is not installed."""
    fig = throughput_figure(rows)
    if fig is None:
        return None
    fig.savefig(path)
    return path


def throughput_figure(rows: list[JobRow]) -> Any | None:
    """The compared figure against the first numeric swept key, a line per other swept values,
    as a matplotlib ``Figure``; None if there is nothing to plot or no matplotlib.

    The y axis is :func:`compared_figure` (named on the axis). When that is the steady rate, the
    whole job's rows/s is drawn too, dashed, and the legend says so. Jobs left out of the
    comparison (they started Ray, see :func:`compared`) are hollow markers, not on the lines.
    """
    figure = compared_figure(rows)
    done = [r for r in rows if r.status == "completed" and rate(r, figure) is not None]
    if not done:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError:
        log.warning("no throughput.png: matplotlib is not installed (pip install bulkinfer[plots])")
        return None
    keys = swept_keys(rows)
    numeric = [k for k in keys if all(_as_number(r.values.get(k, "")) is not None for r in done)]
    x_key = numeric[0] if numeric else (keys[0] if keys else None)
    others = [k for k in keys if k != x_key]
    kept = set(map(id, compared(rows)))
    series: dict[str, list[JobRow]] = {}
    for row in done:
        label = ", ".join(f"{k}={row.values.get(k, '')}" for k in others) or FIGURES[figure]
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

    handles: list[Any] = []
    for label, members in series.items():
        members = sorted(members, key=x_of)
        on_line = [r for r in members if id(r) in kept]
        cold = [r for r in members if id(r) not in kept]
        line = ax.plot([x_of(r) for r in on_line], [rate(r, figure) for r in on_line], marker="o")[
            0
        ]
        color = line.get_color()
        if cold:
            ax.plot(
                [x_of(r) for r in cold],
                [rate(r, figure) for r in cold],
                linestyle="none",
                marker="o",
                markerfacecolor="none",
                color=color,
            )
        if figure == "steady_rows_per_s":
            ax.plot(
                [x_of(r) for r in on_line],
                [rate(r, "rows_per_s") for r in on_line],
                linestyle="--",
                color=color,
                alpha=0.6,
            )
        handles.append(Line2D([], [], color=color, marker="o", label=label))
    if figure == "steady_rows_per_s":
        handles.append(Line2D([], [], color="grey", linestyle="--", label="whole job"))
    if len(kept) < len(done):
        handles.append(
            Line2D(
                [], [], color="grey", marker="o", markerfacecolor="none", linestyle="none",
                label="started Ray (not compared)",
            )
        )  # fmt: skip
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
            f"best {rate(winner, figure):,.1f}",
            (x_of(winner), rate(winner, figure)),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
        )
    failed = len(rows) - len(done)
    title = f"throughput by {x_key}" if x_key else "throughput by job"
    ax.set_title(title + (f" ({failed} job(s) not shown: failed or no figure)" if failed else ""))
    ax.set_xlabel(x_key or "job")
    ax.set_ylabel(FIGURES[figure])
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.08, y=0.15)
    ax.set_ylim(bottom=0)
    if len(handles) > 1:
        ax.legend(handles=handles, fontsize="small")
    fig.tight_layout()
    return fig


def summarize(sweep_dir: str | os.PathLike[str], command: str = "bulkinfer") -> str:
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
    lines = [*markdown_table(rows), "", f"bulkinfer sweep: {len(rows)} jobs ({states})"]
    lines.append(f"summary: {written}")
    winner = best(rows)
    if winner is None:
        lines.append("best: none (no job completed)")
    else:
        figure = compared_figure(rows)
        lines.append(
            f"best: {rate(winner, figure):,.1f} {FIGURES[figure]} with {best_override(rows)}"
        )
        full = " ".join(shlex.quote(o) for o in winner.overrides)
        lines.append(f"  rerun it: {command} {full}".rstrip())
    lines += [f"  note: {c}" for c in caveats(rows)]
    return "\n".join(lines)


class SweepSummary:
    """Hydra callback: at the end of a multirun, summarize the sweep folder (see module doc).

    Registered in ``conf/config.yaml`` under ``hydra.callbacks``. Works with any launcher whose
    jobs write into the sweep folder; with the default (basic) launcher all jobs run in this
    process.
    """

    def __init__(self, command: str = "bulkinfer") -> None:
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
