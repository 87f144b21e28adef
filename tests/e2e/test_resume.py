"""A driver killed with SIGKILL half way resumes with ``run.resume=true``: every row exactly once.

The job runs as a user runs it (``python -m pipeline`` in its own process session). The test
watches the staging folder until some work units are committed, kills that session's processes
by their ids, and reruns the same command with ``run.resume=true``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from contracts import kill_session, run_killed_when, start_session, wait_for
from kit import kit_env

from pipeline.output.progress import UNIT_SHIFT
from pipeline.output.staging import STAGING_SUFFIX

pytestmark = pytest.mark.subprocess  # the command line, killed and run again

FILES, ROWS_PER_FILE = 6, 5
N = FILES * ROWS_PER_FILE


def _args(inp: Path, out: Path, log_dir: Path, *extra: str) -> list[str]:
    return [
        "source=parquet",
        f"source.params.path={inp}",
        "run.unit_bytes=1",  # one work unit per input file
        "predictor.type=kit_step",
        "+predictor.params.sleep_s=0.3",
        f"+predictor.params.log_dir={log_dir}",
        f"sink.params.path={out}",
        "run.progress=false",
        "ray.num_cpus=2",
        f"hydra.run.dir={out.parent / 'runs'}",
        *extra,
    ]


def _written_ids(staging: Path) -> set[int]:
    """The input ``id`` of every row the job's write-task records hold (one unit per file:
    row id ``unit << 40 | offset`` is id ``unit * ROWS_PER_FILE + offset``)."""
    done = set()
    for record in staging.glob("units/*.json"):
        for start, stop in json.loads(record.read_text())["ranges"]:
            for row in range(start, stop):
                done.add((row >> UNIT_SHIFT) * ROWS_PER_FILE + (row & ((1 << UNIT_SHIFT) - 1)))
    return done


def test_a_driver_killed_half_way_resumes_with_exactly_the_rows_of_a_clean_run(tmp_path):
    inp, out, log_dir = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    inp.mkdir()
    for f in range(FILES):
        ids = list(range(f * ROWS_PER_FILE, (f + 1) * ROWS_PER_FILE))
        pq.write_table(
            pa.table({"id": ids, "text": [f"row {i}" for i in ids]}), inp / f"{f}.parquet"
        )
    staging = Path(str(out) + STAGING_SUFFIX)
    run_killed_when(
        _args(inp, out, log_dir),
        lambda: len(list(staging.glob("units/*.json"))) >= 2,
        "two work units were recorded",
        env=kit_env(),
    )
    assert not out.exists(), "a killed run publishes nothing"
    done_ids = _written_ids(staging)
    assert 0 < len(done_ids) < N
    first_run_workers = set(log_dir.glob("init-*"))

    # Without run.resume the leftover work is not silently discarded or reused.
    plain = run_cli(*_args(inp, out, log_dir), env=kit_env(), timeout=300)
    assert plain.returncode == 2, plain.stderr
    assert "run.resume: an unfinished run of this job left its work" in plain.stderr

    # A changed predictor config cannot resume the old run: the message says what changed.
    changed = run_cli(
        *_args(inp, out, log_dir, "+predictor.params.output_column=other", "run.resume=true"),
        env=kit_env(),
        timeout=300,
    )
    assert changed.returncode == 2, changed.stderr
    assert "cannot resume: the config changed" in changed.stderr
    assert 'predictor.params.output_column: "out" -> "other"' in changed.stderr
    assert "Traceback" not in changed.stderr

    resumed = run_cli(*_args(inp, out, log_dir, "run.resume=true"), env=kit_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed: {len(done_ids)} rows were already written" in resumed.stdout

    ids = pq.read_table(out, columns=["id", "out"]).to_pydict()
    assert sorted(ids["id"]) == list(range(N)), "every row exactly once"
    assert sorted(ids["out"]) == [i * 10 for i in range(N)]
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert (manifest["rows_in"], manifest["rows_out"]) == (N, N)
    assert not staging.exists()

    # The resumed run ran exactly the rows no record held: the written ones were not redone.
    second_run = [p for p in log_dir.glob("init-*") if p not in first_run_workers]
    redone = set()
    for init in second_run:
        log = log_dir / f"ids-{init.name.split('-')[1]}.txt"
        redone |= {int(i) for i in log.read_text().split()} if log.exists() else set()
    assert redone == set(range(N)) - done_ids


@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_stops_the_job_with_one_line_and_a_resumable_staging_area(tmp_path, presses):
    """Ctrl-C in a terminal sends SIGINT to the job's whole process group: the job ends with
    status 130 and one line saying what is written; metrics.json says ``interrupted``; a
    second Ctrl-C ends the process at once. Either way ``run.resume=true`` finishes the job
    with every row exactly once."""
    inp, out, log_dir = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    inp.mkdir()
    for f in range(FILES):
        ids = list(range(f * ROWS_PER_FILE, (f + 1) * ROWS_PER_FILE))
        pq.write_table(
            pa.table({"id": ids, "text": [f"row {i}" for i in ids]}), inp / f"{f}.parquet"
        )
    staging = Path(str(out) + STAGING_SUFFIX)
    # A process group of its own, as a terminal's foreground job.
    driver = start_session(_args(inp, out, log_dir), kit_env(), capture=True)
    try:
        wait_for(driver, lambda: any(staging.glob("units/*.json")), "a work unit was recorded")
        for _ in range(presses):
            os.killpg(driver.pid, signal.SIGINT)
            time.sleep(0.2)
        _, stderr = driver.communicate(timeout=120)
    finally:
        kill_session(driver.pid)
    assert driver.returncode == 130, stderr
    if presses == 1:
        lines = [line for line in stderr.splitlines() if line.startswith("bulkinfer:")]
        assert len(lines) == 1, stderr
        assert lines[0].startswith("bulkinfer: interrupted: ")
        assert lines[0].endswith(
            f"of {N} rows written; run again with run.resume=true to finish"
        ), lines[0]
        assert "Traceback" not in stderr
        metrics = json.loads((out.parent / "runs" / "metrics.json").read_text())
        assert metrics["status"] == "interrupted"
        assert metrics["error"] == lines[0].removeprefix("bulkinfer: ")
    assert not out.exists(), "a stopped run publishes nothing"
    assert (staging / "job.json").exists(), "the staging area is kept"

    resumed = run_cli(*_args(inp, out, log_dir, "run.resume=true"), env=kit_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == list(range(N)), "every row exactly once"
