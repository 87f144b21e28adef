"""The command line as a user meets it: the default job, dry runs, and errors without tracebacks."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.subprocess  # every test here runs the command line


@pytest.fixture(scope="module")
def default_job(tmp_path_factory):
    """`python -m pipeline` with no arguments (only the Hydra run folder moved to a temp dir)."""
    from conftest import run_cli

    run_dir = tmp_path_factory.mktemp("run")
    done = run_cli(f"hydra.run.dir={run_dir}")
    return done, run_dir


def test_the_default_job_embeds_every_sample_sentence(default_job):
    done, run_dir = default_job
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(run_dir / "predictions")
    assert table.num_rows == 300
    assert {"id", "text", "embedding"} <= set(table.column_names)
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert vectors.shape == (300, 384)
    assert np.isfinite(vectors).all()


def test_identical_texts_get_identical_embeddings(default_job):
    _, run_dir = default_job
    rows = pq.read_table(run_dir / "predictions").to_pylist()
    by_text: dict[str, list] = {}
    for row in rows:
        by_text.setdefault(row["text"], []).append(np.asarray(row["embedding"]))
    repeated = [vs for vs in by_text.values() if len(vs) > 1]
    assert repeated, "the sample ships one sentence three times"
    for vectors in repeated:
        for other in vectors[1:]:
            np.testing.assert_allclose(vectors[0], other, rtol=1e-5, atol=1e-6)
    distinct = [vs[0] for vs in by_text.values()][:2]
    assert not np.allclose(distinct[0], distinct[1])


def test_the_default_job_ends_with_where_how_many_and_how_fast(default_job):
    done, run_dir = default_job
    last = done.stdout.strip().splitlines()[-1]
    assert "300 rows in, 300 rows out" in last
    assert "rows/s" in last
    assert str(run_dir / "predictions") in last


def test_a_dry_run_prints_the_plan_and_starts_nothing(cli):
    done = cli("run.dry_run=true")
    assert done.returncode == 0, done.stderr
    assert "predictor: predictor 'sentence_embedding'" in done.stdout
    assert "batch_size=64" in done.stdout
    assert "ray" not in done.stderr.lower() or "Started a local Ray" not in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["predictor.stage.batch_size=0"],
            "predictor.stage.batch_size: must be an integer greater than 0, 'auto' or null (got 0)",
        ),
        (["predictor.type=sentence_embeding"], "Did you mean 'sentence_embedding'?"),
        (["source=parquet"], "source.params.path"),
        (
            ["predictor.stage.num_gpus=1", "predictor.stage.batch_size=null"],
            "predictor.stage: Value error, batch_size is required",
        ),
        (["predictor.stage.num_gpus=1"], "predictor.stage.num_gpus: asks for 1 GPU per worker"),
        (
            ["+predictor.params.modle=x"],
            "predictor.params.modle: unknown key (did you mean 'model'?); allowed keys: model",
        ),
    ],
)
def test_a_bad_config_exits_2_with_the_key_and_no_traceback(cli, args, says):
    done = cli(*args)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("sweep", [False, True], ids=["one-job", "sweep"])
def test_ctrl_c_after_the_output_is_published_lets_the_job_finish(tmp_path, sweep):
    """Ctrl-C (SIGINT to the job's process group, as a terminal sends it) once the output is
    published no longer interrupts: the job is done, so it says it is finishing, ends with its
    usual line and status 0, and metrics.json says ``completed`` (an "interrupted ... resume"
    line here would send the user to resume a finished job, which an appending sink would then
    write twice). In a sweep the job finishes so, and the sweep stops after it (status 130)."""
    import json
    import os
    import signal
    import time

    from contracts import kill_session, start_session, wait_for

    from pipeline.contract.halts import HALT_ENV

    out, flag = tmp_path / "out", tmp_path / "published"
    args = ["source=items", "~predictor", "run.progress=false", "ray.num_cpus=2"]
    if sweep:  # two jobs, one output each; the first is stopped
        args = ["-m", *args, f"sink.params.path={out},{tmp_path / 'second'}"]
        args += [f"hydra.sweep.dir={tmp_path / 'sweep'}"]
        run_dir = tmp_path / "sweep" / "0"
    else:
        args += [f"sink.params.path={out}", f"hydra.run.dir={tmp_path / 'run'}"]
        run_dir = tmp_path / "run"
    driver = start_session(args, {HALT_ENV: f"published:{flag}"}, capture=True)
    try:
        wait_for(driver, flag.exists, "the output was published")
        assert (out / "_SUCCESS").exists()
        os.killpg(driver.pid, signal.SIGINT)
        time.sleep(0.5)
        flag.unlink()  # the driver goes on from the halt point
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        kill_session(driver.pid)
    assert "bulkinfer: the output is published; finishing" in stderr
    assert "interrupted" not in stderr and "Traceback" not in stderr
    assert "2 rows in, 2 rows out" in stdout
    assert pq.read_table(out).num_rows == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    if sweep:
        assert driver.returncode == 130, stderr
        assert "bulkinfer: the sweep stops after job #0 (its output is published)" in stderr
        assert not (tmp_path / "second").exists(), "the sweep's next job did not run"
    else:
        assert driver.returncode == 0, stderr
