"""Every run measures itself: metrics.json, the last line, fingerprints, released actors."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from pipeline.app.main import run_with_overrides
from pipeline.app.metrics import METRICS_FILE, mask_overrides
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


def test_metrics_json_has_each_stage_time_and_rows_from_ray_data(finished):
    _, metrics, _, _, _ = finished
    stages = {s["name"]: s for s in metrics["stages"]}
    model = stages["MapBatches(SentenceEmbedding)"]
    assert model["rows"] == len(TEXTS)
    assert model["time_s"] > 0


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
    assert f"{metrics['rows_per_s']:,.1f} rows/s" in line
    assert "first rows after" in line and "driver peak" in line
    assert str(folder / METRICS_FILE) in line


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
