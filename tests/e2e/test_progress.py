"""The job's progress line on stderr, in rows, and no Ray noise by default.

In this process (local Ray, 2 CPUs): 6 Parquet files of 5 rows through ``kit_step`` (a test
plugin that sleeps per batch), so write tasks record their rows one after another. As a user
runs it (``python -m pipeline``): what stderr holds with the defaults and with ``run.ray_logs``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from kit import install_kit

from pipeline.app.main import run_with_overrides
from pipeline.execute import progress_line

FILES, ROWS_PER_FILE = 6, 5
N = FILES * ROWS_PER_FILE
LINE = re.compile(r"^bulkinfer: (\d+) of (\d+) rows written \((\d+)%\)")
#: What Ray Data prints of its own: progress bars or their log blocks, execution plans.
RAY_NOISE = ("Running Dataset", "Total Progress", "Starting execution", "Execution plan of")


@pytest.fixture(scope="module", autouse=True)
def _kit():
    install_kit()  # before ray_session starts Ray, so its workers import the kit too


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("input")
    for f in range(FILES):
        ids = list(range(f * ROWS_PER_FILE, (f + 1) * ROWS_PER_FILE))
        pq.write_table(pa.table({"id": ids}), folder / f"part-{f}.parquet")
    return folder


def _job(inputs: Path, out: Path, *overrides: str):
    return run_with_overrides(
        [
            "source=parquet",
            f"source.params.path={inputs}",
            "run.unit_bytes=1",  # one work unit per file
            "predictor.type=kit_step",
            "+predictor.params.sleep_s=0.4",
            f"sink.params.path={out}",
            *overrides,
        ]
    )


def _counts(err: str) -> list[tuple[int, int]]:
    return [
        (int(m.group(1)), int(m.group(2)))
        for m in (LINE.match(line) for line in err.splitlines())
        if m
    ]


def test_log_mode_prints_rising_row_counts_ending_at_the_total(
    ray_session, inputs, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(progress_line, "LOG_EVERY_S", 0.2)
    result = _job(inputs, tmp_path / "out", "run.progress=log")
    assert result.rows_out == N
    counts = _counts(capsys.readouterr().err)
    assert counts[-1] == (N, N)
    assert {total for _, total in counts} == {N}
    written = [rows for rows, _ in counts]
    assert written == sorted(written)
    assert len(set(written)) >= 2, counts  # lines while the job ran, not only the last


def test_off_prints_no_progress_line(ray_session, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_line, "LOG_EVERY_S", 0.2)
    result = _job(inputs, tmp_path / "out", "run.progress=off")
    assert result.rows_out == N
    assert "rows written" not in capsys.readouterr().err


def test_a_source_that_cannot_count_shows_rows_and_rate_only(ray_session, tmp_path, capsys):
    # items is counted; a JSON source is not (its rows are known only once read).
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"id": {i}}}\n' for i in range(7)))
    result = run_with_overrides(
        [
            "source=json",
            f"source.params.path={rows}",
            "~predictor",
            f"sink.params.path={tmp_path / 'out'}",
            "run.progress=log",
        ]
    )
    assert result.rows_out == 7
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "rows written" in ln]
    assert re.fullmatch(r"bulkinfer: 7 rows written, [\d.,]+ rows/s", lines[-1]), lines


def test_defaults_print_the_line_and_no_ray_progress_bars(tmp_path):
    proc = run_cli(
        "source=items", "~predictor", f"sink.params.path={tmp_path / 'out'}", "ray.num_cpus=2"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in RAY_NOISE:
        assert noise not in proc.stderr + proc.stdout, noise
    assert "bulkinfer: 2 of 2 rows written (100%)" in proc.stderr


def test_ray_logs_shows_ray_datas_own_progress_again(tmp_path):
    proc = run_cli(
        "source=items",
        "~predictor",
        f"sink.params.path={tmp_path / 'out'}",
        "ray.num_cpus=2",
        "run.ray_logs=true",
        "run.progress=off",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "Running Dataset" in output and "Starting execution" in output
    assert "rows written" not in output
