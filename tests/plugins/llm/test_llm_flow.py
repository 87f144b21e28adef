"""openai_chat keeps every request slot busy across map batches and never pays twice for one
request: real jobs on the module's local Ray against a loopback server that answers after a
log-normal, prompt-dependent wait (``tests/latency_server.py``) and counts what it was sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from kit import job_config
from latency_server import Latency, LatencyServer
from omegaconf import OmegaConf

from pipeline.app.metrics import JobInfo

pytestmark = pytest.mark.ray

FAST = Latency(median_s=0.05, sigma=0.9, min_s=0.01, max_s=1.0)


@pytest.fixture
def server():
    with LatencyServer(FAST) as server:
        yield server


def job(server: LatencyServer, texts: list[str], out: Path, **params: Any) -> dict[str, Any]:
    stage = params.pop("stage", {})
    return job_config(
        [{"id": i, "text": t} for i, t in enumerate(texts)],
        predictor={
            "type": "openai_chat",
            "params": {"base_url": server.base_url, "model": "latency-model", **params},
            "stage": stage,
        },
        sink={"type": "parquet", "params": {"path": str(out)}},
    )


def run(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The job as the command line runs it; returns its metrics.json."""
    from pipeline.app.main import run as run_job

    run_job(OmegaConf.create(config), JobInfo(output_dir=str(folder)))
    return json.loads((folder / "metrics.json").read_text())


def test_requests_stay_in_flight_across_map_batches_up_to_the_configured_count(
    ray_session, server, tmp_path
):
    """Batches of 4 rows and 12 requests in flight: one batch at a time could never have more
    than 4 requests out; the actor works on several batches at once, so the server sees all
    12 slots used, and never more."""
    texts = [f"prompt {i}" for i in range(240)]
    config = job(
        server, texts, tmp_path / "out", max_concurrent_requests=12, stage={"batch_size": 4}
    )
    run(config, tmp_path / "run")
    stats = server.snapshot()
    assert stats["peak_in_flight"] == 12
    assert stats["requests"] == 240
    table = pq.read_table(tmp_path / "out").sort_by("id")
    assert table.column("output").to_pylist() == [f"answer to {t[:40]}" for t in texts]


def test_identical_requests_are_sent_once_and_the_summary_says_what_that_saved(
    ray_session, server, tmp_path
):
    texts = [f"same question {i % 5}" for i in range(40)]
    metrics = run(job(server, texts, tmp_path / "out", stage={"batch_size": 8}), tmp_path / "run")
    assert server.snapshot()["requests"] == 5
    table = pq.read_table(tmp_path / "out").sort_by("id")
    assert table.column("output").to_pylist() == [f"answer to {t[:40]}" for t in texts]
    counters = metrics["counters"]["predictor"]
    assert counters["requests"] == 5 and counters["rows_ok"] == 40
    reused = counters["rows_from_journal"] + counters["requests_deduplicated"]
    assert reused == 35
    (summary,) = metrics["summaries"]
    assert "35 rows answered without a request of their own" in summary


def test_without_dedupe_every_row_gets_its_own_request(ray_session, server, tmp_path):
    texts = [f"same question {i % 5}" for i in range(40)]
    run(job(server, texts, tmp_path / "out", dedupe=False), tmp_path / "run")
    assert server.snapshot()["requests"] == 40
    assert pq.read_table(tmp_path / "out").num_rows == 40
