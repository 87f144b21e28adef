"""Stopping the embedded Ray: every process the job started is gone when the command returns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray  # every test here starts Ray

STOP_SCRIPT = """
import json, ray
from ray._private import worker
from pipeline.execute.ray_session import shutdown_ray

ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
node = worker._global_node
started = {kind: [i.process.pid for i in infos] for kind, infos in node.all_processes.items()}
shutdown_ray()
print(json.dumps({"started": started, "initialized": ray.is_initialized()}))
"""


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (Linux: the state field of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_shutting_down_the_embedded_ray_leaves_none_of_its_processes_running():
    done = subprocess.run(
        [sys.executable, "-c", STOP_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    started = report["started"]
    assert report["initialized"] is False
    # The autoscaler monitor is stopped ahead of ray.shutdown (see ray_session.shutdown_ray).
    assert {"raylet", "gcs_server", "monitor"} <= set(started)
    left = {kind: pids for kind, pids in started.items() if any(map(_running, pids))}
    assert left == {}
