"""Multirun sweeps end in a summary table, a throughput plot and the best setting.

Each sweep runs once per module, as a user would (``python -m pipeline -m ...``), with Hydra's
default launcher: all jobs in one process, sharing one Ray.
"""

from __future__ import annotations

import csv
import json
import re
import struct
from pathlib import Path

import pytest
from conftest import run_cli

from pipeline.app.metrics import METRICS_FILE, write_metrics
from pipeline.app.sweep import (
    SUMMARY_CSV,
    SUMMARY_MD,
    THROUGHPUT_PNG,
    collect,
    summarize,
    throughput_figure,
)

pytestmark = pytest.mark.subprocess  # every test here runs the command line

TEXTS = [f"sentence number {i} about nothing much" for i in range(20)]
ITEMS = "source.params.items=[" + ",".join(f"'{t}'" for t in TEXTS) + "]"
BATCH_KEY = "predictor.stage.batch_size"


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _metrics(sweep_dir: Path) -> list[dict]:
    found = sorted(sweep_dir.glob(f"*/{METRICS_FILE}"), key=lambda p: int(p.parent.name))
    return [json.loads(p.read_text()) for p in found]


@pytest.fixture(scope="module")
def batch_sweep(tmp_path_factory):
    """Two batch sizes of the embedding model on 20 sentences, progress off."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    proc = run_cli(
        "-m",
        "source=items",
        "source.params.column=text",
        ITEMS,
        f"{BATCH_KEY}=4,16",
        "run.progress=false",
        f"hydra.sweep.dir={sweep_dir}",
    )
    return proc, sweep_dir


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory):
    """Three cheap jobs (no model) of which the first has an invalid value; progress on."""
    sweep_dir = tmp_path_factory.mktemp("failing")
    proc = run_cli(
        "-m",
        "~predictor",
        "source=items",
        "+sink.params.min_rows_per_file=0,1,2",
        f"hydra.sweep.dir={sweep_dir}",
    )
    return proc, sweep_dir


def test_every_job_of_a_sweep_writes_its_metrics(batch_sweep):
    proc, sweep_dir = batch_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _metrics(sweep_dir)
    assert [m["status"] for m in metrics] == ["completed", "completed"]
    assert [m["job"]["num"] for m in metrics] == [0, 1]
    assert [m["rows_out"] for m in metrics] == [len(TEXTS), len(TEXTS)]
    assert f"{BATCH_KEY}=16" in metrics[1]["job"]["overrides"]


def test_sweep_summary_has_one_row_per_job_with_the_swept_value(batch_sweep):
    _, sweep_dir = batch_sweep
    rows = _csv(sweep_dir / SUMMARY_CSV)
    assert [(r["job"], r["status"], r[BATCH_KEY]) for r in rows] == [
        ("0", "completed", "4"),
        ("1", "completed", "16"),
    ]
    for row in rows:
        assert float(row["rows_per_s"]) > 0
        assert float(row["wall_s"]) > 0
        assert float(row["driver_peak_mib"]) > 0
    # Steady state: after the first output, start-up left out (may be empty for a job whose
    # rows all came out in one go); the table says which job started Ray and which reused it.
    assert [r["ray"] for r in rows] == ["started", "reused"]
    for row in rows:
        if row["steady_rows_per_s"]:
            assert float(row["steady_rows_per_s"]) > 0
    markdown = (sweep_dir / SUMMARY_MD).read_text()
    assert f"| job | status | {BATCH_KEY} |" in markdown
    assert len([line for line in markdown.splitlines() if line.startswith("| 0 | completed")]) == 1


def test_throughput_plot_is_a_png_written_by_matplotlib(batch_sweep):
    _, sweep_dir = batch_sweep
    data = (sweep_dir / THROUGHPUT_PNG).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (700, 450)
    assert len(data) > 10_000  # axes, labels and a line, not an empty canvas
    assert b"Software\x00Matplotlib" in data


def test_sweep_prints_the_best_warm_setting_as_a_command_line_override(batch_sweep):
    """Job 0 started Ray; job 1 reused it warm: only job 1 is compared, and the report says so."""
    proc, sweep_dir = batch_sweep
    rows = _csv(sweep_dir / SUMMARY_CSV)
    warm = rows[1]
    figure = "steady_rows_per_s" if warm["steady_rows_per_s"] else "rows_per_s"
    named = (
        "rows/s after the first output" if warm["steady_rows_per_s"] else "rows/s of the whole job"
    )
    assert f"best: {float(warm[figure]):,.1f} {named} with {BATCH_KEY}=16" in proc.stdout
    rerun = re.search(r"rerun it: bulkinfer (.*)", proc.stdout)
    assert rerun and f"{BATCH_KEY}=16" in rerun.group(1)
    assert "note: job 0 started Ray" in proc.stdout
    assert f"({BATCH_KEY}=4,16,4)" in proc.stdout


def test_jobs_of_a_sweep_share_one_ray_instance(batch_sweep):
    proc, sweep_dir = batch_sweep
    metrics = _metrics(sweep_dir)
    assert [m["ray"]["started_for_job"] for m in metrics] == [True, False]
    nodes = {m["ray"]["node_id"] for m in metrics}
    assert len(nodes) == 1 and None not in nodes


def test_progress_false_silences_ray_data_progress(batch_sweep):
    proc, _ = batch_sweep
    output = proc.stdout + proc.stderr
    assert "Total Progress" not in output
    assert "Progress bars disabled" not in output


def test_progress_is_bulkinfers_line_not_ray_datas_by_default(failing_sweep):
    proc, _ = failing_sweep
    assert "Total Progress" not in proc.stdout + proc.stderr
    assert "rows written (100%)" in proc.stderr


def test_failed_job_is_a_row_of_the_summary_not_a_crash_of_the_sweep(failing_sweep):
    proc, sweep_dir = failing_sweep
    rows = _csv(sweep_dir / SUMMARY_CSV)
    assert [(r["status"], r["sink.params.min_rows_per_file"]) for r in rows] == [
        ("failed", "0"),
        ("completed", "1"),
        ("completed", "2"),
    ]
    assert rows[0]["error"].startswith("sink.params.min_rows_per_file:")
    assert (sweep_dir / THROUGHPUT_PNG).read_bytes()[:4] == b"\x89PNG"
    assert "best: " in proc.stdout


def test_sweep_with_a_failed_job_exits_non_zero_after_the_summary(failing_sweep):
    proc, _ = failing_sweep
    assert proc.returncode == 2
    assert "bulkinfer: error: sink.params.min_rows_per_file" in proc.stderr
    assert "bulkinfer sweep: 3 jobs (1 failed, 2 completed)" in proc.stdout


def test_summary_lists_a_job_folder_without_metrics(tmp_path):
    """A job that died before writing metrics (killed, out of memory) is still a row."""
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text("- run.name=a\n")
    report = summarize(tmp_path)
    rows = _csv(tmp_path / SUMMARY_CSV)
    assert [r["status"] for r in rows] == ["no metrics"]
    assert "best: none (no job completed)" in report
    assert not (tmp_path / THROUGHPUT_PNG).exists()


def test_a_job_with_other_ray_settings_restarts_the_shared_ray(tmp_path):
    proc = run_cli(
        "-m",
        "~predictor",
        "source=items",
        "ray.num_cpus=1,2",
        "run.progress=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _metrics(tmp_path)
    assert [m["cluster"]["CPU"] for m in metrics] == [1.0, 2.0]
    assert [m["ray"]["started_for_job"] for m in metrics] == [True, True]


def test_stage_configs_still_reject_target_while_the_callback_uses_it():
    from pipeline.app.main import run_with_overrides
    from pipeline.contract.errors import ConfigError

    with pytest.raises(ConfigError, match="_target_ is not allowed") as caught:
        run_with_overrides(["sink=show", "+predictor.params._target_=os.system"])
    assert caught.value.key == "predictor.params._target_"


def test_metrics_and_sweep_modules_import_neither_hydra_nor_ray():
    """Only the command line knows Hydra; the summary is plain Python (matplotlib on demand)."""
    import subprocess
    import sys

    code = (
        "import sys, pipeline.app.sweep, pipeline.app.metrics; "
        "print(sorted(m for m in ('hydra', 'omegaconf', 'ray', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _job(root: Path, num: int, value: int, started: bool, **figures) -> None:
    """A job folder of a sweep over ``batch_size`` with the given figures (as a run writes)."""
    metrics = {
        "status": "completed",
        "job": {"num": num, "overrides": [f"{BATCH_KEY}={value}"]},
        "rows_out": 300,
        "rows_per_s": None,
        "steady_rows_per_s": None,
        "wall_s": 20.0,
        "job_s": 15.0,
        "ray": {"started_for_job": started},
        **figures,
    }
    write_metrics(root / str(num), metrics)


def test_the_job_that_started_ray_is_not_best_and_the_summary_says_why(tmp_path):
    # job 0 paid Ray's start-up, yet its steady figure (few rows, short span) looks best
    _job(tmp_path, 0, 16, True, rows_per_s=7.0, steady_rows_per_s=900.0)
    _job(tmp_path, 1, 64, False, rows_per_s=25.9)
    _job(tmp_path, 2, 256, False, rows_per_s=21.0)
    report = summarize(tmp_path)
    assert f"best: 25.9 rows/s of the whole job with {BATCH_KEY}=64" in report
    assert "note: job 0 started Ray" in report
    assert f"({BATCH_KEY}=16,64,256,16)" in report
    markdown = (tmp_path / SUMMARY_MD).read_text()
    assert f"Best: 25.9 rows/s of the whole job with `{BATCH_KEY}=64`" in markdown
    assert "Note: job 0 started Ray" in markdown
    rows = _csv(tmp_path / SUMMARY_CSV)
    assert [r["ray"] for r in rows] == ["started", "reused", "reused"]


def test_jobs_are_compared_by_one_figure(tmp_path):
    """A steady rate is compared only with steady rates: one job without it, and all are
    compared by their whole-job rows/s."""
    _job(tmp_path, 0, 16, False, rows_per_s=10.0, steady_rows_per_s=40.0, steady_span_s=12.0)
    _job(tmp_path, 1, 64, False, rows_per_s=30.0)
    assert "best: 30.0 rows/s of the whole job" in summarize(tmp_path)
    _job(tmp_path, 1, 64, False, rows_per_s=30.0, steady_rows_per_s=35.0, steady_span_s=15.0)
    assert "best: 40.0 rows/s after the first output" in summarize(tmp_path)


def test_the_plot_names_what_it_draws(tmp_path):
    pytest.importorskip("matplotlib")
    _job(tmp_path, 0, 16, True, rows_per_s=7.0)
    _job(tmp_path, 1, 64, False, rows_per_s=25.9)
    _job(tmp_path, 2, 256, False, rows_per_s=21.0)
    (ax,) = throughput_figure(collect(tmp_path)).axes
    assert ax.get_ylabel() == "rows/s of the whole job"
    assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "started Ray (not compared)" in legend and "whole job" not in legend
    solid = [line for line in ax.get_lines() if line.get_markerfacecolor() != "none"]
    assert [list(line.get_ydata()) for line in solid] == [[25.9, 21.0]]

    for num, value, steady in ((1, 64, 30.0), (2, 256, 28.0)):
        _job(tmp_path, num, value, False, rows_per_s=20.0, steady_rows_per_s=steady,
             steady_span_s=12.0)  # fmt: skip
    (ax,) = throughput_figure(collect(tmp_path)).axes
    assert ax.get_ylabel() == "rows/s after the first output"
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in dashed] == [[20.0, 20.0]]
    assert "whole job" in [t.get_text() for t in ax.get_legend().get_texts()]
