"""The job's environment (``MapStage.env_vars``, e.g. the model hubs' offline switches for a
model in a local folder) reaches every task and actor of a job on a real Ray, and reads and task
stages that carry it still fuse into one task."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kit import install_kit

from pipeline.plan.model import with_env

pytestmark = pytest.mark.ray

VARIABLE = "BULKINFER_TEST_OFFLINE"


@pytest.fixture(scope="module", autouse=True)
def _kit():
    install_kit()  # before ray_session starts Ray, so its workers import the kit too


def test_the_jobs_environment_reaches_its_task_stages_and_actors(ray_session, tmp_path):
    from pipeline.execute.runner import run_job

    pq.write_table(pa.table({"id": list(range(12))}), tmp_path / "in.parquet")
    assert VARIABLE not in os.environ
    config = {
        "source": {"type": "parquet", "params": {"path": str(tmp_path / "in.parquet")}},
        "preprocessors": [
            {
                "type": "kit_step",
                "params": {"env": {VARIABLE: "1"}, "record_env": {"task": VARIABLE}},
            }
        ],
        "predictor": {
            "type": "kit_step",
            "params": {"output_column": "out2", "record_env": {"actor": VARIABLE}},
        },
        "sink": {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
        "run": {"progress": False},
    }
    run_job(config)
    out = pq.read_table(tmp_path / "out")
    assert out.column("task").to_pylist() == ["1"] * 12  # the read's fused task stage
    assert out.column("actor").to_pylist() == ["1"] * 12  # the other stage's actor pool
    assert sorted(out.column("id").to_pylist()) == list(range(12))


def test_a_read_and_a_task_stage_that_carry_the_environment_fuse(ray_session, tmp_path):
    import ray.data

    pq.write_table(pa.table({"id": list(range(8))}), tmp_path / "in.parquet")
    reads = with_env({"num_cpus": 0.5}, {VARIABLE: "1"})  # what Plan.io() gives the read

    def value(batch):
        return {"id": batch["id"], "env": [os.environ.get(VARIABLE)] * len(batch["id"])}

    ds = ray.data.read_parquet(str(tmp_path / "in.parquet"), **reads)
    ds = ds.map_batches(value, **with_env({"num_cpus": 0.5}, {VARIABLE: "1"})).materialize()
    assert {row["env"] for row in ds.take_all()} == {"1"}
    assert "->MapBatches(value)" in ds.stats()  # one operator: the read fused with the stage
