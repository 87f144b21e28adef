"""The job's progress line on stderr, in rows, and no Ray noise by default.

In this process (local Ray, 2 CPUs): 6 Parquet files of 5 rows through ``kit_step`` (a test
plugin that sleeps per batch), so write tasks record their rows one after another. As a user
runs it (``python -m pipeline``): what stderr holds with the defaults and with ``run.ray_logs``,
and what an 80-column terminal (a pseudo-terminal) shows.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, run_cli
from kit import install_kit, kit_env

from pipeline.app.main import run_with_overrides
from pipeline.execute import progress_line

FILES, ROWS_PER_FILE = 6, 5
N = FILES * ROWS_PER_FILE
LINE = re.compile(r"^bulkinfer: (\d+) of (\d+) rows written \((\d+)%\)")
#: What Ray Data prints of its own: progress bars or their log blocks, execution plans.
RAY_NOISE = ("Running Dataset", "Total Progress", "Starting execution", "Execution plan of")
#: What else Ray Data prints on a terminal: its bars' and its operators' notices, a tip.
TERMINAL_NOISE = (
    *RAY_NOISE,
    "Truncating long operator name",
    "A new progress UI is available",
    "Progress bars for operators disabled",
    "Tip: Use `take_batch()`",
)
#: A C++ error line of Ray's (``[time E pid tid] core_worker.cc:...``).
CPP_ERROR = re.compile(r"^\[[^\]]* E \d+ \d+\] core_worker\.cc:\d+: (.*)$")
#: The one such line a job with an actor pool prints: Ray Data passes every pool actor its
#: context and its function as object refs and lets it restart, and Ray's core worker logs that
#: combination as an error (ray-project/ray#53727) at ERROR, the level of real C++ errors; see
#: docs/metrics.md#progress.
ACTOR_ARGS_NOTICE = "has constructor arguments in the object store and max_restarts > 0"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


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


@pytest.mark.subprocess
def test_defaults_print_the_line_and_no_ray_progress_bars(tmp_path):
    proc = run_cli(
        "source=items", "~predictor", f"sink.params.path={tmp_path / 'out'}", "ray.num_cpus=2"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in RAY_NOISE:
        assert noise not in proc.stderr + proc.stdout, noise
    assert "bulkinfer: 2 of 2 rows written (100%)" in proc.stderr


@pytest.mark.subprocess
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


def run_cli_in_terminal(*args: str, columns: int = 80, timeout: float = 300) -> tuple[int, str]:
    """Run ``python -m pipeline ARGS`` in a pseudo-terminal ``columns`` wide, as a user at a
    terminal would; returns the exit status and what the screen received (``\\n`` as ``\\r\\n``)."""
    env = {**os.environ, **kit_env(), "HYDRA_FULL_ERROR": "0", "TERM": "xterm"}
    env.pop("COLUMNS", None)  # the width is the terminal's
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        stdin=side,
        stdout=side,
        stderr=side,
        cwd=ROOT,
        env=env,
        start_new_session=True,  # the terminal is the job's own
    )
    os.close(side)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:  # exited; a Ray process may still hold the terminal
                    break
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: every process let go of the terminal
                break
            if not chunk:
                break
            screen += chunk
        else:
            proc.kill()
            pytest.fail(f"the job ran past {timeout} s: {screen.decode(errors='replace')[-3000:]}")
        return proc.wait(timeout=30), screen.decode(errors="replace")
    finally:
        os.close(main)


def _check_no_ray_noise(screen: str) -> None:
    for noise in TERMINAL_NOISE:
        assert noise not in screen, noise
    errors = [m.group(1) for m in map(CPP_ERROR.match, screen.split("\r\n")) if m]
    assert all(ACTOR_ARGS_NOTICE in e for e in errors), errors


@pytest.mark.subprocess
def test_a_terminal_shows_one_line_redrawn_in_place_within_80_columns(inputs, tmp_path):
    status, screen = run_cli_in_terminal(
        "source=parquet",
        f"source.params.path={inputs}",
        "run.unit_bytes=1",
        "predictor.type=kit_step",
        "+predictor.params.sleep_s=0.4",
        f"sink.params.path={tmp_path / 'out'}",
        "ray.num_cpus=2",
    )
    screen = ANSI.sub("", screen)
    assert status == 0, screen[-3000:]
    _check_no_ray_noise(screen)
    # The bar (run.progress=auto on a terminal): draws that each start with a carriage return
    # and stay on one row of the screen, ending at the total.
    rows = [row for row in screen.split("\r\n") if "rows written" in row]
    draws = [part for row in rows for part in row.split("\r") if LINE.match(part)]
    assert max(len(row.split("\r")) - 1 for row in rows) >= 2, rows  # redrawn in place
    assert rows[-1].startswith("\rbulkinfer: "), rows
    assert all(len(draw) <= 80 for draw in draws), [d for d in draws if len(d) > 80]
    assert LINE.match(draws[-1]).groups() == (str(N), str(N), "100"), draws[-1]
    assert "rows written" not in screen.split(f"{N} of {N} rows written (100%)")[-1]  # last


@pytest.mark.subprocess
def test_a_terminal_shows_the_show_sinks_rows_and_no_ray_tip(tmp_path):
    status, screen = run_cli_in_terminal(
        "source=items", "~predictor", "sink=show", "ray.num_cpus=2"
    )
    screen = ANSI.sub("", screen)
    assert status == 0, screen[-3000:]
    _check_no_ray_noise(screen)
    assert "{'data': 'Complete this'}" in screen
