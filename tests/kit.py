"""Helpers the test modules share, each defined once (fixtures live in ``conftest.py``).

The test plugin package (``tests/plugin_kit``) made visible as if pip-installed
(:func:`kit_env`, :func:`install_kit`), the local Ray the tests start (:func:`start_local_ray`)
and the small job configs they run (:func:`job_config`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

KIT_DIR = str(Path(__file__).resolve().parent / "plugin_kit")


def kit_env() -> dict[str, str]:
    """Environment for a subprocess (or a Ray started later) that sees the kit."""
    paths = [KIT_DIR, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def install_kit() -> None:
    """This process and the Ray workers it starts afterwards see the kit's entry points."""
    from pipeline.plan import registry

    os.environ.update(kit_env())
    if KIT_DIR not in sys.path:
        sys.path.insert(0, KIT_DIR)
    registry.refresh()


def start_local_ray(num_cpus: int = 2, num_gpus: int | None = None) -> Any:
    """Start a new local Ray in this process (``address="local"``: a new one even when
    ``ray start`` runs on this machine) with ``num_cpus`` CPUs (and ``num_gpus`` declared GPUs,
    if given), no dashboard and no worker output on the driver; returns the ``ray`` module.
    Raises RuntimeError if this process already has a Ray."""
    import ray

    gpus = {} if num_gpus is None else {"num_gpus": num_gpus}
    ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, **gpus
    )
    return ray


def job_config(
    items: list[Any],
    *,
    predictor: dict[str, Any] | None = None,
    preprocessors: list[dict[str, Any]] | None = None,
    sink: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A job config as Hydra resolves it (plain dicts): the ``items`` source with ``items``
    (rows, or strings for its ``data`` column), then ``preprocessors`` and ``predictor`` when
    given, into ``sink`` (default: ``show``); ``run``: run settings (default: no progress
    line)."""
    config: dict[str, Any] = {"source": {"type": "items", "params": {"items": items}}}
    if preprocessors is not None:
        config["preprocessors"] = preprocessors
    if predictor is not None:
        config["predictor"] = predictor
    config["sink"] = sink or {"type": "show"}
    config["run"] = {"progress": False} if run is None else run
    return config
