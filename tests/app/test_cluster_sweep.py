"""A sweep runs against an existing Ray cluster (``ray.address``) and leaves it running.

The module starts a one-node cluster of its own (Ray's ``Cluster`` test utility: a head node on a
free port, stopped by killing only the processes it started), with 3 CPUs so that its resources
are told apart from this 2-core machine's.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from pipeline.app.metrics import METRICS_FILE

pytestmark = [pytest.mark.subprocess, pytest.mark.server]  # `ray start`, then the command line

CLUSTER_CPUS = 3
TEXTS = [f"sentence number {i}" for i in range(8)]
ITEMS = "source.params.items=[" + ",".join(f"'{t}'" for t in TEXTS) + "]"


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    head = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": CLUSTER_CPUS, "include_dashboard": False},
    )
    yield head
    head.shutdown()


@pytest.fixture(scope="module")
def cluster_sweep(cluster, tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("cluster_sweep")
    proc = run_cli(
        "-m",
        "ray=cluster",
        f"ray.address={cluster.address}",
        "source=items",
        "source.params.column=text",
        ITEMS,
        "predictor.stage.batch_size=2,8",
        "run.progress=false",
        f"hydra.sweep.dir={sweep_dir}",
    )
    metrics = [json.loads((sweep_dir / str(n) / METRICS_FILE).read_text()) for n in (0, 1)]
    return proc, sweep_dir, metrics


def test_sweep_jobs_run_on_the_existing_cluster(cluster, cluster_sweep):
    proc, _, metrics = cluster_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [m["status"] for m in metrics] == ["completed", "completed"]
    assert [m["rows_out"] for m in metrics] == [len(TEXTS), len(TEXTS)]
    for m in metrics:
        assert m["ray"]["address"] == cluster.address
        assert m["cluster"]["CPU"] == CLUSTER_CPUS


def test_sweep_jobs_share_one_connection_to_the_cluster(cluster_sweep):
    _, _, metrics = cluster_sweep
    assert [m["ray"]["started_for_job"] for m in metrics] == [True, False]


def test_cluster_keeps_running_after_the_sweep_disconnects(cluster, cluster_sweep):
    assert cluster.head_node.remaining_processes_alive()


def test_sweep_on_a_cluster_ends_in_a_summary(cluster_sweep):
    proc, sweep_dir, _ = cluster_sweep
    assert (sweep_dir / "summary.csv").read_text().count("\n") == 3  # header + 2 jobs
    assert "best: " in proc.stdout
