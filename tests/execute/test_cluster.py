"""The same job on an existing Ray cluster: a head and a worker node started on this machine.

The worker node has a custom resource (``worker_only``) that the predictor stage asks for, so the
stage can only run there. The cluster's processes do not have the test plugin package on their
path: the job ships it with ``ray.runtime_env.py_modules``, as a user ships code to a cluster.
The job connects once as a driver on a node (``ray.address=auto``) and once through Ray Client
(``ray://``).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from kit import KIT_DIR, kit_env

pytestmark = [pytest.mark.subprocess, pytest.mark.server]  # `ray start`, then the command line


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        client_port = s.getsockname()[1]
    saved = os.environ.get("PYTHONPATH")
    paths = [p for p in (saved or "").split(os.pathsep) if p and p != KIT_DIR]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)  # the nodes must not see the kit
    try:
        cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={
                "num_cpus": 1,
                "include_dashboard": False,
                "ray_client_server_port": client_port,
            },
        )
        worker = cluster.add_node(num_cpus=1, resources={"worker_only": 1})
        cluster.wait_for_nodes()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
    yield cluster, worker.node_id, f"ray://127.0.0.1:{client_port}"
    cluster.shutdown()  # stops the processes this fixture started


@pytest.mark.parametrize("connect", ["auto", "ray_client"])
def test_a_stage_pinned_to_a_custom_resource_runs_on_the_worker_node(cluster, tmp_path, connect):
    head_and_worker, worker_node, client_address = cluster
    if connect == "auto":  # a driver on a node of the cluster, found through RAY_ADDRESS
        how, env = ["ray=cluster"], {"RAY_ADDRESS": head_and_worker.address}
    else:  # from outside the cluster: the job runs as a task inside it
        how, env = ["ray=cluster", f"ray.address={client_address}"], {}
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(12)))
    out = tmp_path / "out"
    proc = run_cli(
        *how,
        f"+ray.runtime_env.py_modules=[{Path(KIT_DIR) / 'bulkinfer_testkit'}]",
        "source=json",
        f"source.params.path={rows}",
        "predictor.type=kit_step",
        "+predictor.params.record_node=true",
        "+predictor.stage.ray_remote_args={resources: {worker_only: 0.1}}",
        f"sink.params.path={out}",
        "run.progress=false",
        env={**kit_env(), **env},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pq.read_table(out).to_pydict()
    assert sorted(table["id"]) == list(range(12))
    assert set(table["node_id"]) == {worker_node}
    assert json.loads((out / "_SUCCESS").read_text())["rows_out"] == 12
