"""Every run measures itself: metrics.json, the last line, fingerprints, released actors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat

import pytest

from pipeline.app.main import run_with_overrides
from pipeline.app.metrics import (
    METRICS_FILE,
    STEADY_MIN_S,
    mask_overrides,
    sentence,
    stage_figures,
    steady_rate,
    write_metrics,
)
from pipeline.plan.planner import plan_job

TEXTS = [f"sentence number {i} about nothing much" for i in range(12)]
ITEMS = "source.params.items=[" + ",".join(f"'{t}'" for t in TEXTS) + "]"
JOB = ["source=items", "source.params.column=text", ITEMS, "predictor.stage.batch_size=4"]


def _plan(overrides: list[str]):
    from pipeline.app.main import compose

    return plan_job(compose(["sink=show", *overrides]), inspect=False)


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    """One real job (12 sentences, all-MiniLM-L6-v2) run in-process with a metrics folder."""
    folder = tmp_path_factory.mktemp("run")
    out = folder / "predictions"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = run_with_overrides([*JOB, f"sink.params.path={out}"], output_dir=folder)
    # Read right when the run returns: the next job of a sweep would start now.
    resources = _live_model_actors(ray_session)
    metrics = json.loads((folder / METRICS_FILE).read_text())
    return result, metrics, resources, folder, printed.getvalue()


def test_metrics_json_counts_rows_in_and_out(finished):
    _, metrics, _, _, _ = finished
    assert metrics["status"] == "completed"
    assert metrics["rows_in"] == metrics["rows_out"] == len(TEXTS)


def test_metrics_json_times_the_job_and_its_first_output(finished):
    _, metrics, _, _, _ = finished
    assert 0 < metrics["first_output_s"] <= metrics["job_s"] <= metrics["wall_s"]
    assert metrics["rows_per_s"] == pytest.approx(metrics["rows_out"] / metrics["job_s"], rel=0.01)


def test_metrics_json_has_each_stage_time_and_rows_under_bulkinfers_keys(finished):
    _, metrics, _, _, _ = finished
    stages = {s["name"]: s for s in metrics["stages"]}
    model = stages["predictor"]
    assert model["operator"] == "MapBatches(SentenceEmbedding)"  # Ray Data's name, kept beside
    assert model["rows"] == len(TEXTS)
    assert model["time_s"] > 0
    keys = {part for name in stages for part in name.split(" + ")}
    assert keys <= {"source", "predictor", "sink"}, stages
    assert "source" in keys


def test_metrics_json_is_readable_like_the_outputs(finished):
    _, _, _, folder, _ = finished
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE((folder / METRICS_FILE).stat().st_mode)
    assert mode == 0o666 & ~umask
    assert not [p for p in folder.iterdir() if p.name.startswith(".metrics-")]


def test_metrics_json_has_driver_peak_memory_fingerprint_and_versions(finished):
    result, metrics, _, _, _ = finished
    assert metrics["driver_peak_rss_bytes"] > 10 * 2**20
    assert re.fullmatch(r"[0-9a-f]{16}", metrics["fingerprint"])
    versions = metrics["versions"]
    assert versions["bulkinfer"] and versions["ray"]
    assert versions["plugins"]["predictor:sentence_embedding"]["distribution"] == "bulkinfer"
    assert {"sentence-transformers", "torch", "transformers"} <= set(versions["libraries"])
    assert metrics["output"] == result.output


def test_last_line_says_the_same_in_one_sentence(finished):
    _, metrics, _, folder, printed = finished
    line = printed.strip().splitlines()[-1]
    assert line.startswith(f"bulkinfer: {len(TEXTS)} rows in, {len(TEXTS)} rows out in ")
    assert re.search(r"\(\d[\d,.]* rows/s; first rows after ", line), line
    assert "first rows after" in line and "driver peak" in line
    assert str(folder / METRICS_FILE) in line
    assert line == sentence(metrics, folder / METRICS_FILE)


def _figures(**given):
    base = {
        "rows_in": 300,
        "rows_out": 300,
        "rows_done": 300,
        "job_s": 30.0,
        "wall_s": 35.0,
        "rows_per_s": 10.0,
        "first_output_s": 5.0,
        "steady_rows_per_s": None,
        "steady_span_s": None,
        "driver_peak_rss_bytes": 200 * 2**20,
        "output": "/data/out",
    }
    return {**base, **given}


def test_the_line_gives_a_steady_rate_only_with_the_span_it_was_measured_over():
    line = sentence(_figures(steady_rows_per_s=11.5, steady_span_s=25.0))
    assert "first rows after 5.0 s, then 11.5 rows/s over the last 25.0 s" in line
    assert "over the last" not in sentence(_figures())


def test_a_steady_rate_needs_a_long_span_and_most_of_the_rows():
    # 10 s job, first output at 9.8 s: 0.2 s say nothing about the job
    assert steady_rate(300, 10.0, 9.8, 0) is None
    # a long span in which few rows came out (most came with the first output)
    assert steady_rate(1000, 60.0, 20.0, 900) is None
    rate, span = steady_rate(1000, 60.0, 20.0, 100)
    assert span == 40.0 and rate == pytest.approx(900 / 40.0)
    assert steady_rate(1000, 20.0 + STEADY_MIN_S - 0.1, 20.0, 0) is None
    assert steady_rate(None, 60.0, 20.0, 0) is None


def test_after_a_resume_the_line_counts_the_rows_of_this_run():
    metrics = _figures(
        rows_in=5000, rows_out=5000, rows_done=1000, rows_resumed=4000, rows_per_s=1000 / 35.2
    )
    line = sentence(metrics)
    assert "5,000 rows in, 5,000 rows out (1,000 by this run, the rest by the run it resumed)" in (
        line
    )
    assert "28.4 rows/s of this run's rows" in line


def test_an_output_appended_to_says_which_rows_earlier_runs_wrote():
    appended = sentence(_figures(rows_in=5000, rows_out=5000, rows_done=1000, rows_resumed=0))
    assert "(1,000 by this run, the rest by earlier runs appended to)" in appended
    both = sentence(_figures(rows_in=5000, rows_out=5000, rows_done=1000, rows_resumed=500))
    assert "(1,000 by this run, 500 by the run it resumed, the rest by earlier runs)" in both


def test_one_row_is_one_row_and_small_rates_keep_their_digits():
    line = sentence(_figures(rows_in=2, rows_out=1, rows_done=1, rows_per_s=1 / 25.0))
    assert line.startswith("bulkinfer: 2 rows in, 1 row out in 30.0 s (0.04 rows/s;")
    assert "12,346 rows/s" in sentence(_figures(rows_per_s=12345.6))


def test_ray_operators_are_named_by_the_stage_keys_of_the_plan():
    plan = _plan([*JOB, "preprocessors=[filter,filter]"])
    operators = [
        {"name": "FromArrow", "rows": 12, "time_s": 0.01},
        {"name": "MapBatches(_identity)->StreamingRepartition[num_rows_per_block=3]", "rows": 12,
         "time_s": 0.02},
        {"name": "MapBatches(Filter)->MapBatches(Filter)", "rows": 10, "time_s": 0.5},
        {"name": "MapBatches(SentenceEmbedding)", "rows": 10, "time_s": 2.0},
        {"name": "Write(ParquetDatasink)", "rows": 2, "time_s": 0.3},  # a row per write task
        {"name": "Zip", "rows": 10, "time_s": 0.1},
    ]  # fmt: skip
    named = stage_figures(operators, plan, written=10)
    assert [(s["name"], s["rows"], s["time_s"]) for s in named] == [
        ("source", 12, 0.03),
        ("preprocessors[0] + preprocessors[1]", 10, 0.5),
        ("predictor", 10, 2.0),
        ("sink", 10, 0.3),
        ("Zip", 10, 0.1),
    ]
    assert named[0]["operator"].startswith("FromArrow; MapBatches(_identity)")
    fused = [{"name": "ReadParquet->MapBatches(Filter)->Write(JournaledDatasink)", "rows": 3}]
    assert (
        stage_figures(fused, _plan([*JOB, "preprocessors=[filter]"]), written=40)[0]["rows"] == 40
    )  # rows written, not the three write tasks' results


def test_metrics_json_is_written_with_the_umask_not_owner_only(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_metrics(tmp_path, {"status": "completed"})
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text()) == {"status": "completed"}


def _live_model_actors(ray) -> list[str]:
    from ray._private import state  # the GCS actor table; the state API needs a dashboard

    job = ray.get_runtime_context().get_job_id()
    return [
        a["ActorClassName"]
        for a in state.actors().values()
        if a["JobID"] == job
        and a["State"] != "DEAD"
        and a["ActorClassName"].startswith("MapWorker")
    ]


def test_job_actors_are_released_when_the_run_returns(finished):
    _, _, live_actors, _, _ = finished
    assert live_actors == []


def test_actors_are_released_after_a_sink_that_reads_only_part_of_the_data(ray_session):
    """The show sink stops after a few rows; Ray Data would keep the pool until a GC."""
    with contextlib.redirect_stdout(io.StringIO()):
        run_with_overrides([*JOB, "sink=show", "sink.params.limit=2"])
    assert _live_model_actors(ray_session) == []


def test_failed_run_writes_its_error_and_masks_secrets(tmp_path):
    overrides = [
        *JOB,
        "predictor.stage.batch_size=0",
        "+ray.runtime_env.env_vars.API_TOKEN=s3cr3t-value",
        "sink=show",
    ]
    with pytest.raises(Exception, match="predictor.stage.batch_size"):
        run_with_overrides(overrides, output_dir=tmp_path)
    text = (tmp_path / METRICS_FILE).read_text()
    metrics = json.loads(text)
    assert metrics["status"] == "failed"
    assert metrics["error"].startswith("predictor.stage.batch_size:")
    assert "s3cr3t-value" not in text
    assert "+ray.runtime_env.env_vars.API_TOKEN=***" in metrics["job"]["overrides"]


def test_dry_run_writes_metrics_with_status_dry_run(tmp_path):
    run_with_overrides([*JOB, "sink=show", "run.dry_run=true"], output_dir=tmp_path)
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    assert metrics["status"] == "dry_run"
    assert metrics["rows_out"] is None and metrics["fingerprint"]


def test_mask_overrides_masks_only_secret_looking_keys():
    assert mask_overrides(["a.password=x", "predictor.stage.batch_size=8", "~predictor"]) == [
        "a.password=***",
        "predictor.stage.batch_size=8",
        "~predictor",
    ]


def test_fingerprint_ignores_spelled_out_defaults_and_where_the_job_runs():
    base = _plan(JOB).fingerprint
    assert _plan([*JOB, "predictor.params.normalize=false"]).fingerprint == base
    assert _plan([*JOB, "ray=cluster", "run.progress=false"]).fingerprint == base


def test_fingerprint_follows_what_changes_the_output_not_how_it_runs():
    base = _plan(JOB).fingerprint
    assert _plan([*JOB, "predictor.params.normalize=true"]).fingerprint != base
    assert _plan([*JOB, "+predictor.stage.on_error=skip"]).fingerprint != base
    assert _plan([*JOB, "predictor.stage.batch_size=8"]).fingerprint == base


def test_rows_are_counted_when_ray_data_fuses_the_read_into_the_write(ray_session, tmp_path):
    """Parquet in, Parquet out, no model: no operator reports data rows but the write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "in"
    data.mkdir()
    for part in range(3):
        pq.write_table(
            pa.table({"text": [f"row {part}-{i}" for i in range(5)]}), data / f"{part}.parquet"
        )
    overrides = [
        "~predictor",
        "source=parquet",
        f"source.params.path={data}",
        f"sink.params.path={tmp_path / 'out'}",
        "run.progress=false",
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        run_with_overrides(overrides, output_dir=tmp_path)
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    assert metrics["rows_in"] == metrics["rows_out"] == 15
